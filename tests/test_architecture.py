"""The import graph of the device package and the workstation side: no circle, nothing pointing upward from
the device package to the workstation, and no TensorFlow on the device side."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_imports() -> dict[str, set[str]]:
    """{module: modules of this project it imports at module level} for edgeemo.* and edgeemo_convert.*"""
    mods: dict[str, Path] = {}
    for pkg, folder in (("edgeemo", ROOT / "edgeemo"), ("edgeemo_convert", ROOT / "convert")):
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = f
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        is_pkg = f.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        deps = set()
        for node in ast.parse(f.read_text()).body:              # module level only: lazy imports are allowed
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    stem = base[:len(base) - node.level + 1]
                    prefix = ".".join(stem + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in mods and t != name}
        graph[name] = deps
    return graph


def test_no_circle_in_the_module_level_import_graph():
    graph = module_imports()
    assert len(graph) > 40
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import circle: " + " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_the_device_package_never_imports_the_workstation_or_tensorflow():
    for f in (ROOT / "edgeemo").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert not n.startswith(("tensorflow", "keras")), f"{f}: imports {n}"
                if not f.name == "cli.py":     # the CLI loads the workstation commands by name, lazily
                    assert not n.startswith("edgeemo_convert"), f"{f}: imports {n}"
