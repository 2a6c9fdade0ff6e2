"""The workstation commands behind `edgeemo train`, `edgeemo evaluate` and `edgeemo convert`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np


from edgeemo import atomic

from . import archs, datasets, metrics, prepare
from .errors import DataSetError, OptionError
from .train import TrainConfig, finish_run, fit

log = logging.getLogger("edgeemo.convert")


def load_inputs(data, dataset: str, size: int, channels: int, detector: str = "auto",
                detector_model=None, margin: float = 0.15):
    """Read a data set and turn it into model inputs; whole photos (JAFFE) go through face detection."""
    fs = datasets.load(data, dataset)
    det = prepare.dataset_detector(dataset, detector, detector_model)
    x = prepare.to_inputs(fs, size, channels, det, margin if det is not None else 0.0)
    return fs, x


def describe(fs, data, dataset: str) -> str:
    """One line on what was read: images kept and what was skipped or removed, and why."""
    n = fs.notes
    parts = [f"skipped {n['blank_skipped']} blank", f"removed {n['duplicates_removed']} byte-identical duplicates",
             f"{n['conflicting_labels_removed']} with conflicting labels"]
    if n.get("train_copies_of_eval_images_removed"):
        parts.append(f"{n['train_copies_of_eval_images_removed']} training copies of validation/test images")
    if n.get("unreadable_skipped"):
        parts.append(f"{n['unreadable_skipped']} unreadable")
    for cls, k in (n.get("dropped_classes") or {}).items():
        parts.append(f"dropped {k} of class {cls!r} (no canonical counterpart)")
    if n.get("no_face_used_whole"):
        parts.append(f"no face found in {n['no_face_used_whole']} (used whole)")
    return f"{dataset}: {len(fs)} images from {data} ({', '.join(parts)})"


def data_info(fs, data, dataset, tr_idx, va_idx) -> dict:
    return {"path": str(data), "dataset": dataset, "images": len(fs),
            "train_images": int(len(tr_idx)), "validation_images": int(len(va_idx)),
            "person_independent": bool(fs.has_subjects()), **fs.notes}


def train(data, dataset: str, out, cfg: TrainConfig, val_fraction: float = 0.15, cv: str | None = None,
          resume: bool = False, detector: str = "auto", detector_model=None, echo=print) -> dict:
    recipe = archs.RECIPES[cfg.arch] if cfg.arch in archs.RECIPES else None
    if recipe is None:
        raise OptionError(f"unknown architecture {cfg.arch!r}; choose one of {', '.join(archs.RECIPES)}")
    if cv and cv != "loso" and not cv.isdigit():
        raise OptionError(f"--cv takes a number of folds or 'loso', not {cv!r}")
    size, ch = cfg.input_size or recipe.input_size, cfg.channels or recipe.channels
    crop_trained = cfg.arch in archs.CROP_TRAINED
    if crop_trained and cfg.blur():
        raise OptionError(f"--blur is for the 48x48 recipes trained on blurred pictures; {cfg.arch} is trained "
                           f"on sharp faces: drop --blur or choose --arch edge24")
    # Crop-trained recipes cut each training face at random from a larger source picture.
    margin = float((cfg.extra.get("geometry") or {}).get("margin", 0.15))
    fs, x = load_inputs(data, dataset, max(size, archs.SOURCE_SIZE) if crop_trained else size, ch, detector,
                        detector_model, margin)
    echo(describe(fs, data, dataset))
    out = Path(out)
    if cv:
        return cross_validate(fs, x, cfg, cv, out, dataset, echo)
    tr, va = prepare.holdout_split(fs, val_fraction, cfg.seed)
    if len(va) == 0 or len(tr) == 0:
        raise DataSetError(f"{data}: cannot make both a training and a validation split from {len(fs)} images "
                            f"({len(tr)} / {len(va)}); add images (or people), or change --val-split")
    echo(f"training on {len(tr)} images, validating on {len(va)}"
         + (" (people kept apart)" if fs.has_subjects() and "train" not in set(fs.splits) else ""))
    check_sharpness(fs, tr, va, cfg, echo)
    if cfg.blur():
        det = prepare.dataset_detector(dataset, detector, detector_model)
        x[va] = prepare.to_inputs(fs.subset(va), size, ch, det, 0.15 if det is not None else 0.0, cfg.blur())
        echo(f"validation faces blurred with sigma {cfg.blur_sigma:g} (at 48x48), as the device will blur them")
    x_va = _eval_inputs(x[va], cfg)
    model, history = _fit_recipe(x[tr], fs.labels[tr], x[va], fs.labels[va], cfg, out, resume, echo)
    rep = finish_run(model, history, x_va, fs.labels[va], cfg, out, data_info(fs, data, dataset, tr, va))
    echo(f"validation accuracy {rep['accuracy']:.4f}, macro-F1 {rep['macro_f1']:.4f}; wrote {out}")
    return rep


def _eval_inputs(x: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """Faces as the model sees them at test time: crop-trained recipes see the central ``--face-fraction`` of
    the source face (the device's framing, recorded for ``edgeemo convert``) resized to their input, so that
    the epoch kept and the accuracy reported are the device's."""
    if cfg.arch not in archs.CROP_TRAINED:
        return x
    size = cfg.input_size or archs.RECIPES[cfg.arch].input_size
    fraction = float((cfg.extra.get("geometry") or {}).get("face_fraction", 1.0))
    if fraction == 1.0 or x.shape[3] != 1:
        from .augment import eval_view
        return eval_view(x, size)
    from edgeemo.crop import whole_image
    return np.stack([whole_image(f[:, :, 0], size, 1, None, fraction).reshape(size, size, 1) for f in x])


def _fit_recipe(x_tr, y_tr, x_te, y_te, cfg: TrainConfig, out, resume, echo, keep_best=True):
    """Train with the recipe's own trainer: fasttrain for crop-trained recipes, train.fit for the others."""
    if cfg.arch in archs.CROP_TRAINED:
        from .fasttrain import fit_fast
        return fit_fast(x_tr, y_tr, _eval_inputs(x_te, cfg), y_te, cfg, out, resume, echo, keep_best)
    return fit(x_tr, y_tr, x_te, y_te, cfg, out, resume, echo, keep_best)


def check_sharpness(fs, tr, va, cfg: TrainConfig, echo=print) -> tuple[float, float]:
    """Warn when training and validation pictures differ a lot in sharpness (a blurred training set)."""
    s_tr = prepare.sharpness([fs.images[i] for i in tr])
    s_va = prepare.sharpness([fs.images[i] for i in va])
    if min(s_tr, s_va) > 0 and max(s_tr, s_va) / min(s_tr, s_va) > 10:
        which = "training" if s_tr < s_va else "validation"
        echo(f"warning: the {which} pictures are far blurrier than the others (median Laplacian variance "
             f"{s_tr:.1f} for training vs {s_va:.1f} for validation): a model trained on one will do poorly "
             f"on the other." + ("" if cfg.blur_sigma else " If the training set is blurred, train with "
                                 "--blur SIGMA so that validation and the device blur faces alike."))
    return s_tr, s_va


def saved_result(path: Path, key) -> dict | None:
    """The report saved at ``path`` by a training with this key (settings and images), or None (absent, torn,
    or another training): what a resumed study or cross-validation reuses instead of training again."""
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rep if rep.get("key") == json.loads(json.dumps(key)) else None


def cv_folds(fs, cv: str, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, train indices, test indices) for ``--cv K`` or ``--cv loso``."""
    if cv == "loso":
        if not fs.has_subjects():
            raise DataSetError(f"--cv loso needs the person of every image, and this {fs.name or 'data'} set does "
                                f"not name them (JAFFE and CK+ file names do); use --cv K instead")
        return [(f"subject {s}", tr, te) for s, tr, te in prepare.leave_one_subject_out(fs.subjects)]
    try:
        k = int(cv)
    except ValueError:
        raise OptionError(f"--cv takes a number of folds or 'loso', not {cv!r}") from None
    if not 2 <= k <= len(fs):
        raise OptionError(f"--cv {k}: the number of folds must be between 2 and the {len(fs)} images")
    return [(f"fold {i + 1}", tr, te) for i, (tr, te) in enumerate(prepare.kfold(fs.labels, k, seed))]


def cross_validate(fs, x, cfg: TrainConfig, cv: str, out: Path, dataset: str, echo=print,
                   max_folds: int | None = None, fold_key=None, resume: bool = False) -> dict:
    """--cv K (stratified k-fold) or --cv loso (leave one subject out): mean and std over folds.

    Each fold trains for the full number of epochs and is scored with its last weights: the test fold
    is never used to pick an epoch or to stop early. ``max_folds`` runs only the first folds (smoke runs).
    With ``fold_key(train, test)``, each finished fold is written to ``out/folds/`` with its key (and its
    predictions); ``resume`` then reuses a fold whose key is equal instead of training it again.
    """
    from .train import predict, write_report
    folds = cv_folds(fs, cv, cfg.seed)
    if max_folds:
        folds = folds[:max_folds]
    out.mkdir(parents=True, exist_ok=True)
    fold_reports, y_all, p_all = [], [], []
    fcfg = TrainConfig(**{**cfg.__dict__, "patience": 0})   # no peeking at the test fold
    for i, (name, tr, te) in enumerate(folds):
        key = fold_key(tr, te) if fold_key else None
        saved = out / "folds" / f"fold{i:02d}.json"
        rep = saved_result(saved, key) if (key is not None and resume) else None
        if rep is not None:
            pred = np.asarray(rep["predictions"], dtype=np.int64)
            echo(f"{name}: reused from {saved}")
        else:
            model, _ = _fit_recipe(x[tr], fs.labels[tr], x[te], fs.labels[te], fcfg, None, False,
                                   echo=lambda s: None, keep_best=False)
            pred = predict(model, _eval_inputs(x[te], cfg)).argmax(axis=1)
            rep = metrics.report(fs.labels[te], pred)
            if key is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_json(saved, {**rep, "fold": name, "key": key, "predictions": pred.tolist()},
                                  indent=None)
        rep = {k: v for k, v in rep.items() if k not in ("key", "predictions")}
        rep["fold"] = name
        fold_reports.append(rep)
        y_all.extend(fs.labels[te])
        p_all.extend(pred)
        echo(f"{name}: {len(te)} test images, accuracy {rep['accuracy']:.4f}, macro-F1 {rep['macro_f1']:.4f}")
    summary = metrics.summarize_folds(fold_reports)
    pooled = metrics.report(y_all, p_all)
    result = {"cv": cv, "model": cfg.arch, "optimizer": cfg.optimizer, "dataset": dataset, "epochs": cfg.epochs,
              **summary, "pooled": pooled, "fold_reports": fold_reports}
    (out / "cv_report.json").write_text(json.dumps(result, indent=1))
    write_report(pooled, out, "cv_pooled_report", f"{cfg.arch} {cv}-fold: pooled over folds")
    echo(f"{cv} cross-validation over {summary['folds']} folds: accuracy {summary['accuracy_mean']:.4f} "
         f"+- {summary['accuracy_std']:.4f}, macro-F1 {summary['macro_f1_mean']:.4f} +- "
         f"{summary['macro_f1_std']:.4f}; wrote {out / 'cv_report.json'}")
    return result
