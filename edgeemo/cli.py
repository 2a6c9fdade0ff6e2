"""The `edgeemo` command: a thin layer over the Python API.

Device commands: classify, info (and watch). Workstation commands: train, evaluate, convert; they load
edgeemo_convert (and TensorFlow) only when they run.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

# Plain click help instead of rich: rich and markdown-it cost ~0.2 s of start-up on a Pi-class CPU.
os.environ.setdefault("TYPER_USE_RICH", "0")
import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from .errors import EdgeemoError  # noqa: E402
from .options import MODEL_HELP, Detector, DetectorModel, Passes  # noqa: E402


WORKSTATION_COMMANDS = ("train", "study", "evaluate", "convert")


class _Commands(TyperGroup):
    """The device commands, defined here, and the workstation commands, defined beside their code in
    edgeemo_convert.cli and loaded only when one of them runs or help lists them (the device commands never
    import edgeemo_convert). Every command's EdgeemoError ends here: its message on stderr, its exit status."""

    def list_commands(self, ctx):
        return list(super().list_commands(ctx)) + [c for c in WORKSTATION_COMMANDS if c not in self.commands]

    def get_command(self, ctx, name):
        if name in WORKSTATION_COMMANDS and name not in self.commands:
            return _workstation_commands().get(name)
        return super().get_command(ctx, name)

    def parse_args(self, ctx, args):
        # `classify --resume` takes an optional value (--resume=hash); a bare --resume means --resume=stat
        if args and args[0] == "classify":
            args = [("--resume=stat" if a == "--resume" else a) for a in args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeemoError as exc:
            typer.echo(f"edgeemo: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Facial-emotion classification on edge devices (7 emotions, int8 TFLite).")
log = logging.getLogger("edgeemo")



def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="edgeemo: %(levelname)s: %(message)s")


def _formats(value: str, default: List[str]) -> List[str]:
    from .results import OUTPUT_FORMATS
    if not value:
        return default
    fmts = [f.strip().lower() for f in value.split(",") if f.strip()]
    bad = [f for f in fmts if f not in OUTPUT_FORMATS]
    if bad or not fmts:
        raise typer.BadParameter(f"unknown format {', '.join(bad) or value!r}; use csv, jsonl or csv,jsonl",
                                 param_hint="--format")
    return fmts




def _make_classifier(options):
    from .pipeline import Classifier
    clf = Classifier(options)
    detector = options.detector
    where = clf.detector.model_path
    note = f" ({where})" if where else ""
    if detector == "auto" and clf.detector.name == "haar":
        note += " (YuNet model file not found; see --detector-model)"
    typer.echo(f"edgeemo: model {clf.model.name} ({'int8' if clf.model.quantized else 'float'}, up to "
               f"{clf.model.max_passes()} pass{'es' if clf.model.max_passes() > 1 else ''} per face), "
               f"detector {clf.detector.name}{note}", err=True)
    return clf


@app.callback()
def _main(log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning or error.")):
    _setup_logging(log_level)


@app.command()
def classify(
    paths: List[Path] = typer.Argument(..., help="Image files and/or folders."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for results.jsonl / results.csv "
                                       "(appended). Without it, records go to standard output."),
    fmt: str = typer.Option("", "--format", "-f", help="csv, jsonl or csv,jsonl (default: both with --out, "
                            "jsonl on standard output)."),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write copies with boxes and labels here."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", envvar="EDGEEMO_MODEL", help=MODEL_HELP),
    passes: Passes = None,
    detector: Detector = "auto",
    detector_model: DetectorModel = None,
    threads: int = typer.Option(1, "--threads", "-t", help="Interpreter threads."),
    min_face: int = typer.Option(24, "--min-face", help="Smallest face side to detect, in pixels."),
    max_faces: int = typer.Option(50, "--max-faces", help="At most this many faces per image (largest first)."),
    score_threshold: float = typer.Option(0.6, "--score-threshold", help="Detector score threshold (YuNet)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Worker processes [the usable cores]; 1 = one "
                                       "process. With more, records are written in completion order."),
    resume: Optional[str] = typer.Option(None, "--resume", help="With --out: skip inputs that already have a "
                                         "record (same path, size and mtime; --resume=hash: same path and sha256)."),
    allow_system_path: bool = typer.Option(False, "--allow-system-path", help="Allow --out and --annotate in "
                                           "system folders (/etc, /usr, ...), refused by default."),
    every: int = typer.Option(1, "--every", help="Videos: analyse one frame in N (one record per analysed frame, "
                              "face tracks in OUT/tracks.jsonl)."),
    blur_faces: bool = typer.Option(False, "--blur-faces", help="Blur every detected face in the --annotate "
                                    "copies."),
):
    """Classify the faces in images; one record per image (JSON Lines and/or CSV)."""
    from . import batch
    from .pipeline import ClassifierOptions

    formats = _formats(fmt, ["jsonl", "csv"] if out else ["jsonl"])
    if out is None and len(formats) != 1:
        raise typer.BadParameter("standard output takes one format; use --out DIR for both", param_hint="--format")
    if resume is not None and (resume not in ("stat", "hash") or out is None or "jsonl" not in formats):
        raise typer.BadParameter("--resume (or --resume=hash) needs --out DIR with results.jsonl in it",
                                 param_hint="--resume")
    if jobs is not None and jobs < 1:
        raise typer.BadParameter(f"{jobs}: at least 1", param_hint="--jobs")
    if every < 1:
        raise typer.BadParameter(f"{every}: at least 1", param_hint="--every")
    if not allow_system_path:
        from .folders import refuse_system_folder
        for path, what, option in ((out, "results folder", "--out"), (annotate, "annotated copies", "--annotate")):
            if path is not None:
                refuse_system_folder(path, what, option)
    options = ClassifierOptions(model, detector, detector_model, threads, min_face, max_faces, score_threshold,
                                passes)
    caught = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = batch.run(paths, options, out, formats, annotate, recursive, jobs, resume,
                            make_classifier=_make_classifier, echo=lambda text: typer.echo(text, err=True),
                            stop=lambda: bool(caught), progress_stream=sys.stderr if sys.stderr.isatty() else None,
                            every=every, blur_faces=blur_faces)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo(f"edgeemo: {summary.text()}", err=True)
    if summary.stopped:
        how = ("edgeemo classify " + " ".join(map(str, paths)) + (" --recursive" if recursive else "")
               + f" --out {out} --resume") if out else "run it again with --out DIR, then --resume"
        typer.echo(f"edgeemo: stopped by {signal.Signals(caught[0]).name}: {summary.left} inputs left; to go on: "
                   f"{how}", err=True)
        raise typer.Exit(128 + caught[0])


@app.command()
def info(
    model: Optional[Path] = typer.Argument(None, help="A .tflite file or a shipped model's name (default, fast)."),
    model_opt: Optional[Path] = typer.Option(None, "--model", "-m", help="The same, as an option."),
    passes: Optional[int] = typer.Option(None, "--passes", help="Show the cost at this averaging setting (1-6)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
):
    """Show a model's embedded metadata and its cost: labels, input, preprocessing, data set, metrics,
    multiply-accumulates per pass and passes per face."""
    from .runtime import SHIPPED_MODELS, SKIP_MIRROR_AT, SOFT_MARGIN, Model, shipped_model_path
    if model is not None and model_opt is not None and model != model_opt:
        raise typer.BadParameter("give the model once, as an argument or with --model", param_hint="--model")
    m = Model(model or model_opt, passes=passes)
    data = m.info()
    summary = cost_summary(m)
    if as_json:
        typer.echo(json.dumps({**data, "cost": summary}, indent=2))
        return
    typer.echo(f"model       {data['name']} (version {data.get('version')})")
    typer.echo(f"file        {data['file']} ({data['bytes']:,} bytes, sha256 {data['sha256'][:16]}...)")
    typer.echo(f"tensors     {data['input_dtype']} in, {data['output_dtype']} out; runtime {data['runtime']}")
    typer.echo(f"input       {data['input']['size']}x{data['input']['size']} {data['input'].get('color', '')}, "
               f"(pixel - {data['normalization']['mean']}) / {data['normalization']['std']}, "
               f"crop margin {data.get('crop_margin')}" + (f", the central {data['face_fraction']:g} of the face"
                                                           if data.get("face_fraction", 1.0) != 1.0 else ""))
    if data.get("blur"):
        typer.echo(f"blur        Gaussian sigma {data['blur']['sigma']} on a {data['blur']['at']}x{data['blur']['at']} "
                   f"copy of each face (the model was trained on blurred pictures)")
    if data.get("flip_average"):
        typer.echo(f"mirror      a face whose answer is below {SKIP_MIRROR_AT} confident is classified mirrored too; "
                   f"the answers are averaged (blended in gradually from {SKIP_MIRROR_AT + SOFT_MARGIN:g} down to "
                   f"{SKIP_MIRROR_AT - SOFT_MARGIN:g})")
    if data.get("view_fractions"):
        typer.echo(f"views       a face whose answer is below {SKIP_MIRROR_AT} confident is also classified at "
                   f"{', '.join(f'{f:g}' for f in data['view_fractions'])} of its frame"
                   + (", each mirrored too" if data.get("flip_average") else "") + "; the answers are averaged")
    for line in summary["lines"]:
        typer.echo(line)
    typer.echo(f"labels      {', '.join(data['labels'])}")
    card = m.path.parent / "MODEL_CARD.md"
    shipped = [name for name in SHIPPED_MODELS if shipped_model_path(name) == m.path]
    if shipped and card.is_file():
        typer.echo(f"card        {card} (the shipped {shipped[0]} model: how it was made, its figures, its limits)")
    if not data.get("embedded"):
        typer.echo("metadata    none embedded: defaults assumed (convert with `edgeemo convert` to embed)")
    if data.get("dataset"):
        typer.echo(f"data        {json.dumps(data['dataset'])}")
    for k, v in (data.get("metrics") or {}).items():
        typer.echo(f"metric      {k}: {json.dumps(v)}")


def cost_summary(m) -> dict:
    """The cost lines of `edgeemo info`: MACs per pass (counted from the file), passes per face at the
    model's averaging setting (as measured on FER2013 val/ when the file carries it), and what that makes in
    milliseconds on a CPU without int8 dot product (derived), with this CPU's int8 instructions."""
    from . import cost
    try:
        macs = m.macs_per_pass()
    except cost.CostUnavailable as exc:
        return {"macs_per_pass": None, "lines": [f"cost        unknown: {exc}"]}
    most = m.max_passes()
    measured = (m.meta.get("metrics") or {}).get("val_passes_per_face") or {}
    per_face = measured.get(str(most))
    lines = [f"cost        {cost.millions(macs['total'])} multiply-accumulates per pass ({macs['total']:,}: "
             + ", ".join(f"{k} {v:,}" for k, v in macs.items() if k != "total" and v) + ")"]
    offered = m.offered_passes()
    if most == 1:
        lines.append("passes      1 per face " + ("(no averaging)" if offered == 1 else
                                                  f"(--passes 1; the model's averaging offers up to {offered})"))
        per_face = 1.0
    elif per_face is not None:
        lines.append(f"passes      up to {most} per face (--passes {most}); {per_face:g} on average on FER2013 val/ "
                     f"(faces the model is unsure of get more: measured by bench/cost_table.py)")
    else:
        lines.append(f"passes      1 to {most} per face (--passes {most}): the further passes only for faces the "
                     "model is unsure of; average on val/ not measured for this file (bench/cost_table.py --embed)")
    if per_face is not None:
        face = per_face * macs["total"]
        lines.append(f"per face    {cost.millions(face)} multiply-accumulates; about {cost.derived_ms(face):.2f} ms "
                     f"on an x86 core without int8 dot product (derived at {cost.NO_DOT_GMACS:g} GMAC/s; a "
                     "Raspberry Pi 4 core is several times slower)")
    lines.append(f"this cpu    {cost.cpu_note()}")
    return {"macs_per_pass": macs, "passes": most, "passes_per_face_val": per_face,
            "macs_per_face": None if per_face is None else round(per_face * macs["total"]),
            "int8_dot_product": cost.int8_dot_product(), "lines": lines}


def watch(ctx: typer.Context, **settings):
    """Watch a folder (or a camera): classify each new photo once, append the result, move it to done/ or
    failed/. Runs until SIGTERM or Ctrl-C; speaks systemd's notify protocol when run as a service."""
    from .daemon import run_watch
    config = settings.pop("config")
    given = {k.replace("_", "-"): v for k, v in settings.items() if v is not None}
    root = ctx.find_root()
    if settings.get("log_level") is None and getattr(root.get_parameter_source("log_level"), "name", "") == \
            "COMMANDLINE":
        given["log-level"] = root.params["log_level"]      # `edgeemo --log-level debug watch ...`
    raise typer.Exit(run_watch(given, config))


def _watch_signature() -> inspect.Signature:
    """watch's options, one per field of config.WatchSettings (its help, flags and type there): each option
    is declared once, for the command line, the config file and docs/settings.md alike."""
    from dataclasses import fields

    from .config import WatchSettings
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("ctx", kind, annotation=typer.Context),
              inspect.Parameter("config", kind, annotation=Optional[Path], default=typer.Option(
                  None, "--config", "-c", envvar="EDGEEMO_CONFIG",
                  help="TOML file whose keys are these options; the command line wins."))]
    for f in fields(WatchSettings):
        meta, key = f.metadata, f.name.replace("_", "-")
        if f.name == "inbox":
            decl = typer.Argument(None, help=meta["help"])
        elif meta["cli"] is bool:
            decl = typer.Option(None, f"--{key}/--no-{key}", help=meta["help"])
        else:
            decl = typer.Option(None, f"--{key}", *meta["flags"], help=meta["help"])
        cli_type = meta["cli"]
        params.append(inspect.Parameter(f.name, kind, annotation=Optional[cli_type], default=decl))
    return inspect.Signature(params)


watch.__signature__ = _watch_signature()
watch.__annotations__ = {p.name: p.annotation for p in watch.__signature__.parameters.values()}
app.command()(watch)


@app.command()
def collect(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="mqtt://[user@]host[:port][/prefix]: every device under the prefix."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the fleet's results.jsonl and results.csv."),
    mqtt_ca: Optional[Path] = typer.Option(None, "--mqtt-ca", help="CA certificate (PEM) of an mqtts:// broker."),
    mqtt_password_file: Optional[Path] = typer.Option(None, "--mqtt-password-file", help="File whose first line "
                                                      "is the broker password [$EDGEEMO_MQTT_PASSWORD]."),
    metrics_file: Optional[Path] = typer.Option(None, "--metrics-file", help="Write the collector's figures "
                                                "(records stored, repeats, messages set aside) here every 5 s, "
                                                "for node_exporter and `edgeemo status` (needs [metrics])."),
):
    """Collect the records of every device publishing under a prefix into one folder (a `device` column
    added), dropping repeats by message id, across restarts. Runs until SIGTERM or Ctrl-C."""
    from .collect import Collector
    from .mqtt import Broker, paho, read_password
    root = ctx.find_root()
    if getattr(root.get_parameter_source("log_level"), "name", "") != "COMMANDLINE":
        logging.getLogger().setLevel(logging.INFO)          # a service: say what it does, unless told otherwise
    paho()
    broker = Broker.parse(url, read_password(mqtt_password_file), mqtt_ca)
    raise typer.Exit(Collector(broker, out, metrics_file=metrics_file).run())


@app.command()
def status(
    metrics_file: Path = typer.Argument(Path("/var/lib/edgeemo/metrics.prom"),
                                        help="The daemon's --metrics-file [/var/lib/edgeemo/metrics.prom]."),
):
    """Print a running daemon's figures (from its --metrics-file) for a person."""
    from . import metrics
    samples = metrics.read(metrics_file)
    age = time.time() - metrics_file.stat().st_mtime
    typer.echo(f"{metrics_file}:\n" + metrics.describe(samples, age))


@app.command()
def report(
    results: list[Path] = typer.Argument(..., help="results.jsonl files (classify, watch, a camera, collect)."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML page to write [report.html]."),
    since: Optional[str] = typer.Option(None, "--since", help="Only records from this time on (ISO 8601, e.g. "
                                        "2026-11-01 or 2026-11-01T08:00; UTC unless a zone is given)."),
    until: Optional[str] = typer.Option(None, "--until", help="Only records before this time (ISO 8601)."),
    by: str = typer.Option("hour", "--by", help="Timeline buckets: hour or day."),
    truth: Optional[str] = typer.Option(None, "--truth", help="folders: the true label is the parent folder's "
                                        "name (a class-folder tree): accuracy, macro-F1, confusion matrix."),
    gallery: int = typer.Option(0, "--gallery", help="Thumbnails of the N least confident faces, cut from the "
                                "pictures that are still there (off by default: privacy)."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON here."),
):
    """One self-contained HTML page from result records: counts, emotions over time, confidence, face sizes,
    errors, and accuracy against folder names. Needs the [report] extra (matplotlib)."""
    from . import report as rp
    if by not in ("hour", "day"):
        raise typer.BadParameter(f"{by!r}: hour or day", param_hint="--by")
    if truth not in (None, "folders"):
        raise typer.BadParameter(f"{truth!r}: the only source of truth is 'folders'", param_hint="--truth")
    window = []
    for name, value in (("--since", since), ("--until", until)):
        t = rp.parse_time(value) if value else None
        if value and t is None:
            raise typer.BadParameter(f"{value!r}: not an ISO 8601 date or time", param_hint=name)
        window.append(t)
    fig = rp.write(results, out, by, window[0], window[1], truth, gallery, as_json,
                   warn=lambda m: typer.echo(f"edgeemo: warning: {m}", err=True))
    typer.echo(rp.summary_text(fig))
    typer.echo(f"wrote {out}" + (f" and {as_json}" if as_json else ""), err=True)


@app.command("mqtt-forget")
def mqtt_forget(
    url: str = typer.Argument(..., help="mqtt://[user@]host[:port][/prefix], as given to watch --mqtt."),
    device: Optional[str] = typer.Option(None, "--device", help="The device name [host name]."),
    mqtt_ca: Optional[Path] = typer.Option(None, "--mqtt-ca"),
    mqtt_password_file: Optional[Path] = typer.Option(None, "--mqtt-password-file"),
):
    """Remove a device's Home Assistant entities (clears its retained discovery topics)."""
    from .mqtt import Broker, device_name, paho, read_password, remove_discovery
    paho()
    name = device_name(device)
    n = remove_discovery(Broker.parse(url, read_password(mqtt_password_file), mqtt_ca), name)
    typer.echo(f"cleared {n} Home Assistant discovery topics of device {name!r}")


def _workstation_commands() -> dict:
    """train, study, evaluate and convert, from edgeemo_convert.cli (typer only; TensorFlow loads when they run)."""
    from edgeemo_convert.cli import register
    sub = typer.Typer(add_completion=False, rich_markup_mode=None)
    register(sub)
    return typer.main.get_command(sub).commands


_CRASH_FILE = None


def main():  # console-script entry point
    # A native crash (a segmentation fault in the TFLite runtime or OpenCV, as on a CPU a wheel was not built
    # for) prints the Python frames it happened in, naming the step, instead of dying silently.
    import faulthandler
    global _CRASH_FILE
    try:       # a copy of fd 2: the model's quiet set-up (runtime._quiet_stderr) silences fd 2 itself
        _CRASH_FILE = os.fdopen(os.dup(2), "w")
        faulthandler.enable(file=_CRASH_FILE)
    except (OSError, ValueError):
        pass
    app()


if __name__ == "__main__":
    main()
