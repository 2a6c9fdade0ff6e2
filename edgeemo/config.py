"""Settings of `edgeemo watch`: a TOML file whose keys are the command's option names, overridden by the CLI.

    # /etc/edgeemo/edgeemo.toml
    inbox = "/var/lib/edgeemo/inbox"
    out = "/var/lib/edgeemo/results"
    detector = "auto"
    workers = 1

Keys are spelled as the options, without the dashes in front (``save-frames``, ``detector-model``). Relative
paths in the file are relative to the file's folder. Every key and value is checked when the daemon starts:
an unknown key or a bad value raises :class:`SetupError` naming the file, the key and what is expected.
Precedence: command line, then the file, then the built-in defaults (and, for ``model`` and
``detector-model``, the ``EDGEEMO_MODEL`` / ``EDGEEMO_YUNET_MODEL`` variables when neither sets them).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from .detect import DETECTORS, DetectOptions
from .errors import SetupError
from .runtime import MAX_PASSES, SHIPPED_MODELS

LOG_LEVELS = ("debug", "info", "warning", "error")
SAVE_FRAMES = ("none", "with-faces", "all")


@dataclass
class WatchSettings:
    inbox: Path | None = None
    out: Path | None = None
    done: Path | None = None
    failed: Path | None = None
    format: tuple[str, ...] = ("jsonl", "csv")
    workers: int = 1
    queue_size: int = 256
    poll: bool = False
    settle: float = 2.0
    rescan: float = 60.0            # seconds between safety-net scans of the inbox; 0 = never
    camera: str | None = None
    interval: float = 1.0
    save_frames: str = "none"
    frames_dir: Path | None = None
    frames_max_mb: float = 500.0
    model: Path | str | None = None          # a file, or a shipped model's name (default, fast)
    detector: str = "auto"
    detector_model: Path | None = None
    threads: int = 1
    min_face: int = DetectOptions.min_face
    max_faces: int = DetectOptions.max_faces
    score_threshold: float = DetectOptions.score_threshold
    passes: int | None = None               # at most this many model passes per face (1-6); None: all
    log_level: str = "info"
    mqtt: str | None = None                 # mqtt://[user@]host[:port][/prefix] or mqtts://...
    mqtt_ca: Path | None = None
    mqtt_password_file: Path | None = None
    mqtt_device: str | None = None          # default: the host name
    mqtt_ha_discovery: bool = False
    metrics_file: Path | None = None

    def classifier_options(self):
        """The ClassifierOptions of these settings (checked there)."""
        from .pipeline import ClassifierOptions
        return ClassifierOptions(self.model, self.detector, self.detector_model, self.threads, self.min_face,
                                 self.max_faces, self.score_threshold, self.passes)


def key_of(field_name: str) -> str:
    return field_name.replace("_", "-")


KEYS = tuple(key_of(f.name) for f in fields(WatchSettings))


# --- value checkers: each returns the clean value or raises ValueError saying what is expected ---------------

def _path(v):
    if not isinstance(v, (str, Path)) or not str(v).strip():
        raise ValueError("a path (a non-empty string)")
    return Path(v).expanduser()


def _model(v):
    if isinstance(v, str) and v in SHIPPED_MODELS:
        return v                     # a model shipped in the package, by name
    try:
        return _path(v)
    except ValueError:
        raise ValueError(f"a .tflite file, or a shipped model: {', '.join(SHIPPED_MODELS)}") from None


def _int(lo, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"an integer from {lo}" + (f" to {hi}" if hi is not None else " up"))
        return v
    return check


def _float(lo, hi=None, lo_open=True):
    def check(v):
        ok = not isinstance(v, bool) and isinstance(v, (int, float))
        if ok:
            v = float(v)
            ok = (v > lo if lo_open else v >= lo) and (hi is None or v <= hi) and v == v
        if not ok:
            raise ValueError(f"a number {'above' if lo_open else 'from'} {lo}" + (f" up to {hi}" if hi else ""))
        return v
    return check


def _choice(options):
    def check(v):
        if not isinstance(v, str) or v.lower() not in options:
            raise ValueError("one of " + ", ".join(options))
        return v.lower()
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _formats(v):
    items = v.split(",") if isinstance(v, str) else v if isinstance(v, (list, tuple)) else None
    if items is None or not all(isinstance(i, str) for i in items):
        raise ValueError('"jsonl" or "csv,jsonl" (a string, or a list of strings)')
    fmts = tuple(dict.fromkeys(i.strip().lower() for i in items if i.strip()))
    if not fmts or any(f not in ("csv", "jsonl") for f in fmts):
        raise ValueError('"jsonl" or "csv,jsonl"')
    if "jsonl" not in fmts:
        raise ValueError('a list that includes "jsonl": results.jsonl is the ledger that makes restarts '
                         'exactly-once (add csv beside it: "csv,jsonl")')
    return fmts


def _camera(v):
    if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, int) and v < 0) or str(v).strip() == "":
        raise ValueError('a camera index (0, 1, ...), "picamera2", or a video device path or URL')
    return str(v).strip()


def _mqtt_url(v):
    from .mqtt import Broker
    if not isinstance(v, str):
        raise ValueError("an address such as mqtt://user@broker.local/edgeemo (a string)")
    try:
        Broker.parse(v)
    except SetupError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return v


def _name(v):
    if not isinstance(v, str) or not v.strip() or any(c in v for c in "/+#"):
        raise ValueError("a device name without / + or #")
    return v.strip()


# The [mqtt] table of the config file: its keys, and the options they stand for.
MQTT_TABLE = {"url": "mqtt", "ca": "mqtt-ca", "password-file": "mqtt-password-file", "device": "mqtt-device",
              "ha-discovery": "mqtt-ha-discovery"}

CHECKS: dict[str, Callable[[Any], Any]] = {
    "inbox": _path, "out": _path, "done": _path, "failed": _path, "format": _formats,
    "workers": _int(1, 64), "queue-size": _int(1, 100_000), "poll": _bool, "settle": _float(0.0),
    "rescan": _float(0.0, lo_open=False),
    "camera": _camera, "interval": _float(0.0), "save-frames": _choice(SAVE_FRAMES), "frames-dir": _path,
    "frames-max-mb": _float(0.0), "model": _model, "detector": _choice(DETECTORS), "detector-model": _path,
    "threads": _int(1, 64), "min-face": _int(1), "max-faces": _int(1, 1000),
    "score-threshold": _float(0.0, 1.0), "passes": _int(1, MAX_PASSES), "log-level": _choice(LOG_LEVELS),
    "mqtt": _mqtt_url, "mqtt-ca": _path, "mqtt-password-file": _path, "mqtt-device": _name,
    "mqtt-ha-discovery": _bool, "metrics-file": _path,
}
PATH_KEYS = {"inbox", "out", "done", "failed", "frames-dir", "model", "detector-model", "mqtt-ca",
             "mqtt-password-file", "metrics-file"}
assert set(CHECKS) == set(KEYS), "every setting needs a checker"


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key.replace("_", "-").lower(), KEYS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _toml():
    try:
        import tomllib
        return tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli
            return tomli
        except ModuleNotFoundError:
            raise SetupError("reading a config file needs Python 3.11 or later, or the tomli package on "
                             "Python 3.10 (pip install tomli)") from None


def load_file(path: str | Path) -> dict[str, Any]:
    """The checked settings of a TOML file, keyed by option name; relative paths resolved against its folder."""
    p = Path(path).expanduser()
    toml = _toml()
    try:
        with open(p, "rb") as fh:
            raw = toml.load(fh)
    except FileNotFoundError:
        raise SetupError(f"{p}: config file not found (check --config, or create it from deploy/edgeemo.toml)") from None
    except IsADirectoryError:
        raise SetupError(f"{p}: is a folder; --config takes a .toml file") from None
    except PermissionError:
        raise SetupError(f"{p}: permission denied reading the config file (check its owner and mode)") from None
    except toml.TOMLDecodeError as exc:
        raise SetupError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SetupError(f"{p}: not valid TOML: the file is not UTF-8 text ({exc.reason})") from None
    out = {}
    items = []
    for key, value in raw.items():
        if key == "mqtt" and isinstance(value, dict):       # [mqtt] url = ..., password-file = ..., ...
            for sub, v in value.items():
                if sub not in MQTT_TABLE:
                    raise SetupError(f"{p}: unknown key {sub!r} in [mqtt]; valid keys: {', '.join(MQTT_TABLE)}")
                items.append((MQTT_TABLE[sub], v))
        else:
            items.append((key, value))
    for key, value in items:
        if key not in CHECKS:
            if isinstance(value, dict):
                raise SetupError(f"{p}: unexpected table [{key}]: the keys of the file are the options of "
                                 f"`edgeemo watch` at the top level, without a table header")
            raise SetupError(f"{p}: unknown key {key!r}{_suggest(key)}; valid keys are the options of "
                             f"`edgeemo watch`: {', '.join(KEYS)}")
        try:
            clean = CHECKS[key](value)
        except ValueError as exc:
            raise SetupError(f"{p}: {key} = {value!r} is not valid; expected {exc}") from None
        if key in PATH_KEYS and isinstance(clean, Path) and not clean.is_absolute():
            clean = (p.parent / clean)
        out[key] = clean
    return out


def check_cli(given: dict[str, Any]) -> dict[str, Any]:
    """Check options given on the command line (keys are option names); raises SetupError."""
    out = {}
    for key, value in given.items():
        if key not in CHECKS:
            raise SetupError(f"unknown setting {key!r}")
        try:
            out[key] = CHECKS[key](str(value) if isinstance(value, Path) else value)
        except ValueError as exc:
            raise SetupError(f"--{key} {value}: not valid; expected {exc}") from None
    return out


def resolve(given: dict[str, Any], config_path: str | Path | None = None) -> WatchSettings:
    """Merge built-in defaults, the config file and the command-line options (keys: option names)."""
    values: dict[str, Any] = {}
    if config_path is not None:
        values.update(load_file(config_path))
    values.update(check_cli(given))
    settings = WatchSettings(**{k.replace("-", "_"): v for k, v in values.items()})
    for name in ("inbox", "out", "done", "failed", "frames_dir", "model", "detector_model", "mqtt_ca",
                 "mqtt_password_file", "metrics_file"):
        v = getattr(settings, name)
        if isinstance(v, Path):
            setattr(settings, name, Path(v).absolute())
    return _complete(settings)


def _complete(s: WatchSettings) -> WatchSettings:
    """Cross-checks and folder defaults."""
    if s.camera is not None and s.inbox is not None:
        raise SetupError("give an inbox folder or --camera, not both (run one service for each: see "
                         "systemd/edgeemo-camera.service)")
    if s.camera is None and s.inbox is None:
        raise SetupError("no inbox folder: pass INBOX (or set inbox in the config file), or --camera")
    if s.camera is not None:
        if s.out is None:
            raise SetupError("--camera needs --out DIR (or out in the config file) for the results")
        if s.frames_dir is None:
            s.frames_dir = s.out / "frames"
        return s
    s.done = s.done or s.inbox / "done"
    s.failed = s.failed or s.inbox / "failed"
    s.out = s.out or s.inbox / "results"
    for name in ("done", "failed", "out"):
        if getattr(s, name) == s.inbox:
            raise SetupError(f"the {name} folder is the inbox itself ({s.inbox}); use another folder")
    if s.done == s.failed:
        raise SetupError(f"done and failed are the same folder ({s.done}); use two folders")
    return s
