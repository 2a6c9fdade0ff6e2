"""The workstation commands behind `edgeemo train`, `edgeemo evaluate` and `edgeemo convert`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edgeemo.labels import LABELS

from . import archs, datasets, metrics, prepare
from .train import TrainConfig, finish_run, fit

log = logging.getLogger("edgeemo.convert")


def load_inputs(data, dataset: str, size: int, channels: int, detector: str = "auto",
                detector_model=None, margin: float = 0.15):
    """Read a data set and turn it into model inputs; whole photos (JAFFE) go through face detection."""
    fs = datasets.load(data, dataset)
    det = None
    if dataset in prepare.NEEDS_DETECTION and detector != "none":
        from edgeemo.detect import make_detector
        det = make_detector(detector, model_path=detector_model)
    x = prepare.to_inputs(fs, size, channels, det, margin if det is not None else 0.0)
    return fs, x


def data_info(fs, data, dataset, tr_idx, va_idx) -> dict:
    return {"path": str(data), "dataset": dataset, "images": len(fs),
            "train_images": int(len(tr_idx)), "validation_images": int(len(va_idx)),
            "person_independent": bool(fs.has_subjects()), **fs.notes}


def train(data, dataset: str, out, cfg: TrainConfig, val_fraction: float = 0.15, cv: str | None = None,
          resume: bool = False, detector: str = "auto", detector_model=None, echo=print) -> dict:
    recipe = archs.RECIPES[cfg.arch] if cfg.arch in archs.RECIPES else None
    if recipe is None:
        raise SystemExit(f"unknown architecture {cfg.arch!r}; choose one of {', '.join(archs.RECIPES)}")
    size, ch = cfg.input_size or recipe.input_size, cfg.channels or recipe.channels
    fs, x = load_inputs(data, dataset, size, ch, detector, detector_model)
    n = fs.notes
    echo(f"{dataset}: {len(fs)} images from {data} (skipped {n['blank_skipped']} blank, removed "
         f"{n['duplicates_removed']} byte-identical duplicates, {n['conflicting_labels_removed']} with "
         f"conflicting labels)")
    out = Path(out)
    if cv:
        return cross_validate(fs, x, cfg, cv, out, dataset, echo)
    tr, va = prepare.holdout_split(fs, val_fraction, cfg.seed)
    if len(va) == 0 or len(tr) == 0:
        raise SystemExit(f"{data}: cannot make both a training and a validation split from {len(fs)} images")
    echo(f"training on {len(tr)} images, validating on {len(va)}"
         + (" (people kept apart)" if fs.has_subjects() and "train" not in set(fs.splits) else ""))
    model, history = fit(x[tr], fs.labels[tr], x[va], fs.labels[va], cfg, out, resume, echo)
    rep = finish_run(model, history, x[va], fs.labels[va], cfg, out, data_info(fs, data, dataset, tr, va))
    echo(f"validation accuracy {rep['accuracy']:.4f}, macro-F1 {rep['macro_f1']:.4f}; wrote {out}")
    return rep


def cross_validate(fs, x, cfg: TrainConfig, cv: str, out: Path, dataset: str, echo=print) -> dict:
    """--cv K (stratified k-fold) or --cv loso (leave one subject out): mean and std over folds."""
    if cv == "loso":
        folds = [(f"subject {s}", tr, te) for s, tr, te in prepare.leave_one_subject_out(fs.subjects)]
    else:
        try:
            k = int(cv)
        except ValueError:
            raise SystemExit(f"--cv takes a number of folds or 'loso', not {cv!r}") from None
        folds = [(f"fold {i + 1}", tr, te) for i, (tr, te) in enumerate(prepare.kfold(fs.labels, k, cfg.seed))]
    out.mkdir(parents=True, exist_ok=True)
    fold_reports, y_all, p_all = [], [], []
    for name, tr, te in folds:
        fcfg = TrainConfig(**{**cfg.__dict__, "patience": 0})   # no peeking at the test fold
        model, _ = fit(x[tr], fs.labels[tr], x[te], fs.labels[te], fcfg, None, False, echo=lambda s: None)
        from .train import predict
        pred = predict(model, x[te]).argmax(axis=1)
        rep = metrics.report(fs.labels[te], pred)
        rep["fold"] = name
        fold_reports.append(rep)
        y_all.extend(fs.labels[te]), p_all.extend(pred)
        echo(f"{name}: {len(te)} test images, accuracy {rep['accuracy']:.4f}, macro-F1 {rep['macro_f1']:.4f}")
    summary = metrics.summarize_folds(fold_reports)
    pooled = metrics.report(y_all, p_all)
    result = {"cv": cv, "model": cfg.arch, "optimizer": cfg.optimizer, "dataset": dataset, **summary,
              "pooled": pooled, "fold_reports": fold_reports}
    from .train import write_report
    (out / "cv_report.json").write_text(json.dumps(result, indent=1))
    write_report(pooled, out, "cv_pooled_report", f"{cfg.arch} {cv}-fold: pooled over folds")
    echo(f"{cv} cross-validation over {summary['folds']} folds: accuracy {summary['accuracy_mean']:.4f} "
         f"+- {summary['accuracy_std']:.4f}, macro-F1 {summary['macro_f1_mean']:.4f} +- "
         f"{summary['macro_f1_std']:.4f}; wrote {out / 'cv_report.json'}")
    return result
