"""`edgeemo study`: reproduce the original JAFFE study, and put the honest figure beside it.

The study trained three small Keras CNNs (``seed-basic``, ``seed-dropout``, ``seed-best``; see archs.py) on
JAFFE at 128x128 RGB and reported accuracy on a random 64-image test split: basic 46.9%, best 98.4% with
Adam, 96.9% with SGD and 98.4% with Nadam. A random split puts the same ten women on both sides, so it
measures how well a network recognises other photos of people it has seen. Leave-one-subject-out
(train on nine women, test on the tenth, for each of the ten) measures what matters for a device: faces
it has never seen.

For each (recipe, optimizer) run this trains on ``seeds`` random splits, on the same splits without
near-duplicates (each woman's takes of one expression on one side), and once per left-out person, and
writes to the output folder:
  study.json                      every figure below, the options, and the per-fold reports
  study.md                        the table, in Markdown (docs/study.md explains it)
  <recipe>-<optimizer>/random/seed<N>_report.json, grouped/seed<N>_report.json (+ confusion PNGs; each
                                  with its per-epoch history and the key --resume matches)
  <recipe>-<optimizer>/loso/cv_report.json (+ cv_pooled_confusion.png; folds/ for --resume)
  best_loso_confusion.png         the pooled confusion matrix of the best run under leave-one-subject-out

Every model is scored with its last epoch's weights: no test image chooses an epoch (the column "the
luckiest split with the epoch picked on its test images" is read from the histories, to show what a study
that did so would report). Faithful mode (the default) uses the study's input: the whole photo at 128x128
RGB, no face detection, the optimizer's own constant rate, until the training loss stops falling. Crop
mode (``faithful=False``) finds and crops faces with the device's detector and crop code
(commands.load_inputs), as `edgeemo train --dataset jaffe` does, for a fixed number of epochs.
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
    epochs: int = 150                # the most epochs; faithful mode stops when the training loss stops falling
    batch_size: int = 16
    seed: int = 0
    seeds: int = 5                   # random splits (and training seeds) per run: seed, seed+1, ...
    test_images: int = STUDY_TEST_IMAGES
    input_size: int = STUDY_INPUT_SIZE
    runs: tuple = STUDY_RUNS
    loso: bool = True
    augment: bool = False
    faithful: bool = True            # the study's input: the whole photo at 128x128 RGB, no face detection
    quick: bool = False              # QUICK_EPOCHS epochs, 2 seeds, the first QUICK_FOLDS people: the plumbing
    detector: str = "auto"           # crop mode (faithful=False) only
    detector_model: str | None = None
    stop_patience: int = 10
    stop_min_delta: float = 0.01
    stop_armed_below: float = 0.5    # ... once the loss has first fallen below half its first epoch's
    resume: bool = False             # reuse the trainings an interrupted study in the same --out finished
    extra: dict = field(default_factory=dict)

    def train_config(self, arch: str, optimizer: str, seed: int, epochs: int) -> TrainConfig:
        """One training of the study: its recipe and optimizer, at most ``epochs``, scored at its last epoch;
        in faithful mode at the optimizer's constant rate until the training loss stops falling."""
        stop = ({"schedule": "constant", "stop_on": "train_loss", "stop_patience": self.stop_patience,
                 "stop_min_delta": self.stop_min_delta, "stop_armed_below": self.stop_armed_below}
                if self.faithful else {})
        return TrainConfig(arch=arch, optimizer=optimizer, epochs=epochs, batch_size=self.batch_size, seed=seed,
                           patience=0, augment=self.augment, class_weights=False, input_size=self.input_size,
                           channels=3, extra=stop)


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


def _mean_sd(values) -> tuple[float, float]:
    import numpy as np
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_study(data, out, opts: StudyOptions | None = None, echo=print) -> dict:
    """Every run on several random splits, on the same splits without near-duplicates, and
    leave-one-subject-out; write and return the table (see the module's text)."""
    import numpy as np
    opts = opts or StudyOptions()
    epochs = min(opts.epochs, QUICK_EPOCHS) if opts.quick else opts.epochs
    if epochs < 1:
        raise ValueError(f"--epochs {opts.epochs}: train for at least 1 epoch")
    n_seeds = min(opts.seeds, 2) if opts.quick else opts.seeds
    if n_seeds < 1:
        raise ValueError(f"--seeds {opts.seeds}: at least 1")
    out = Path(out)
    t_start = time.time()
    detector = "none" if opts.faithful else opts.detector
    fs, x = commands.load_inputs(data, "jaffe", opts.input_size, 3, detector, opts.detector_model)
    echo(commands.describe(fs, data, "jaffe"))
    people = sorted(set(fs.subjects))
    n_test = _test_count(len(fs), opts.test_images, echo)
    if opts.loso and len(people) < 2:
        raise ValueError(f"{data}: leave-one-subject-out needs at least 2 people, found {len(people)} "
                         f"({', '.join(people)}); pass --no-loso for the random split alone")
    folds = min(len(people), QUICK_FOLDS) if opts.quick else len(people)
    seeds = [opts.seed + k for k in range(n_seeds)]
    groups = list(zip(fs.subjects, fs.labels.tolist()))
    splits = {"random": [prepare.stratified_count_split(fs.labels, n_test, s) for s in seeds],
              "grouped": [prepare.grouped_count_split(fs.labels, groups, n_test, s) for s in seeds]}
    mode = ("faithful: whole photos, 128x128 RGB, no face detection, the optimizer's own constant rate, "
            "until the training loss stops falling" if opts.faithful else "crop mode: faces found and cropped")
    echo(f"{mode}; {n_seeds} random splits of {n_test} test images (and the same without near-duplicates)"
         + (f"; leave-one-subject-out over {folds} of {len(people)} people" if opts.loso else "")
         + f"; at most {epochs} epochs, batch {opts.batch_size}")

    rows = []
    for arch, optimizer in opts.runs:
        name = f"{arch}-{optimizer}"
        run_dir = out / name
        t0 = time.time()
        row = {"run": name, "recipe": arch, "optimizer": optimizer, "study_accuracy": STUDY_FIGURES.get((arch, optimizer))}
        for kind, pairs in splits.items():
            accs, f1s, eps, peeks = [], [], [], []
            for seed, (tr, te) in zip(seeds, pairs):
                cfg = opts.train_config(arch, optimizer, seed, epochs)
                key = training_key(cfg, fs.paths, tr, te, detector)
                saved = run_dir / kind / f"seed{seed}_report.json"
                rep = commands.saved_result(saved, key) if opts.resume else None
                if rep is None:
                    model, history = fit(x[tr], fs.labels[tr], x[te], fs.labels[te], cfg, None, False,
                                         echo=lambda s: None, keep_best=False)
                    rep = metrics.report(fs.labels[te], predict(model, x[te]).argmax(axis=1))
                    rep.update({"model": arch, "optimizer": optimizer, "split": kind, "seed": seed,
                                "epochs": len(history), "train_images": int(len(tr)), "test_images": int(len(te)),
                                "params": int(model.count_params()), "history": history, "key": key})
                    write_report(rep, saved.parent, saved.stem, f"{name}, {kind} split, seed {seed}: "
                                 f"accuracy {rep['accuracy']:.3f}")
                    done = f"after {rep['epochs']} epochs ({time.time() - t0:.0f}s)"
                else:
                    done = f"after {rep['epochs']} epochs (reused from {saved})"
                row["params"] = rep["params"]
                peeks.append(max((e.get("val_accuracy", 0.0) for e in rep["history"]), default=0.0))
                accs.append(rep["accuracy"])
                f1s.append(rep["macro_f1"])
                eps.append(rep["epochs"])
                echo(f"{name}: {kind} split, seed {seed}: accuracy {rep['accuracy']:.4f} on {len(te)} test images "
                     + done)
            m, sd = _mean_sd(accs)
            row.update({f"{kind}_accuracy_mean": m, f"{kind}_accuracy_std": sd, f"{kind}_accuracies": accs,
                        f"{kind}_macro_f1_mean": _mean_sd(f1s)[0], f"{kind}_epochs": eps,
                        f"{kind}_test_images": [int(len(te)) for _, te in pairs],
                        # what a study would report that kept its luckiest split and picked the epoch on the test
                        # images (the history holds every epoch's test accuracy; no model here was chosen so)
                        f"{kind}_best_epoch_accuracies": peeks, f"{kind}_best_split_best_epoch": max(peeks)})
        if opts.loso:
            cfg = opts.train_config(arch, optimizer, opts.seed, epochs)
            cv = commands.cross_validate(fs, x, cfg, "loso", run_dir / "loso", "jaffe",
                                         echo=lambda s, n=name: echo(f"{n}: {s}"),
                                         max_folds=folds if folds < len(people) else None,
                                         fold_key=lambda tr, te: training_key(cfg, fs.paths, tr, te, detector),
                                         resume=opts.resume)
            row.update({"loso_accuracy_mean": cv["accuracy_mean"], "loso_accuracy_std": cv["accuracy_std"],
                        "loso_macro_f1_mean": cv["macro_f1_mean"], "loso_macro_f1_std": cv["macro_f1_std"],
                        "loso_pooled_accuracy": cv["pooled"]["accuracy"], "loso_folds": cv["folds"],
                        "loso_per_person": {r["fold"].removeprefix("subject "): r["accuracy"]
                                            for r in cv["fold_reports"]}})
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)

    result = {
        "data": str(data), "images": len(fs), "people": people, "class_counts": fs.class_counts(),
        "data_notes": fs.notes, "detector": fs.notes.get("detector", "none"), "quick": opts.quick,
        "options": {**asdict(opts), "runs": [list(r) for r in opts.runs], "epochs_run": epochs, "seeds_run": seeds},
        "test_images": n_test, "rows": rows, "seconds": round(time.time() - t_start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    if opts.loso and rows:
        best = max(rows, key=lambda r: r.get("loso_accuracy_mean", -1))
        png = out / best["run"] / "loso" / "cv_pooled_confusion.png"
        if png.exists():
            import shutil
            shutil.copy(png, out / "best_loso_confusion.png")
            result["best_loso_run"] = best["run"]
    (out / "study.json").write_text(json.dumps(result, indent=1, default=lambda o: np.asarray(o).tolist()))
    (out / "study.md").write_text(markdown_table(result))
    return result


def training_key(cfg: TrainConfig, paths, tr, te, detector: str) -> dict:
    """What makes one training of the study what it is: its settings and its exact train and test images.
    A finished training is reused by --resume only when its key is equal."""
    import hashlib
    digest = hashlib.sha1()
    for part in (tr, te):
        digest.update("\n".join(Path(paths[i]).name for i in part).encode() + b"\0")
    return {"config": {k: v for k, v in asdict(cfg).items() if k != "time_budget_min"},
            "detector": detector, "images": digest.hexdigest()}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ms(r: dict, kind: str) -> str:
    if f"{kind}_accuracy_mean" not in r:
        return "-"
    return f"{100 * r[f'{kind}_accuracy_mean']:.1f}% ± {100 * r[f'{kind}_accuracy_std']:.1f}"


def markdown_table(result: dict) -> str:
    """One table: the study's figure | ours on random splits | without near-duplicates | leave-one-subject-out."""
    rows = result["rows"]
    o = result["options"]
    n_seeds = len(o.get("seeds_run", [o["seed"]]))
    folds = max((r.get("loso_folds", 0) for r in rows), default=0)
    head = ["run", "params", f"study ({STUDY_TEST_IMAGES} test images)",
            f"ours, random split (mean ± sd, {n_seeds} split{'s' if n_seeds != 1 else ''})",
            "ours, the luckiest split with the epoch picked on its test images",
            "ours, random split without near-duplicates",
            f"ours, leave-one-subject-out ({folds} people)" if folds else "ours, leave-one-subject-out (not run)",
            "epochs (random split)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        eps = r.get("random_epochs") or []
        lines.append("| " + " | ".join([
            f"{r['recipe']} + {r['optimizer']}", f"{r.get('params', 0):,}", _pct(r["study_accuracy"]),
            _ms(r, "random"), _pct(r.get("random_best_split_best_epoch")), _ms(r, "grouped"), _ms(r, "loso"),
            f"{min(eps)}-{max(eps)}" if eps else "-"]) + " |")
    notes = [
        "",
        f"JAFFE-format data from `{result['data']}`: {result['images']} images, {len(result['people'])} people; "
        f"{o['input_size']}x{o['input_size']} RGB, pixels in [0, 1], "
        + ("the whole photo (no face detection), as in the study; " if o.get("faithful", False) or
           result["detector"] == "none" else
           f"faces found by the `{result['detector']}` detector and cropped as on the device; ")
        + (f"the optimizer's own constant learning rate, trained until the training loss stopped falling by "
           f"{o.get('stop_min_delta', 0.01):.0%} for {o.get('stop_patience', 5)} epochs (at most {o['epochs_run']}), "
           f"counted once it had first fallen below {o.get('stop_armed_below', 0.5):.0%} of its first epoch's; "
           if o.get("faithful", False) else f"{o['epochs_run']} epochs; ")
        + f"batch {o['batch_size']}, {'with' if o['augment'] else 'no'} augmentation; last-epoch weights scored.",
        "Random split: about 64 test images drawn at random, the same ten women on both sides, as in the study. "
        "The luckiest split with the epoch picked on its test images: the best test accuracy of any epoch on the "
        "best of the random splits, i.e. what one split scored by its best epoch would report (every figure "
        "beside it is the last epoch's). "
        "Without near-duplicates: the same, but each woman's takes of one expression are all on one side. "
        "Leave-one-subject-out: each woman's images tested by a model that never saw her; mean ± sd over people.",
    ]
    if result.get("quick"):
        notes.append(f"QUICK RUN ({o['epochs_run']} epochs, {n_seeds} splits, {folds} people left out): checks "
                     f"the plumbing; the figures are not comparable with the study.")
    return "\n".join(lines + notes) + "\n"
