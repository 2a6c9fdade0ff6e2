"""The trainer of the crop-trained recipes (``res40``): fast on a 2-core CPU, resumable, one line per epoch.

What makes it fast and what makes it good, measured on FER2013 on this kind of machine:
- the decoded uint8 faces stay in memory; a background thread cuts each batch with one affine warp per face
  (``augment.batch``) while TensorFlow trains on the previous one; the train step is one ``tf.function``;
- SGD with Nesterov momentum, linear warm-up then cosine decay, weight decay, label smoothing, class weights
  (a gentle power of the inverse frequency, for disgust);
- an exponential moving average (EMA) of the weights, which is what is validated and saved;
- optionally one or more teachers (``--teacher``, trained Keras models, e.g. earlier runs' ``model.keras``;
  several are averaged): the student also learns their softened answers on the same augmented batch
  (knowledge distillation, ``kd_alpha`` of the loss at temperature ``kd_temperature``), which FER2013's noisy
  labels reward;
- optionally a start from a trained model of the same recipe (``--init``: a run's model.keras, or an int8
  .tflite such as the shipped default model) instead of random weights, for a second, shorter schedule
  (distilling an ensemble of runs into one of them, or fine-tuning the default model on your own faces).

Validation (every epoch) scores the EMA weights on the validation faces framed as the device will frame
them (``--face-fraction``) and resized to the input size, averaged with their mirror image where the device
will average them (``--flip-average``), one look otherwise; the best epoch is kept (``model.keras``).
The run folder holds ``last.weights.h5``/``last_ema.weights.h5``/``last_opt.npz`` + ``state.json`` for
``--resume`` and ``history.csv``.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import numpy as np

from edgeemo.labels import LABELS

from . import archs, augment
from .errors import LayersDoNotFit, ModelFileError

DEFAULTS = {"weight_decay": 5e-4, "warmup_epochs": 2, "ema_decay": 0.999, "class_weight_power": 0.3,
            "lr": 0.05, "batch_size": 128, "kd_alpha": 0.7, "kd_temperature": 2.0,
            "erase_p": augment.AugmentConfig.erase_p}


def load_trained(path, option: str):
    """The Keras model saved at ``path`` (a run folder's model.keras), or a clear exit naming ``option``."""
    import keras
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{option} {path}: no such model file (give a run folder's model.keras)")
    try:
        return keras.models.load_model(path)
    except Exception as exc:   # noqa: BLE001 - any unreadable file gets the same clear message
        raise ModelFileError(f"{option} {path}: not a Keras model this version can load ({exc})") from exc


def load_start(path, arch: str, x_tr: np.ndarray, size: int, seed: int):
    """The model ``--init`` starts from: a run folder's model.keras, or an int8 .tflite file of the same
    recipe (the shipped default model, say), turned back into a float model (``recover``) with its batch
    normalisation statistics measured on 2,000 of the training faces."""
    if Path(path).suffix.lower() != ".tflite":
        return load_trained(path, "--init")
    from .recover import float_model
    pick = np.sort(np.random.default_rng(seed).permutation(len(x_tr))[:2000])
    return float_model(path, arch, augment.eval_view(x_tr[pick], size))


def load_teacher(path, size: int, channels: int, x_tr: np.ndarray, seed: int):
    """The teacher for distillation: a run folder's model.keras, or an int8 .tflite of a res40-type recipe
    (``default``: the shipped default model) turned back into its float model, run as its bfloat16
    training twin (about twice as fast on this CPU) when it is a crop-trained recipe whose weights line up
    with one."""
    if Path(path).suffix.lower() == ".tflite":
        teacher = _recovered(path, size, x_tr, seed)
    else:
        teacher = load_trained(path, "--teacher")
    if tuple(teacher.input_shape[1:]) != (size, size, channels):
        raise ModelFileError(f"--teacher {path}: it takes {teacher.input_shape[1:]} inputs, the student "
                              f"{(size, size, channels)}; train the student at the teacher's input size")
    shapes = [tuple(v.shape) for v in teacher.weights]
    for name in sorted(archs.CROP_TRAINED):
        twin = archs.build(name, teacher.output_shape[-1], size, channels, for_training=True)
        if [tuple(v.shape) for v in twin.weights] == shapes:
            twin.set_weights(teacher.get_weights())
            return twin
    return teacher


def _recovered(path, size: int, x_tr: np.ndarray, seed: int):
    """The float model of an int8 file of whichever res40-type recipe its layers fit."""
    from .recover import float_model
    pick = np.sort(np.random.default_rng(seed).permutation(len(x_tr))[:2000])
    faces = augment.eval_view(x_tr[pick], size)
    for name in sorted(archs.RES40):
        try:
            return float_model(path, name, faces, option="--teacher")
        except LayersDoNotFit:
            pass
    raise ModelFileError(f"--teacher {path}: its layers fit none of the res40-type recipes "
                          f"({', '.join(sorted(archs.RES40))}); give a run folder's model.keras instead")


def teacher_answers(teachers, xb, mirror: bool = False):
    """The teachers' averaged probabilities for the batch ``xb`` (N, H, W, C), float32; with ``mirror``
    each teacher also answers the mirror image of every face, averaged in, as the device's averaging does
    for a face it is unsure of: a steadier target than one look."""
    import tensorflow as tf
    looks = [xb, tf.reverse(xb, axis=[2])] if mirror else [xb]
    answers = [tf.cast(t(x, training=False), tf.float32) for t in teachers for x in looks]
    return tf.add_n(answers) / float(len(answers))


def class_weights(labels: np.ndarray, power: float, n: int = len(LABELS)) -> np.ndarray:
    """(total / (classes * count)) ** power, normalised so the mean weight per training face is 1."""
    counts = np.bincount(labels, minlength=n).astype(float)
    w = np.zeros(n)
    present = counts > 0
    w[present] = (counts[present].sum() / (present.sum() * counts[present])) ** power
    w /= (w[labels]).mean()
    return w


def _batches(x, y, w, batch_size, seed, cfg, stop):
    """Yield (faces, one-hot-free labels, weights) for one epoch, produced in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=6)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))

    def work():
        for i in range(0, len(order) - batch_size + 1, batch_size):   # drop the last partial batch
            if stop.is_set():
                break
            idx = np.sort(order[i:i + batch_size])
            q.put((augment.batch(x[idx], rng, cfg), y[idx], w[idx]))
        q.put(None)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while (item := q.get()) is not None:
        yield item
    t.join()


def fit_fast(x_tr, y_tr, x_val, y_val, cfg, run_dir=None, resume=False, echo=print, keep_best=True):
    """Train ``cfg.arch`` (a crop-trained recipe) on uint8 faces at the source size; ``x_val`` is already at
    the model's input size. Returns (Keras model with the best EMA weights, history)."""
    from .train import _tf, end_epoch, epoch_line, predict, save_progress, stop_reason
    tf, keras = _tf()
    keras.utils.set_random_seed(cfg.seed)
    run = Path(run_dir) if run_dir else None
    if run:
        run.mkdir(parents=True, exist_ok=True)
    ex = {**DEFAULTS, **(cfg.extra or {})}
    batch_size = cfg.batch_size if cfg.batch_size else ex["batch_size"]
    base_lr = cfg.lr if cfg.lr is not None else ex["lr"]
    size = x_val.shape[1]
    aug_cfg = augment.AugmentConfig(out_size=size, erase_p=float(ex["erase_p"]))
    if not cfg.augment:
        aug_cfg = augment.AugmentConfig(out_size=size, scale=(1.0, 1.0), shift=0.0, rotate_deg=0.0, flip=False,
                                        brightness=0.0, contrast=(1.0, 1.0), erase_p=0.0)
    n_cls = len(LABELS)
    w_cls = class_weights(y_tr, ex["class_weight_power"]) if cfg.class_weights else np.ones(n_cls)
    w_tr = w_cls[y_tr].astype(np.float32)
    steps = len(x_tr) // batch_size
    total = steps * cfg.epochs
    warm = min(total // 4, steps * int(ex["warmup_epochs"]))

    model = archs.build(cfg.arch, n_cls, size, x_tr.shape[3], for_training=True)
    ema = archs.build(cfg.arch, n_cls, size, x_tr.shape[3])       # float32, plain Keras layers
    if [tuple(v.shape) for v in ema.weights] != [tuple(v.shape) for v in model.weights]:
        raise RuntimeError(f"{cfg.arch}: the training twin's weights do not line up with the model's")
    ema.set_weights(model.get_weights())
    ema_vars = [tf.Variable(w, trainable=False) for w in model.get_weights()]
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    opt = keras.optimizers.SGD(learning_rate=base_lr, momentum=0.9, nesterov=True)
    decay_vars = [v for v in model.trainable_variables if len(v.shape) > 1]     # kernels, not BN or biases
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing,
                                                   reduction="sum_over_batch_size")
    paths = ex.get("teacher") or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    teachers = [load_teacher(p, size, x_tr.shape[3], x_tr, cfg.seed) for p in paths]
    kd_a, kd_t = float(ex["kd_alpha"]), float(ex["kd_temperature"])
    kd_mirror = bool(ex.get("kd_mirror", False))
    mirror_val = bool((ex.get("geometry") or {}).get("flip_average", False))
    if teachers:
        whose = "the teacher's" if len(teachers) == 1 else f"the {len(teachers)} teachers' averaged"
        how = ", each face averaged with its mirror image," if kd_mirror else ""
        echo(f"distilling from {' + '.join(paths)}: {kd_a:g} of the loss is {whose} answers{how} at "
             f"temperature {kd_t:g}")

    def soften(p):
        return tf.nn.softmax(tf.math.log(tf.clip_by_value(tf.cast(p, tf.float32), 1e-7, 1.0)) / kd_t)

    def lr_at(step):
        step = tf.cast(step, tf.float32)
        warm_lr = base_lr * (step + 1.0) / float(max(warm, 1))
        prog = tf.clip_by_value((step - warm) / float(max(total - warm, 1)), 0.0, 1.0)
        cos_lr = base_lr * (0.005 + 0.995 * 0.5 * (1.0 + tf.cos(np.pi * prog)))
        return tf.where(step < warm, warm_lr, cos_lr)

    @tf.function(reduce_retracing=True)
    def train_step(xb, yb, wb):
        lr = lr_at(step_var)
        opt.learning_rate.assign(lr)
        with tf.GradientTape() as tape:
            p = model(xb, training=True)
            loss = loss_fn(tf.one_hot(yb, n_cls), p, sample_weight=wb)
            if teachers:
                q = soften(teacher_answers(teachers, xb, kd_mirror))
                log_ps = tf.math.log(tf.clip_by_value(soften(p), 1e-7, 1.0))
                kl = tf.reduce_sum(q * (tf.math.log(tf.clip_by_value(q, 1e-7, 1.0)) - log_ps), axis=1)
                loss = (1.0 - kd_a) * loss + kd_a * kd_t * kd_t * tf.reduce_mean(kl * wb)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        for v in decay_vars:          # decoupled weight decay, scaled by the learning rate (SGDW)
            v.assign_sub(lr * ex["weight_decay"] * v)
        d = tf.minimum(ex["ema_decay"], (1.0 + tf.cast(step_var, tf.float32)) / (10.0 + tf.cast(step_var, tf.float32)))
        for e, m in zip(ema_vars, model.weights):
            e.assign(d * e + (1.0 - d) * tf.cast(m, tf.float32))
        step_var.assign_add(1)
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(p, 1, output_type=tf.int32), tf.cast(yb, tf.int32)), tf.float32))
        return loss, acc

    state = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": [], "elapsed_s": 0.0}
    if resume and run and (run / "state.json").exists() and (run / "last.weights.h5").exists():
        state = json.loads((run / "state.json").read_text())
        model.load_weights(run / "last.weights.h5")
        ema.load_weights(run / "last_ema.weights.h5")
        for e, w in zip(ema_vars, ema.get_weights()):
            e.assign(w)
        opt.build(model.trainable_variables)
        saved = np.load(run / "last_opt.npz")
        for v, k in zip(opt.variables, sorted(saved.files, key=int)):
            v.assign(saved[k])
        step_var.assign(state["epoch"] * steps)
        echo(f"resuming {run} at epoch {state['epoch'] + 1} (best val accuracy so far "
             f"{state['best_val_accuracy']:.4f} at epoch {state['best_epoch']})")
    else:
        if resume:
            echo(f"nothing to resume in {run}; starting afresh")
        if ex.get("init"):
            start = load_start(ex["init"], cfg.arch, x_tr, size, cfg.seed)
            if [tuple(v.shape) for v in start.weights] != [tuple(v.shape) for v in model.weights]:
                raise ModelFileError(f"--init {ex['init']}: its weights do not fit the {cfg.arch} recipe "
                                      f"(give a model.keras trained with --arch {cfg.arch})")
            weights = start.get_weights()
            model.set_weights(weights)
            ema.set_weights(weights)
            for e, w in zip(ema_vars, weights):
                e.assign(w)
            echo(f"starting from the weights of {ex['init']}")

    history = state["history"]
    t_start = time.time() - state.get("elapsed_s", 0.0)
    y_val_oh = np.eye(n_cls, dtype=np.float32)[y_val]
    best_weights = None
    if run and state["best_epoch"] and (run / "model.keras").exists():
        best_weights = keras.models.load_model(run / "model.keras").get_weights()
    for epoch in range(state["epoch"], cfg.epochs):
        t0 = time.time()
        stop = threading.Event()
        losses, accs = [], []
        for xb, yb, wb in _batches(x_tr, y_tr, w_tr, batch_size, cfg.seed * 1000 + epoch, aug_cfg, stop):
            loss, acc = train_step(xb, yb, wb)
            losses.append(float(loss))
            accs.append(float(acc))
        t_train = time.time() - t0
        ema.set_weights([v.numpy() for v in ema_vars])
        probs = predict(ema, x_val)
        if mirror_val:      # as the device will run it: averaged with the mirror image where --flip-average
            probs = (probs + predict(ema, x_val[:, :, ::-1])) / 2.0
        val_acc = float((probs.argmax(1) == y_val).mean())
        val_loss = float(-np.mean(np.sum(y_val_oh * np.log(np.clip(probs, 1e-7, 1.0)), axis=1)))
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5), "accuracy": round(float(np.mean(accs)), 5),
               "val_loss": round(val_loss, 5), "val_accuracy": round(val_acc, 5),
               "lr": round(float(lr_at(step_var - 1)), 7), "seconds": round(time.time() - t0, 1),
               "train_seconds": round(t_train, 1)}
        history.append(row)
        improved = end_epoch(state, val_acc, epoch, t_start)
        if improved:
            best_weights = ema.get_weights()
        echo(epoch_line(cfg, row, improved, f"val_acc(EMA, {'mirrored' if mirror_val else 'one look'})"))
        if run:
            if improved:
                ema.save(run / "model.keras")
            model.save_weights(run / "last.weights.h5")
            ema.save_weights(run / "last_ema.weights.h5")
            np.savez(run / "last_opt.npz", **{str(i): v.numpy() for i, v in enumerate(opt.variables)})
            save_progress(run, state, history)
        reason = stop_reason(cfg, state, t_start, row["seconds"])
        if reason:
            echo(reason)
            break
    if not keep_best or best_weights is None:
        best_weights = ema.get_weights()
    ema.set_weights(best_weights)
    return ema, history
