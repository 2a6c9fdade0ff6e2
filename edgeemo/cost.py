"""What a face costs: multiply-accumulates counted from the model file, and what this CPU makes of them.

MACs are the budget because they do not depend on the machine: int8 convolution on a CPU with an int8 dot
product instruction (x86 AVX-512 VNNI or AVX-VNNI, ARM ``asimddp``: Cortex-A76 and later, the Pi 5) runs
about ten times faster than on one without (the Pi 4's Cortex-A72, the Cortex-A53 of the Pi 3 and Pi Zero 2,
many x86 servers). Milliseconds measured on the first kind understate the second's.

    >>> from edgeemo import cost
    >>> cost.count_macs(model._interp)["total"]       # or Model.macs_per_pass()
    >>> cost.int8_dot_product()                       # ['avx512_vnni'] on a VNNI machine, [] on a Pi 4
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EdgeemoError

# int8 convolution through LiteRT, one thread, on an x86 core without int8 dot product (AVX2 only),
# measured by the project; a Pi 4 core is several times slower. Figures derived from it are labelled so.
NO_DOT_GMACS = 39.0
DOT_FLAGS = ("avx512_vnni", "avx_vnni", "asimddp")
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class CostUnavailable(EdgeemoError, RuntimeError):
    """The interpreter package does not list its graph's operations, so MACs cannot be counted."""


def count_macs(interp) -> dict:
    """Multiply-accumulates of one invoke of an allocated TFLite interpreter, from its CONV_2D,
    DEPTHWISE_CONV_2D and FULLY_CONNECTED ops: {"total": n, "CONV_2D": n, ...}.

    CONV_2D: output elements x kernel height x kernel width x input channels (filter [out, kh, kw, in]).
    DEPTHWISE_CONV_2D: output elements x kernel height x kernel width (filter [1, kh, kw, out]).
    FULLY_CONNECTED: output elements x input features (weights [units, in]).
    """
    try:
        ops = interp._get_ops_details()
    except AttributeError:
        raise CostUnavailable("this TFLite interpreter package does not list its operations; MACs are "
                              "counted with ai-edge-litert (pip install ai-edge-litert)") from None
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interp.get_tensor_details()}
    by_op = {name: 0 for name in MAC_OPS}
    for op in ops:
        name = op["op_name"]
        if name not in by_op:
            continue
        out = shapes[int(op["outputs"][0])]
        w = shapes[int(op["inputs"][1])]            # the filter or weight tensor
        if name == "CONV_2D":
            per_output = w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D":
            per_output = w[1] * w[2]
        else:                                       # FULLY_CONNECTED
            per_output = w[-1]
        by_op[name] += int(np.prod(out, dtype=np.int64)) * per_output
    return {"total": sum(by_op.values()), **by_op}


def _cpuinfo_text(path: str | Path = "/proc/cpuinfo") -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def int8_dot_product(cpuinfo: str | None = None) -> list[str]:
    """The int8 dot-product instructions this CPU has, from /proc/cpuinfo's ``flags`` (x86) or ``Features``
    (ARM) line: a subset of avx512_vnni, avx_vnni, asimddp; [] for none (or no /proc/cpuinfo)."""
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    found = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return [f for f in DOT_FLAGS if f in found]


def cpu_note(cpuinfo: str | None = None) -> str:
    """One line on this CPU's int8 instructions and what its timings mean for a Pi."""
    dot = int8_dot_product(cpuinfo)
    if dot:
        return (f"this CPU has int8 dot product ({', '.join(dot)}): its int8 milliseconds understate a "
                f"Raspberry Pi 4's (Cortex-A72, none) by about ten times; budget in MACs")
    return ("this CPU has no int8 dot product (no avx512_vnni, avx_vnni or asimddp), like a Raspberry Pi 4 "
            "or 3: its milliseconds are the ones a device of this kind pays")


def derived_ms(macs: float, gmacs: float = NO_DOT_GMACS) -> float:
    """Milliseconds for ``macs`` multiply-accumulates at ``gmacs`` GMAC/s (default: an x86 core without
    int8 dot product): a derived figure, not a measurement."""
    return float(macs) / (gmacs * 1e9) * 1e3


def millions(macs: float) -> str:
    return f"{macs / 1e6:.1f} M"
