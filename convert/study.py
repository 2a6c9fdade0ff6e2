"""`edgeemo study`: reproduce the original JAFFE study, and put the honest figure beside it.

The study trained three small Keras CNNs (``seed-basic``, ``seed-dropout``, ``seed-best``; see archs.py) on
JAFFE at 128x128 RGB and reported accuracy on a random 64-image test split: basic 46.9%, best 98.4% with
Adam, 96.9% with SGD and 98.4% with Nadam. A random split puts the same ten women on both sides, so it
measures how well a network recognises other photos of people it has seen. Leave-one-subject-out
(train on nine women, test on the tenth, for each of the ten) measures what matters for a device: faces
it has never seen.

For each (recipe, optimizer) run this trains once on the random split and once per left-out person, and
writes to the output folder:
  study.json                      every figure below, the options, and the per-fold reports
  study.md                        the table, in Markdown
  <recipe>-<optimizer>/random_split_report.json (+ random_split_confusion.png)
  <recipe>-<optimizer>/loso/cv_report.json (+ cv_pooled_confusion.png)

Every model is scored with its last epoch's weights: no test image chooses an epoch.
The pictures are whole photos: faces are found with the device's detector and cropped with the device's
crop code (commands.load_inputs), exactly as `edgeemo train --dataset jaffe` does.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from . import archs, commands, metrics, prepare
from .train import OPTIMIZERS, TrainConfig, fit, predict, write_report

STUDY_RUNS = (("seed-basic", "adam"), ("seed-dropout", "adam"),
              ("seed-best", "adam"), ("seed-best", "sgd"), ("seed-best", "nadam"))
# Accuracy the study reported on its 64-image random test split (None: not reported).
STUDY_FIGURES = {("seed-basic", "adam"): 0.469, ("seed-dropout", "adam"): None,
                 ("seed-best", "adam"): 0.984, ("seed-best", "sgd"): 0.969, ("seed-best", "nadam"): 0.984}
STUDY_TEST_IMAGES = 64
STUDY_INPUT_SIZE = 128
QUICK_EPOCHS = 2
QUICK_FOLDS = 3


@dataclass
class StudyOptions:
    epochs: int = 30
    batch_size: int = 16
    seed: int = 0
    test_images: int = STUDY_TEST_IMAGES
    input_size: int = STUDY_INPUT_SIZE
    runs: tuple = STUDY_RUNS
    loso: bool = True
    augment: bool = False
    quick: bool = False          # QUICK_EPOCHS epochs and the first QUICK_FOLDS people: checks the plumbing
    detector: str = "auto"
    detector_model: str | None = None
    extra: dict = field(default_factory=dict)


def parse_runs(text: str | None) -> tuple:
    """``"seed-best:adam,seed-basic:adam"`` -> ((recipe, optimizer), ...); None or "" -> the study's five."""
    if not text:
        return STUDY_RUNS
    runs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        arch, _, opt = item.partition(":")
        opt = opt or "adam"
        if arch not in archs.RECIPES:
            raise ValueError(f"--runs: unknown recipe {arch!r} in {item!r}; choose from {', '.join(archs.RECIPES)}")
        if opt not in OPTIMIZERS:
            raise ValueError(f"--runs: unknown optimizer {opt!r} in {item!r}; choose from {', '.join(OPTIMIZERS)}")
        runs.append((arch, opt))
    if not runs:
        raise ValueError(f"--runs {text!r} names no run; write e.g. seed-best:adam,seed-best:sgd")
    return tuple(runs)


def _test_count(n_images: int, wanted: int, echo) -> int:
    if 0 < wanted <= n_images // 2:
        return wanted
    n_test = max(1, int(round(0.3 * n_images)))
    echo(f"{n_images} images are too few for a {wanted}-image test split; using {n_test} (30%) instead")
    return n_test


def run_study(data, out, opts: StudyOptions | None = None, echo=print) -> dict:
    """Train every run on the random split and leave-one-subject-out; write and return the table."""
    opts = opts or StudyOptions()
    epochs = min(opts.epochs, QUICK_EPOCHS) if opts.quick else opts.epochs
    if epochs < 1:
        raise ValueError(f"--epochs {opts.epochs}: train for at least 1 epoch")
    out = Path(out)
    t_start = time.time()
    fs, x = commands.load_inputs(data, "jaffe", opts.input_size, 3, opts.detector, opts.detector_model)
    echo(commands.describe(fs, data, "jaffe"))
    people = sorted(set(fs.subjects))
    n_test = _test_count(len(fs), opts.test_images, echo)
    tr, te = prepare.stratified_count_split(fs.labels, n_test, opts.seed)
    if opts.loso and len(people) < 2:
        raise ValueError(f"{data}: leave-one-subject-out needs at least 2 people, found {len(people)} "
                         f"({', '.join(people)}); pass --no-loso for the random split alone")
    folds = min(len(people), QUICK_FOLDS) if opts.quick else len(people)
    echo(f"random split: {len(tr)} training and {len(te)} test images (people on both sides, as in the study); "
         + (f"leave-one-subject-out over {folds} of {len(people)} people" if opts.loso else "no leave-one-subject-out")
         + f"; {epochs} epochs, batch {opts.batch_size}, {opts.input_size}x{opts.input_size} RGB")

    rows = []
    for arch, optimizer in opts.runs:
        name = f"{arch}-{optimizer}"
        run_dir = out / name
        cfg = TrainConfig(arch=arch, optimizer=optimizer, epochs=epochs, batch_size=opts.batch_size,
                          seed=opts.seed, patience=0, augment=opts.augment, class_weights=False,
                          input_size=opts.input_size, channels=3)
        t0 = time.time()
        model, history = fit(x[tr], fs.labels[tr], x[te], fs.labels[te], cfg, None, False,
                             echo=lambda s: None, keep_best=False)
        params = int(model.count_params())
        rep = metrics.report(fs.labels[te], predict(model, x[te]).argmax(axis=1))
        rep.update({"model": arch, "optimizer": optimizer, "split": "random", "epochs": epochs,
                    "train_images": int(len(tr)), "test_images": int(len(te)), "history": history})
        write_report(rep, run_dir, "random_split_report",
                     f"{name}, random split: accuracy {rep['accuracy']:.3f}")
        echo(f"{name}: random split accuracy {rep['accuracy']:.4f} ({len(te)} test images, "
             f"{time.time() - t0:.0f}s)")
        row = {"run": name, "recipe": arch, "optimizer": optimizer, "params": params,
               "random_accuracy": rep["accuracy"], "random_macro_f1": rep["macro_f1"],
               "random_test_images": int(len(te)), "study_accuracy": STUDY_FIGURES.get((arch, optimizer))}
        if opts.loso:
            cv = commands.cross_validate(fs, x, cfg, "loso", run_dir / "loso", "jaffe",
                                         echo=lambda s, n=name: echo(f"{n}: {s}"),
                                         max_folds=folds if folds < len(people) else None)
            row.update({"loso_accuracy_mean": cv["accuracy_mean"], "loso_accuracy_std": cv["accuracy_std"],
                        "loso_macro_f1_mean": cv["macro_f1_mean"], "loso_macro_f1_std": cv["macro_f1_std"],
                        "loso_folds": cv["folds"],
                        "loso_per_person": {r["fold"].removeprefix("subject "): r["accuracy"]
                                            for r in cv["fold_reports"]}})
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)

    result = {
        "data": str(data), "images": len(fs), "people": people, "class_counts": fs.class_counts(),
        "data_notes": fs.notes, "detector": fs.notes.get("detector", "none"), "quick": opts.quick,
        "options": {**asdict(opts), "runs": [list(r) for r in opts.runs], "epochs_run": epochs},
        "random_split": {"seed": opts.seed, "test_images": int(len(te)), "train_images": int(len(tr))},
        "rows": rows, "seconds": round(time.time() - t_start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(result, indent=1))
    table = markdown_table(result)
    (out / "study.md").write_text(table)
    return result


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def markdown_table(result: dict) -> str:
    """The study table: the random split beside the study's figure and leave-one-subject-out."""
    rows = result["rows"]
    n_te = result["random_split"]["test_images"]
    loso = any("loso_accuracy_mean" in r for r in rows)
    folds = max((r.get("loso_folds", 0) for r in rows), default=0)
    head = ["recipe", "optimizer", "params", f"random split ({n_te} test images)",
            f"study ({STUDY_TEST_IMAGES} test images)"]
    if loso:
        head += [f"leave-one-subject-out accuracy ({folds} people)", "LOSO macro-F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["recipe"], r["optimizer"], f"{r['params']:,}", _pct(r["random_accuracy"]),
                 _pct(r["study_accuracy"])]
        if loso:
            cells += ([f"{100 * r['loso_accuracy_mean']:.1f}% ± {100 * r['loso_accuracy_std']:.1f}",
                       f"{r['loso_macro_f1_mean']:.3f} ± {r['loso_macro_f1_std']:.3f}"]
                      if "loso_accuracy_mean" in r else ["-", "-"])
        lines.append("| " + " | ".join(cells) + " |")
    o = result["options"]
    notes = [
        "",
        f"JAFFE-format data from `{result['data']}`: {result['images']} images, {len(result['people'])} people; "
        f"{o['input_size']}x{o['input_size']} RGB "
        + (f"faces found by the `{result['detector']}` detector and cropped as on the device "
           f"({result['data_notes'].get('no_face_used_whole', 0)} pictures without a face used whole); "
           if result["detector"] != "none" else "whole pictures (no face detection); ")
        + f"{o['epochs_run']} epochs, batch {o['batch_size']}, seed {o['seed']}, "
          f"{'with' if o['augment'] else 'no'} augmentation; last-epoch weights scored.",
        "Random split: the same people appear in training and test images (as in the study). "
        "Leave-one-subject-out: each person's images are tested by a model that never saw her; "
        "mean ± standard deviation over people.",
    ]
    if result.get("quick"):
        notes.append(f"QUICK RUN ({o['epochs_run']} epochs, {folds} people left out): checks the plumbing; "
                     f"the figures are not comparable with the study.")
    return "\n".join(lines + notes) + "\n"
