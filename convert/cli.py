"""The workstation commands of `edgeemo`: train, study, evaluate, convert.

``edgeemo.cli`` loads them into the one `edgeemo` command (``register``) only when one of them runs or help
lists them; importing this module costs no more than typer: edgeemo_convert's other modules, and TensorFlow,
load when a command runs, and one that needs TensorFlow where it is missing says to install ``[train]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgeemo.options import Detector, DetectorModel, Passes

from .errors import MissingExtra, WorkstationError


def register(app: typer.Typer) -> None:
    for command in (train, study, evaluate, convert):
        app.command()(command)


def _convert_module(name: str):
    import importlib
    import importlib.util
    if importlib.util.find_spec("tensorflow") is None:
        raise MissingExtra()
    return importlib.import_module(f"edgeemo_convert.{name}")


def archs_crop_trained() -> set:
    return _convert_module("archs").CROP_TRAINED


def train(
    data: Path = typer.Option(..., "--data", help="Data set folder (or FER2013 CSV file)."),
    dataset: str = typer.Option("folder", "--dataset", help="fer2013, jaffe, ckplus or folder."),
    arch: str = typer.Option("edge", "--arch", help="res40d (the default model's), res40 (res40d one block shallower), res40w (res40d at twice the width, a teacher for --teacher), fast40 and fast40d (depthwise-separable, ~11 M MACs: fast models), fast40-small, seed-basic, seed-dropout, seed-best, edge, edge24, edge-small, res40-small, tiny."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam, sgd or nadam."),
    epochs: int = typer.Option(40, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Initial learning rate (cosine decay)."),
    seed: int = typer.Option(0, "--seed"),
    patience: int = typer.Option(10, "--patience", help="Early stopping patience (epochs); 0 = off."),
    val_split: float = typer.Option(0.15, "--val-split", help="Validation fraction where the data set has none."),
    cv: Optional[str] = typer.Option(None, "--cv", help="K (stratified k-fold) or loso (leave one subject out)."),
    no_augment: bool = typer.Option(False, "--no-augment"),
    no_class_weights: bool = typer.Option(False, "--no-class-weights"),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Label smoothing, e.g. 0.1."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop after this many minutes."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Override the recipe's input size."),
    blur: float = typer.Option(0.0, "--blur", help="Gaussian blur sigma (on a 48x48 face) that validation and "
                               "the device apply to faces, for a training set that is itself blurred."),
    teacher: Optional[List[Path]] = typer.Option(None, "--teacher", help="Distil from this trained model (a run "
                                                 "folder's model.keras, or an int8 .tflite of a res40-type "
                                                 "recipe; 'default': the shipped default model); repeat it "
                                                 "to distil from several, averaged."),
    kd_alpha: float = typer.Option(0.7, "--kd-alpha", help="Share of the loss given to the teacher's answers."),
    kd_temperature: float = typer.Option(2.0, "--kd-temperature", help="Softening of both answers."),
    kd_mirror: bool = typer.Option(False, "--kd-mirror", help="The teacher answers each training face and its "
                                   "mirror image, averaged (twice the teacher's cost, a steadier target)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Decoupled weight decay of the "
                                                 "crop-trained recipes (theirs: 5e-4); less for a small model "
                                                 "that underfits."),
    erase_p: Optional[float] = typer.Option(None, "--erase-p", help="Share of training faces that get a random "
                                            "patch erased, crop-trained recipes (theirs: 0.5)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this trained model's weights (a run "
                                        "folder's model.keras, or an int8 .tflite, of the same --arch; res40-type "
                                        "recipes); 'default': the shipped default model (--arch res40d)."),
    margin: float = typer.Option(0.15, "--margin", help="Face-crop margin around detected faces (whole photos, "
                                 "e.g. JAFFE); recorded in the run folder for `edgeemo convert`."),
    face_fraction: float = typer.Option(1.0, "--face-fraction", help="The central fraction of the face frame the "
                                        "device shows the model; recorded in the run folder for `edgeemo convert` "
                                        "(e.g. 0.875 for the crop-trained recipes)."),
    flip_average: bool = typer.Option(False, "--flip-average", help="Have the device average an unsure face with "
                                      "its mirror image; recorded in the run folder for `edgeemo convert`."),
    view_fractions: str = typer.Option("", "--view-fractions", help="Further central fractions of the face frame "
                                       "the device averages in for unsure faces, comma-separated; recorded in the "
                                       "run folder for `edgeemo convert`."),
    out: Path = typer.Option(Path("runs/latest"), "--out", help="Run folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    detector: Detector = "auto",
    detector_model: DetectorModel = None,
):
    """Train a model on labelled faces (workstation; needs the [train] extra)."""
    commands = _convert_module("commands")
    from edgeemo_convert.train import OPTIMIZERS, TrainConfig
    from edgeemo_convert.datasets import DATASETS
    if optimizer not in OPTIMIZERS:
        raise typer.BadParameter(f"{optimizer!r}; choose one of {', '.join(OPTIMIZERS)}", param_hint="--optimizer")
    if dataset not in DATASETS:
        raise typer.BadParameter(f"{dataset!r}; choose one of {', '.join(DATASETS)}", param_hint="--dataset")
    cfg = TrainConfig(arch=arch, optimizer=optimizer, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      patience=patience, augment=not no_augment, class_weights=not no_class_weights,
                      time_budget_min=time_budget, input_size=input_size, label_smoothing=label_smoothing,
                      blur_sigma=blur)
    for option, given, what in (("--teacher", bool(teacher), "distillation"),
                                ("--init", bool(init), "a trained start"),
                                ("--weight-decay", weight_decay is not None, "the weight decay setting"),
                                ("--erase-p", erase_p is not None, "the erasing setting")):
        if given and arch not in archs_crop_trained():
            raise typer.BadParameter(f"{what} is built into the crop-trained recipes "
                                     f"({', '.join(sorted(archs_crop_trained()))}), not {arch}", param_hint=option)
    if teacher:
        teacher = [_shipped(t, "--teacher") for t in teacher]
        cfg.extra.update(teacher=[str(t) for t in teacher], kd_alpha=kd_alpha, kd_temperature=kd_temperature,
                         kd_mirror=kd_mirror)
    elif kd_mirror:
        raise typer.BadParameter("it changes how a teacher answers: give --teacher too", param_hint="--kd-mirror")
    if init is not None:
        cfg.extra.update(init=str(_shipped(init, "--init")))
    for option, value, key, low, high in (("--weight-decay", weight_decay, "weight_decay", 0.0, 0.1),
                                          ("--erase-p", erase_p, "erase_p", 0.0, 1.0)):
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"{value!r}: must be {low:g} to {high:g}", param_hint=option)
        if value is not None:
            cfg.extra[key] = value
    cfg.extra["geometry"] = {"margin": margin, "face_fraction": face_fraction, "flip_average": flip_average,
                             "view_fractions": list(_fractions(view_fractions))}
    commands.train(data, dataset, out, cfg, val_split, cv, resume, detector, detector_model,
                   echo=lambda s: typer.echo(s, err=True))


def _shipped(path: Path, option: str) -> Path:
    """``path``, or the file of a model shipped in the package where it names one ('default', 'fast')."""
    from edgeemo.options import SHIPPED_MODELS
    if str(path) not in SHIPPED_MODELS or Path(path).exists():
        return path
    from edgeemo.runtime import shipped_model_path
    found = shipped_model_path(str(path))
    if found is None:
        raise typer.BadParameter(f"this build ships no {path} model; give a model file", param_hint=option)
    return found


def study(
    data: Path = typer.Option(..., "--data", help="JAFFE-format folder: flat images named like KA.AN1.39.tiff."),
    out: Path = typer.Option(Path("runs/study"), "--out", help="Folder for study.json, study.md and per-run reports."),
    epochs: int = typer.Option(150, "--epochs", help="The most epochs per training (faithful mode stops earlier, "
                               "when the training loss stops falling; crop mode runs them all)."),
    seeds: int = typer.Option(5, "--seeds", help="Random splits (and training seeds) per run: mean and sd."),
    crop: bool = typer.Option(False, "--crop", help="Crop mode: faces found by --detector and cropped as on the "
                              "device, a fixed number of epochs, cosine schedule (default: the study's own input)."),
    batch_size: int = typer.Option(16, "--batch-size"),
    seed: int = typer.Option(0, "--seed", help="Seed of the random split and of training."),
    test_images: int = typer.Option(64, "--test-images", help="Size of the random test split (the study's: 64)."),
    runs: Optional[str] = typer.Option(None, "--runs", help="Runs as recipe:optimizer,... (default: seed-basic:adam, "
                                       "seed-dropout:adam, seed-best:adam, seed-best:sgd, seed-best:nadam)."),
    no_loso: bool = typer.Option(False, "--no-loso", help="Skip leave-one-subject-out (random split only)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 2 epochs, 2 splits, 3 people left out; not comparable."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the trainings that an interrupted study in the same "
                                "--out finished with the same settings and images; train the rest."),
    augment: bool = typer.Option(False, "--augment", help="Augment training images (off by default)."),
    input_size: int = typer.Option(128, "--input-size", help="Face side in pixels (the study's: 128)."),
    detector: Detector = "auto",
    detector_model: DetectorModel = None,
):
    """Reproduce the JAFFE study: its three CNNs on a random split beside leave-one-subject-out."""
    study_mod = _convert_module("study")
    try:
        opts = study_mod.StudyOptions(epochs=epochs, batch_size=batch_size, seed=seed, seeds=seeds,
                                      test_images=test_images, faithful=not crop,
                                      input_size=input_size, runs=study_mod.parse_runs(runs), loso=not no_loso,
                                      augment=augment, quick=quick, detector=detector, resume=resume,
                                      detector_model=str(detector_model) if detector_model else None)
        result = study_mod.run_study(data, out, opts, echo=lambda s: typer.echo(s, err=True))
    except ValueError as exc:         # a bad option value found by the study
        raise WorkstationError(str(exc)) from None
    typer.echo(study_mod.markdown_table(result))
    typer.echo(f"wrote {out / 'study.json'} and {out / 'study.md'}", err=True)


def evaluate(
    model: Path = typer.Argument(..., help="A .tflite (run through the device runtime) or .keras model, or a "
                                 "shipped model: default, fast."),
    data: Path = typer.Option(..., "--data"),
    dataset: str = typer.Option("folder", "--dataset", help="fer2013, jaffe, ckplus or folder."),
    split: Optional[str] = typer.Option(None, "--split", help="For data sets with splits: train, val or test "
                                        "(default: val if present)."),
    detector: Detector = "none",
    detector_model: DetectorModel = None,
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a fixed, seeded subset of this many images."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.json and confusion.png."),
    threads: int = typer.Option(1, "--threads"),
    passes: Passes = None,
):
    """Accuracy, macro-F1, per-class scores and the confusion matrix of a model on a data set."""
    from edgeemo.detect import DETECTORS
    if detector not in DETECTORS:
        raise typer.BadParameter(f"{detector!r}; choose one of {', '.join(DETECTORS)}", param_hint="--detector")
    from edgeemo.runtime import SHIPPED_MODELS
    needs_tf = model.suffix != ".tflite" and str(model) not in SHIPPED_MODELS
    evaluation = _convert_module("evaluation") if needs_tf else __import__("edgeemo_convert.evaluation").evaluation
    try:
        rep = evaluation.evaluate(model, data, dataset, split, detector, detector_model, limit, out, threads,
                                  passes)
    except (FileNotFoundError, ValueError) as exc:
        raise WorkstationError(str(exc)) from None
    typer.echo(json.dumps({k: rep[k] for k in ("n", "accuracy", "macro_f1", "passes_per_face", "macs_per_face")
                           if k in rep} |
                          {"per_class_f1": {k: v["f1"] for k, v in rep["per_class"].items()}}, indent=1))
    if out:
        typer.echo(f"wrote {out / 'report.json'} and {out / 'confusion.png'}", err=True)


def convert(
    model: Path = typer.Argument(..., help="A training run's folder, or its model.keras; the run's face geometry "
                                 "and averaging (config.json) are the defaults of --margin, --face-fraction, "
                                 "--flip-average and --view-fractions."),
    calib: Path = typer.Option(..., "--calib", help="Training data for the representative set (and the "
                               "float-vs-int8 check on its validation split)."),
    dataset: str = typer.Option("fer2013", "--dataset"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .tflite (default: beside the model)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name stored in the metadata."),
    version: str = typer.Option("1", "--version"),
    margin: Optional[float] = typer.Option(None, "--margin", help="Face-crop margin stored in the metadata [the "
                                           "run's, else 0.15]."),
    calib_size: int = typer.Option(400, "--calib-size", help="Representative faces (300-500)."),
    check_size: int = typer.Option(2000, "--check-size", help="Validation faces for float vs int8."),
    force: bool = typer.Option(False, "--force", help="Write even if int8 loses more than 1.5 points."),
    float_model: bool = typer.Option(False, "--float", help="Write a float32 TFLite instead (for comparison)."),
    flip_average: Optional[bool] = typer.Option(None, "--flip-average/--no-flip-average", help="Have the device "
                                                "average each face with its mirror image (stored in the metadata) "
                                                "[the run's, else no]."),
    face_fraction: Optional[float] = typer.Option(None, "--face-fraction", help="The central fraction of the face "
                                                  "frame the model sees (stored in the metadata); e.g. 0.875 for a "
                                                  "model trained on random 36-48 px crops of 48 px faces [the "
                                                  "run's, else 1]."),
    view_fractions: Optional[str] = typer.Option(None, "--view-fractions", help="Further central fractions of the "
                                                 "face frame, comma-separated (stored in the metadata): for a face "
                                                 "whose first answer is unsure, the device averages in its answers "
                                                 "at these too (with their mirror images under --flip-average); "
                                                 "e.g. 0.79,0.96; '' for none [the run's, else none]."),
    seed: int = typer.Option(0, "--seed"),
    detector: Detector = "auto",
    detector_model: DetectorModel = None,
):
    """Full-integer int8 conversion with embedded metadata, and a float vs int8 report."""
    quant = _convert_module("quantize")
    model = quant.model_file(model)
    given = {"margin": margin, "face_fraction": face_fraction, "flip_average": flip_average,
             "view_fractions": _fractions(view_fractions) if view_fractions is not None else None}
    geo = _geometry(quant, model, {k: v for k, v in given.items() if v is not None})
    try:
        rep = quant.convert(model, calib, dataset, out, name, version, geo["margin"], calib_size, check_size, force,
                            seed, float_model, echo=lambda s: typer.echo(s, err=True), detector=detector,
                            detector_model=detector_model, flip_average=geo["flip_average"],
                            face_fraction=geo["face_fraction"], view_fractions=geo["view_fractions"])
    except (FileNotFoundError, ValueError) as exc:
        raise WorkstationError(str(exc)) from None
    typer.echo(json.dumps(rep, indent=1))


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give numbers separated by commas, e.g. 0.79,0.96",
                                 param_hint="--view-fractions") from None


def _geometry(quant, model: Path, given: dict) -> dict:
    """The face geometry and averaging to store: the options given, else the run's, else the defaults."""
    run = quant.run_geometry(model)
    taken = {k: v for k, v in run.items() if k not in given}
    if taken:
        typer.echo(f"edgeemo: from {model.parent / 'config.json'}: "
                   + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in taken.items()), err=True)
    return {**quant.GEOMETRY_DEFAULTS, **run, **given}
