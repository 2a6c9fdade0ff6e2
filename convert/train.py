"""Training: augmentation, class weights, early stopping, checkpoints and --resume, one line per epoch.

A run writes one folder:
  config.json      the options it ran with
  history.csv      one row per epoch
  curves.png       loss and accuracy, train vs validation
  model.keras      the best model on validation (what `edgeemo convert` takes)
  last.keras       the latest epoch, with optimizer state, for --resume
  state.json       epoch counter and best score, for --resume
  report.json      evaluation of model.keras on the validation split; confusion.png beside it
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeemo.labels import LABELS

from . import archs, metrics, plots
from .errors import MissingExtra

log = logging.getLogger("edgeemo.convert")

OPTIMIZERS = ("adam", "sgd", "nadam")


@dataclass
class TrainConfig:
    arch: str = "edge"
    optimizer: str = "adam"
    epochs: int = 40
    batch_size: int = 64
    lr: float | None = None            # default per optimizer
    seed: int = 0
    patience: int = 10                 # early stopping on validation accuracy
    augment: bool = True
    class_weights: bool = True
    label_smoothing: float = 0.0
    time_budget_min: float | None = None
    input_size: int | None = None      # override the recipe's input size
    # Gaussian blur sigma (at 48x48) applied to validation faces and, through the model's metadata, to
    # every face on the device; training images are used as they are. For training sets that are
    # themselves blurred (the shared FER2013 train/ split is, sigma about 3.2): see the model card.
    blur_sigma: float = 0.0
    channels: int | None = None
    extra: dict = field(default_factory=dict)

    def blur(self) -> dict | None:
        return {"sigma": float(self.blur_sigma), "at": 48} if self.blur_sigma else None

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else {"adam": 1e-3, "nadam": 1e-3, "sgd": 1e-2}[self.optimizer]


def _tf():
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("training") from exc
    return tf, keras


def class_weight_vector(labels: np.ndarray, n: int = len(LABELS)) -> np.ndarray:
    """Square-root inverse-frequency weights, mean 1 over the present classes (absent classes get 0)."""
    counts = np.bincount(labels, minlength=n).astype(float)
    w = np.zeros(n)
    present = counts > 0
    w[present] = np.sqrt(counts[present].sum() / (present.sum() * counts[present]))
    w[present] /= w[present].mean()
    return w


def _augmenter(keras):
    from keras import layers
    return keras.Sequential([
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.04, fill_mode="nearest"),          # about +-15 degrees
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
        layers.RandomZoom((-0.1, 0.1), fill_mode="nearest"),
        layers.RandomBrightness(0.15, value_range=(0.0, 1.0)),
        layers.RandomContrast(0.2),
    ], name="augment")


def _dataset(tf, x, y, w, batch, shuffle_seed=None, augment=None, n_classes=len(LABELS), smoothing=0.0):
    ds = tf.data.Dataset.from_tensor_slices((x, y, w))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)

    def prep(xb, yb, wb):
        xb = tf.cast(xb, tf.float32) / 255.0
        if augment is not None:
            xb = tf.clip_by_value(augment(xb, training=True), 0.0, 1.0)
        yb = tf.one_hot(yb, n_classes)
        if smoothing:
            yb = yb * (1.0 - smoothing) + smoothing / n_classes
        return xb, yb, wb

    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class probabilities for uint8 faces (N, S, S, C) with a Keras model.

    Runs the model eagerly batch by batch: ``model.predict`` would first trace a graph, which costs more
    than the inference itself on the small test folds of cross-validation."""
    out = [np.asarray(model(x[i:i + batch].astype(np.float32) / 255.0, training=False))
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, int(model.output_shape[-1])), np.float32)


def fit(x_tr, y_tr, x_val, y_val, cfg: TrainConfig, run_dir: str | Path | None = None,
        resume: bool = False, echo=print, keep_best: bool = True):
    """Train ``cfg.arch`` on uint8 faces; returns (Keras model, history list).

    With ``run_dir`` it checkpoints every epoch and can resume; without it (cross-validation folds) it
    keeps the best weights in memory. With ``keep_best`` the returned model has the weights of the epoch
    with the best validation accuracy; without it (when the "validation" faces are a test fold, which
    must not choose the model) it has the last epoch's weights and the validation scores are only logged.
    """
    tf, keras = _tf()
    keras.utils.set_random_seed(cfg.seed)
    run = Path(run_dir) if run_dir else None
    if run:
        run.mkdir(parents=True, exist_ok=True)
    size, ch = x_tr.shape[1], x_tr.shape[3]
    w_cls = class_weight_vector(y_tr) if cfg.class_weights else np.ones(len(LABELS))
    steps = int(np.ceil(len(x_tr) / cfg.batch_size))

    state = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": [], "elapsed_s": 0.0}
    if resume and run and (run / "last.keras").exists() and (run / "state.json").exists():
        model = keras.models.load_model(run / "last.keras")
        state = json.loads((run / "state.json").read_text())
        echo(f"resuming {run} at epoch {state['epoch'] + 1} (best val accuracy so far "
             f"{state['best_val_accuracy']:.4f} at epoch {state['best_epoch']})")
    else:
        if resume:
            echo(f"nothing to resume in {run}; starting afresh")
        model = archs.build(cfg.arch, len(LABELS), size, ch)
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate(), decay_steps=steps * cfg.epochs,
                                                     alpha=0.01)
        if (cfg.extra or {}).get("schedule") == "constant":        # the study's: the optimizer's own rate
            lr = cfg.learning_rate()
        opt = {"adam": lambda: keras.optimizers.Adam(lr),
               "nadam": lambda: keras.optimizers.Nadam(lr),
               "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)}[cfg.optimizer]()
        model.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    best_weights = model.get_weights() if state["best_val_accuracy"] >= 0 else None
    if run and state["best_epoch"] and (run / "model.keras").exists():
        best_weights = keras.models.load_model(run / "model.keras").get_weights()

    aug = _augmenter(keras) if cfg.augment else None
    train_ds = _dataset(tf, x_tr, y_tr, w_cls[y_tr].astype(np.float32), cfg.batch_size,
                        shuffle_seed=cfg.seed + state["epoch"], augment=aug, smoothing=cfg.label_smoothing)
    val_ds = _dataset(tf, x_val, y_val, np.ones(len(y_val), np.float32), 256)
    history = state["history"]
    t_start = time.time() - state.get("elapsed_s", 0.0)
    for epoch in range(state["epoch"], cfg.epochs):
        t0 = time.time()
        # shuffle=False: train_ds shuffles itself (seeded); Keras would only warn that it cannot.
        h = model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, validation_data=val_ds, verbose=0,
                      shuffle=False)
        row = {"epoch": epoch + 1, **{k: round(float(v[-1]), 5) for k, v in h.history.items()},
               "lr": round(float(model.optimizer.learning_rate.numpy()), 7), "seconds": round(time.time() - t0, 1)}
        history.append(row)
        improved = end_epoch(state, row["val_accuracy"], epoch, t_start)
        if improved:
            best_weights = model.get_weights()
        echo(epoch_line(cfg, row, improved))
        if run:
            if improved:
                model.save(run / "model.keras")
            model.save(run / "last.keras")
            save_progress(run, state, history)
        reason = stop_reason(cfg, state, t_start, row["seconds"]) or loss_plateau(cfg, state, row)
        if reason:
            echo(reason)
            break
    if keep_best and best_weights is not None:
        model.set_weights(best_weights)
    return model, history


def loss_plateau(cfg: TrainConfig, state: dict, row: dict) -> str | None:
    """With ``extra["stop_on"] == "train_loss"``: stop once the training loss has not fallen by
    ``stop_min_delta`` (relative) for ``stop_patience`` epochs ("trained until the training loss stops
    falling"); the test faces play no part. With ``stop_armed_below`` (a fraction), the rule waits until
    the loss has first fallen below that fraction of the first epoch's: a network still on its starting
    plateau (the loss at ln 7, every face one class) has not stopped falling, it has not started."""
    ex = cfg.extra or {}
    if ex.get("stop_on") != "train_loss":
        return None
    loss = float(row["loss"])
    state.setdefault("first_loss", loss)
    armed_below = ex.get("stop_armed_below")
    if armed_below is not None and not state.get("stop_armed"):
        if loss >= float(armed_below) * state["first_loss"]:
            return None
        state["stop_armed"] = True
    best = state.get("best_loss")
    if best is None or loss < best * (1.0 - float(ex.get("stop_min_delta", 0.01))):
        state["best_loss"], state["loss_epoch"] = loss, state["epoch"]
        return None
    patience = int(ex.get("stop_patience", 5))
    if state["epoch"] - state["loss_epoch"] >= patience:
        return (f"stop: the training loss ({loss:.4f}) has not fallen by {float(ex.get('stop_min_delta', 0.01)):.0%} "
                f"for {patience} epochs (best {best:.4f} at epoch {state['loss_epoch']})")
    return None


def end_epoch(state: dict, val_acc: float, epoch: int, t_start: float) -> bool:
    """Book the epoch just run in ``state`` (best score and epoch, epochs done, time); True if it is the best."""
    improved = val_acc > state["best_val_accuracy"]
    if improved:
        state["best_val_accuracy"], state["best_epoch"] = val_acc, epoch + 1
    state["epoch"] = epoch + 1
    state["elapsed_s"] = round(time.time() - t_start, 1)
    return improved


def epoch_line(cfg: TrainConfig, row: dict, improved: bool, val_name: str = "val_acc") -> str:
    """The one line printed per epoch; ``*`` marks a new best."""
    return (f"epoch {row['epoch']:3d}/{cfg.epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  {val_name} {row['val_accuracy']:.4f}{' *' if improved else '  '}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.0f}s")


def save_progress(run: Path, state: dict, history: list[dict]) -> None:
    """state.json (for --resume) and history.csv, after each epoch."""
    (run / "state.json").write_text(json.dumps(state, indent=1))
    _write_history(history, run / "history.csv")


def stop_reason(cfg: TrainConfig, state: dict, t_start: float, epoch_seconds: float) -> str | None:
    """Why training stops after this epoch (early stopping, the time budget), or None."""
    if cfg.patience and state["epoch"] - state["best_epoch"] >= cfg.patience:
        return f"early stop: validation accuracy has not improved for {cfg.patience} epochs"
    if cfg.time_budget_min and (time.time() - t_start) + epoch_seconds > cfg.time_budget_min * 60:
        return f"stopping: the next epoch would exceed the time budget of {cfg.time_budget_min:g} min"
    return None


def _write_history(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=keys)
        wr.writeheader()
        wr.writerows(history)


def evaluate_keras(model, x, y) -> dict:
    probs = predict(model, x)
    return metrics.report(y, probs.argmax(axis=1))


def write_report(rep: dict, out_dir: Path, stem: str = "report", title: str = "") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(rep, indent=1))
    plots.confusion_matrix(rep["confusion_matrix"], rep["labels"], out_dir / f"{stem.replace('report', 'confusion')}.png",
                           title)


def finish_run(model, history, x_val, y_val, cfg: TrainConfig, run: Path, data_info: dict) -> dict:
    """Write the run's report, curves and config; return the report."""
    rep = evaluate_keras(model, x_val, y_val)
    rep.update({"model": cfg.arch, "split": "validation", "data": data_info,
                "params": int(model.count_params()), "epochs_run": len(history),
                "train_seconds": round(sum(h["seconds"] for h in history), 1)})
    write_report(rep, run, "report", f"{cfg.arch}: validation accuracy {rep['accuracy']:.3f}")
    if history:
        plots.training_curves(history, run / "curves.png")
        _write_history(history, run / "history.csv")
    (run / "config.json").write_text(json.dumps({**asdict(cfg), "data": data_info}, indent=1))
    model.save(run / "model.keras")
    return rep
