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
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .detect import DETECTORS, DetectOptions
from .errors import SetupError
from .options import DETECTOR_HELP, MAX_PASSES, MODEL_HELP, PASSES_HELP, SHIPPED_MODELS

LOG_LEVELS = ("debug", "info", "warning", "error")
SAVE_FRAMES = ("none", "with-faces", "all")
DEFAULT_FPS = 5.0


# --- value checkers: each returns the clean value or raises ValueError saying what is expected ---------------

def _path(v):
    if not isinstance(v, (str, Path)) or not str(v).strip():
        raise ValueError("a path (a non-empty string)")
    if "\0" in str(v):
        raise ValueError("a path without NUL characters")
    try:
        return Path(v).expanduser()
    except RuntimeError:             # "~name" where no user is called name
        raise ValueError(f"a path whose ~ names a user of this system ({str(v).split('/')[0]!r} does not)") from None


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
            ok = (v > lo if lo_open else v >= lo) and (hi is None or v <= hi) and math.isfinite(v)
        if not ok:
            raise ValueError(f"a finite number {'above' if lo_open else 'from'} {lo}" + (f" up to {hi}" if hi else ""))
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
    from .mqtt import check_device_name
    return check_device_name(v.strip() if isinstance(v, str) else v)


def setting(default, check, help: str, *flags: str, path: bool = False, cli: type = str):
    """A setting of `edgeemo watch`, declared once: its default, its check (a value checker below), its help
    (the option's and the settings reference's, docs/settings.md), its short flags, whether it is a path (a
    relative path in the config file is taken from the file's folder) and its type on the command line."""
    return field(default=default, metadata={"check": check, "help": help, "flags": flags, "path": path, "cli": cli})


@dataclass
class WatchSettings:
    """Every setting of `edgeemo watch`, one field each: the option ``--name-with-dashes``, the config file's key
    of the same name, the checked value, the default, the help. ``config.KEYS``, ``CHECKS``, the command's
    options and docs/settings.md are all made from these fields."""

    inbox: Path | None = setting(None, _path, "Folder to watch (or 'inbox' in the config file).", path=True,
                                 cli=Path)
    out: Path | None = setting(None, _path, "Folder for results.jsonl/.csv [INBOX/results].", "-o", path=True,
                               cli=Path)
    done: Path | None = setting(None, _path, "Where processed files go [INBOX/done].", path=True, cli=Path)
    failed: Path | None = setting(None, _path, "Where unreadable files go, each with <name>.error.json "
                                  "[INBOX/failed].", path=True, cli=Path)
    format: tuple[str, ...] = setting(("jsonl", "csv"), _formats, "jsonl or csv,jsonl [csv,jsonl].", "-f")
    workers: int = setting(1, _int(1, 64), "Files classified in parallel [1].", cli=int)
    queue_size: int = setting(256, _int(1, 100_000), "Files held in memory at once [256].", cli=int)
    poll: bool = setting(False, _bool, "Poll instead of inotify (network shares); a file is taken once its size "
                         "and mtime are stable.", cli=bool)
    settle: float = setting(2.0, _float(0.0), "Seconds a polled file must stay unchanged [2].", cli=float)
    rescan: float = setting(60.0, _float(0.0, lo_open=False), "Seconds between safety-net scans of the inbox "
                            "for files whose events were lost; 0 = never [60].", cli=float)
    camera: str | None = setting(None, _camera, "Classify camera frames instead: 0, 1, ... (USB/V4L2), "
                                 "picamera2, or a video path/URL.")
    fps: float | None = setting(None, _float(0.0), "Cameras: analyse at most this many frames a second; from a "
                                "live camera always the newest, the frames that arrive meanwhile dropped and "
                                f"counted [{DEFAULT_FPS:g}, or 1/--interval].", cli=float)
    every: int = setting(1, _int(1, 100_000), "Recorded videos (in the inbox, or given as --camera): analyse "
                         "one frame in N, in order [1: every frame].", cli=int)
    interval: float | None = setting(None, _float(0.0), "The older spelling of --fps: seconds between camera "
                                     "frames (--fps 1/INTERVAL); kept for old config files.", cli=float)
    save_frames: str = setting("none", _choice(SAVE_FRAMES), "none, with-faces or all [none].")
    frames_dir: Path | None = setting(None, _path, "Saved frames [OUT/frames].", path=True, cli=Path)
    frames_max_mb: float = setting(500.0, _float(0.0), "Disk cap for saved frames; the oldest are deleted [500].",
                                   cli=float)
    frames_max_age: float | None = setting(None, _float(0.0), "Saved frames older than this many hours are "
                                           "deleted [kept until --frames-max-mb needs the room].", cli=float)
    blur_faces: bool = setting(True, _bool, "Blur every detected face in saved frames [yes: saved frames are "
                               "pictures of people kept on disk, often without their knowing; records never "
                               "carry pixels].", cli=bool)
    model: Path | str | None = setting(None, _model, MODEL_HELP + " [$EDGEEMO_MODEL]", "-m", path=True, cli=Path)
    detector: str = setting("auto", _choice(DETECTORS), DETECTOR_HELP, "-d")
    detector_model: Path | None = setting(None, _path, "YuNet ONNX file [$EDGEEMO_YUNET_MODEL].", path=True,
                                          cli=Path)
    threads: int = setting(1, _int(1, 64), "Interpreter threads per worker [1].", "-t", cli=int)
    min_face: int = setting(DetectOptions.min_face, _int(1), "Smallest face side, in pixels [24].", cli=int)
    max_faces: int = setting(DetectOptions.max_faces, _int(1, 1000), "At most this many faces per image [50].",
                             cli=int)
    score_threshold: float = setting(DetectOptions.score_threshold, _float(0.0, 1.0), "YuNet threshold [0.6].",
                                     cli=float)
    passes: int | None = setting(None, _int(1, MAX_PASSES), PASSES_HELP, cli=int)
    log_level: str = setting("info", _choice(LOG_LEVELS), "debug, info, warning or error [info].")
    mqtt: str | None = setting(None, _mqtt_url, "Publish every record to an MQTT broker: "
                               "mqtt://[user@]host[:port][/prefix] or mqtts://... (needs the [mqtt] extra).")
    mqtt_ca: Path | None = setting(None, _path, "CA certificate (PEM) of an mqtts:// broker.", path=True, cli=Path)
    mqtt_password_file: Path | None = setting(None, _path, "File whose first line is the broker password "
                                              "[$EDGEEMO_MQTT_PASSWORD].", path=True, cli=Path)
    mqtt_device: str | None = setting(None, _name, "Device name in the topics [host name].")
    mqtt_ha_discovery: bool = setting(False, _bool, "Announce Home Assistant sensors (MQTT discovery).", cli=bool)
    metrics_file: Path | None = setting(None, _path, "Write Prometheus metrics here every 5 s, for "
                                        "node_exporter's textfile collector (needs [metrics]).", path=True, cli=Path)
    allow_system_path: bool = setting(False, _bool, "Allow the inbox, the output folders and the metrics file "
                                      "in system folders (/etc, /usr, /bin, /sbin, /lib, /boot, /proc, /sys, /dev), "
                                      "which are refused by default [no].", cli=bool)

    def classifier_options(self):
        """The ClassifierOptions of these settings (checked there)."""
        from .pipeline import ClassifierOptions
        return ClassifierOptions(self.model, self.detector, self.detector_model, self.threads, self.min_face,
                                 self.max_faces, self.score_threshold, self.passes)


def key_of(field_name: str) -> str:
    return field_name.replace("_", "-")


KEYS = tuple(key_of(f.name) for f in fields(WatchSettings))
CHECKS: dict[str, Callable[[Any], Any]] = {key_of(f.name): f.metadata["check"] for f in fields(WatchSettings)}
PATH_KEYS = {key_of(f.name) for f in fields(WatchSettings) if f.metadata["path"]}
# The [mqtt] table of the config file: its keys, and the options they stand for.
MQTT_TABLE = {"url": "mqtt", "ca": "mqtt-ca", "password-file": "mqtt-password-file", "device": "mqtt-device",
              "ha-discovery": "mqtt-ha-discovery"}


def reference_markdown() -> str:
    """The settings reference of docs/settings.md, made from WatchSettings."""
    rows = ["| key (config file) and option | default | what |", "|---|---|---|"]
    for f in fields(WatchSettings):
        default = "none" if f.default is None else ",".join(f.default) if isinstance(f.default, tuple) \
            else str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        flags = ", ".join(f"`{x}`" for x in f.metadata["flags"])
        key = key_of(f.name)
        rows.append(f"| `{key}` (`--{key}`{', ' + flags if flags else ''}) | {default} | "
                    f"{f.metadata['help'].replace('|', '/')} |")
    return "\n".join(rows) + "\n"


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
            data = fh.read()
        if data.startswith(b"\xef\xbb\xbf"):          # a byte order mark, as some Windows editors write
            data = data[3:]
        raw = toml.loads(data.decode("utf-8"))
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
    if s.fps is not None and s.interval is not None:
        raise SetupError(f"both fps ({s.fps:g}) and its older spelling interval ({s.interval:g} s) are set; "
                         f"keep fps only")
    if s.fps is None:
        s.fps = 1.0 / s.interval if s.interval is not None else DEFAULT_FPS
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
        _refuse_system_folders(s)
        return s
    s.done = s.done or s.inbox / "done"
    s.failed = s.failed or s.inbox / "failed"
    s.out = s.out or s.inbox / "results"
    for name in ("done", "failed", "out"):
        if getattr(s, name) == s.inbox:
            raise SetupError(f"the {name} folder is the inbox itself ({s.inbox}); use another folder")
    if s.done == s.failed:
        raise SetupError(f"done and failed are the same folder ({s.done}); use two folders")
    _refuse_system_folders(s)
    return s


def _refuse_system_folders(s: WatchSettings) -> None:
    if s.allow_system_path:
        return
    from .folders import refuse_system_folder
    for name, what in (("inbox", "inbox"), ("out", "results folder"), ("done", "done folder"),
                       ("failed", "failed folder"), ("frames_dir", "frames folder"), ("metrics_file", "metrics file")):
        if getattr(s, name) is not None:
            refuse_system_folder(getattr(s, name), what, f"--{key_of(name)}")
