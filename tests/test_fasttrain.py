"""The crop-trained recipes (res40, the default model's): the augmentation's geometry, the bfloat16 training
twin that must line up weight for weight with the float model that ships, class weights, and
`edgeemo train --arch res40-small` end to end with --resume and conversion to int8."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgeemo_convert import augment

OFF = dict(scale=(1.0, 1.0), shift=0.0, rotate_deg=0.0, flip=False, brightness=0.0, contrast=(1.0, 1.0), erase_p=0.0)


def faces(n=8, size=48, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (n, size, size), dtype=np.uint8), (0, 0), 2)
    return base[..., None]


def test_identity_augmentation_is_the_whole_face_resized():
    x = faces()
    out = augment.batch(x, np.random.default_rng(0), augment.AugmentConfig(out_size=40, **OFF))
    assert out.shape == (8, 40, 40, 1) and out.dtype == np.float32
    want = np.stack([cv2.resize(f, (40, 40), interpolation=cv2.INTER_LINEAR) for f in x[..., 0]])
    assert np.abs(np.rint(out[..., 0] * 255) - want).max() <= 1.0


def test_scale_crops_the_centre_and_flip_mirrors():
    x = faces()
    half = augment.batch(x, np.random.default_rng(0), augment.AugmentConfig(out_size=24, **{**OFF, "scale": (0.5, 0.5)}))
    # a crop of half the side, shown at 24 px: the central 24x24 pixels of the 48x48 face
    assert np.abs(np.rint(half[..., 0] * 255) - x[:, 12:36, 12:36, 0]).max() <= 1.0
    rng = np.random.default_rng(3)
    cfg = augment.AugmentConfig(out_size=48, **{**OFF, "flip": True})
    flipped = np.rint(augment.batch(x, rng, cfg)[..., 0] * 255)
    mirrored = [np.abs(f - x[i, :, ::-1, 0]).max() <= 1.0 for i, f in enumerate(flipped)]
    same = [np.abs(f - x[i, :, :, 0]).max() <= 1.0 for i, f in enumerate(flipped)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)


def test_full_augmentation_is_seeded_and_in_range():
    x = faces(32)
    cfg = augment.AugmentConfig()
    a = augment.batch(x, np.random.default_rng(7), cfg)
    b = augment.batch(x, np.random.default_rng(7), cfg)
    c = augment.batch(x, np.random.default_rng(8), cfg)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.shape == (32, 40, 40, 1)


def test_eval_view_matches_the_device_crop():
    from edgeemo import crop
    x = faces(4)
    view = augment.eval_view(x, 40)
    for i in range(4):
        assert np.array_equal(view[i, :, :, 0], crop.whole_image(x[i, :, :, 0], 40))


def test_validation_sees_the_faces_as_the_device_does():
    """The trainer validates (and so keeps its best epoch by) the face framing recorded for the device: with
    `--face-fraction 0.875` the central 87.5% of each face, as `edgeemo evaluate` and the device cut it, not
    the whole face (which read 0.8 points below the device's int8 file on FER2013 val/ for one fast run)."""
    from edgeemo import crop
    from edgeemo_convert.commands import _eval_inputs
    from edgeemo_convert.train import TrainConfig
    x = faces(4)
    cfg = TrainConfig(arch="fast40-small", extra={"geometry": {"margin": 0.0, "face_fraction": 0.875}})
    seen = _eval_inputs(x, cfg)
    assert seen.shape == (4, 40, 40, 1)
    for i in range(4):
        device = crop.model_views(x[i, :, :, 0], None, crop.FaceGeometry(40, 1, 0.0, None, 0.875, ()))[0, 0]
        assert np.array_equal(seen[i], device)
    assert not np.array_equal(seen, augment.eval_view(x, 40))
    whole = TrainConfig(arch="fast40-small")
    assert np.array_equal(_eval_inputs(x, whole), augment.eval_view(x, 40))


def test_class_weights_favour_rare_classes_with_mean_one():
    from edgeemo_convert.fasttrain import class_weights
    y = np.array([0] * 40 + [1] * 4 + [3] * 80)
    w = class_weights(y, 0.3)
    assert w[y].mean() == pytest.approx(1.0)
    assert w[1] > w[0] > w[3] > 0 and w[2] == 0          # an absent class: no weight
    assert np.allclose(class_weights(y, 0.0)[y], 1.0)


@pytest.mark.train
def test_training_twin_lines_up_with_the_float_model():
    pytest.importorskip("tensorflow", reason="needs the [train] extra")
    import keras

    from edgeemo_convert import archs
    keras.utils.set_random_seed(0)
    twin = archs.build("res40-small", for_training=True)
    plain = archs.build("res40-small")
    assert [v.shape for v in twin.weights] == [v.shape for v in plain.weights]
    # tiny by hand: 3x3 conv 1->8 at 48x48, max-pool, 3x3 conv 8->16 at 24x24, dense 16->7
    assert archs.multiply_adds(archs.build("tiny")) == 48 * 48 * 9 * 8 + 24 * 24 * 9 * 8 * 16 + 16 * 7
    for name in ("res40", "res40d"):             # the default model's budget: 80 M multiply-adds, 500 KB int8
        assert archs.multiply_adds(archs.build(name)) <= 80_000_000 and archs.build(name).count_params() < 480_000
    # res40d is res40 with one more 64-channel block at 10x10: two 3x3 convs and their batch norms
    assert archs.build("res40d").count_params() - archs.build("res40").count_params() == 2 * (64 * 64 * 9 + 4 * 64)
    # res40w, the teacher, is res40d at twice the width: every channel count doubled, the gray input and
    # the 7 outputs not
    def doubled(shape):                         # conv (h, w, in, out), dense (in, out), vectors (c,)
        k = 2 if len(shape) == 4 else 0
        return shape[:k] + tuple(c if c in (1, 7) else 2 * c for c in shape[k:])
    wide, narrow = archs.build("res40w"), archs.build("res40d")
    assert [tuple(v.shape) for v in wide.weights] == [doubled(tuple(v.shape)) for v in narrow.weights]
    rng = np.random.default_rng(0)
    # non-trivial batch-norm statistics, so that a swapped mean and variance would show
    ws = [w + rng.uniform(0.1, 0.5, w.shape).astype(np.float32) if w.ndim == 1 else w for w in twin.get_weights()]
    twin.set_weights(ws)
    plain.set_weights(ws)
    x = rng.random((6, 40, 40, 1)).astype(np.float32)
    p_twin = np.asarray(twin(x, training=False), np.float32)
    p_plain = np.asarray(plain(x, training=False))
    assert p_plain.dtype == np.float32 and np.abs(p_twin - p_plain).max() < 0.03   # bfloat16 vs float32
    assert (p_twin.argmax(1) == p_plain.argmax(1)).mean() >= 5 / 6


@pytest.mark.train
def test_train_res40_small_resume_and_convert(tmp_path):
    pytest.importorskip("tensorflow", reason="needs the [train] extra")
    from typer.testing import CliRunner

    from edgeemo.cli import app
    from edgeemo.runtime import Model
    from synth_faces import write_fer_folders
    data = tmp_path / "fer"
    write_fer_folders(data, per_class=10, val_per_class=3)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--dataset", "fer2013", "--arch", "res40-small", "--optimizer", "sgd",
            "--batch-size", 16, "--label-smoothing", 0.1, "--patience", 0, "--out", out, "--resume"]
    r1 = CliRunner().invoke(app, [str(a) for a in args + ["--epochs", 1]])
    assert r1.exit_code == 0, r1.output
    assert "epoch   1/1" in r1.output and "val_acc(EMA, one look)" in r1.output     # no --flip-average
    for f in ("model.keras", "last.weights.h5", "last_ema.weights.h5", "last_opt.npz", "state.json", "history.csv"):
        assert (out / f).is_file(), f
    r2 = CliRunner().invoke(app, [str(a) for a in args + ["--epochs", 2]])
    assert r2.exit_code == 0, r2.output
    assert "resuming" in r2.output and "epoch   2/2" in r2.output and "epoch   1/" not in r2.output
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    tfl = tmp_path / "m.tflite"
    convert = ["convert", out / "model.keras", "--calib", data, "--dataset", "fer2013", "--out", tfl, "--force",
               "--face-fraction", 0.875, "--flip-average"]
    bad = CliRunner().invoke(app, [str(a) for a in convert + ["--view-fractions", "0.8,1.2"]])
    assert bad.exit_code != 0 and "--view-fractions 1.2" in bad.output and not tfl.exists()
    r3 = CliRunner().invoke(app, [str(a) for a in convert + ["--view-fractions", "0.79,0.96"]])
    assert r3.exit_code == 0, r3.output
    m = Model(tfl)
    assert m.size == 40 and m.quantized and m.views == (0.79, 0.96) and m.flip_average
    assert m.predict(np.zeros((2, 40, 40), np.uint8)).shape == (2, 7)
    info = CliRunner().invoke(app, ["info", str(tfl)]).stdout
    assert "also classified at 0.79, 0.96 of its frame, each mirrored too" in info


def test_epoch_bookkeeping_and_stop_reasons():
    """Shared by both trainers: the best epoch, early stopping and the time budget."""
    import time

    from edgeemo_convert.train import TrainConfig, end_epoch, stop_reason
    state = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0}
    t0 = time.time()
    assert end_epoch(state, 0.5, 0, t0) and state["best_epoch"] == 1
    assert not end_epoch(state, 0.4, 1, t0) and state["epoch"] == 2 and state["best_val_accuracy"] == 0.5
    patient = TrainConfig(patience=2)
    assert stop_reason(patient, state, t0, 1.0) is None
    end_epoch(state, 0.45, 2, t0)
    assert "has not improved for 2 epochs" in stop_reason(patient, state, t0, 1.0)
    assert "time budget" in stop_reason(TrainConfig(patience=0, time_budget_min=0.01), state, t0 - 1.0, 1.0)
    assert stop_reason(TrainConfig(patience=0), state, t0, 1.0) is None


@pytest.mark.train
def test_distillation_learns_the_teachers_answers(tmp_path):
    """`--teacher`: the student learns the teacher's softened answers. A teacher that says "happy" to every
    face, with all of the loss given to it (--kd-alpha 1), makes a student that says "happy" too; two
    teachers, one saying "happy" and one "sad", make a student that splits its answer between the two.
    `--init`: a student started from a model's weights, with almost no learning rate, answers as it does."""
    pytest.importorskip("tensorflow", reason="needs the [train] extra")
    import keras
    from typer.testing import CliRunner

    from edgeemo.cli import app
    from edgeemo.labels import LABELS
    from edgeemo_convert import archs
    from synth_faces import write_fer_folders
    data = tmp_path / "fer"
    write_fer_folders(data, per_class=10, val_per_class=3)
    for label in ("happy", "sad"):
        teacher = archs.build("res40-small")
        last = teacher.layers[-1]
        kernel, bias = last.get_weights()
        bias[:] = -8.0
        bias[LABELS.index(label)] = 8.0
        last.set_weights([kernel * 0.0, bias])
        teacher.save(tmp_path / f"{label}.keras")
    common = ["train", "--data", data, "--dataset", "fer2013", "--arch", "res40-small", "--optimizer", "sgd",
              "--batch-size", 16, "--patience", 0, "--epochs", 4, "--seed", 1]
    faces = np.random.default_rng(0).random((20, 40, 40, 1)).astype(np.float32)

    def answers(run):
        student = keras.models.load_model(tmp_path / run / "model.keras")
        return np.asarray(student(faces, training=False))

    def train(*options):
        res = CliRunner().invoke(app, [str(a) for a in common + list(options)])
        assert res.exit_code == 0, res.output
        return res.output

    bad = CliRunner().invoke(app, [str(a) for a in common + ["--teacher", tmp_path / "nope.keras", "--out", tmp_path / "x"]])
    assert bad.exit_code != 0 and "nope.keras: no such model file" in bad.output
    assert "distilling from" in train("--teacher", tmp_path / "happy.keras", "--kd-alpha", 1.0, "--out", tmp_path / "student")
    cfg = json.loads((tmp_path / "student" / "config.json").read_text())
    assert cfg["extra"]["teacher"][0].endswith("happy.keras") and cfg["extra"]["kd_alpha"] == 1.0
    said = answers("student").argmax(1)
    assert (said == LABELS.index("happy")).mean() >= 0.9, said

    out = train("--teacher", tmp_path / "happy.keras", "--teacher", tmp_path / "sad.keras", "--kd-alpha", 1.0,
                "--out", tmp_path / "pair")
    assert "the 2 teachers' averaged answers" in out
    p = answers("pair")
    pair = {LABELS.index("happy"), LABELS.index("sad")}
    assert set(np.argsort(p.mean(axis=0))[-2:]) == pair and set(p.argmax(1)) <= pair, p

    assert "starting from the weights of" in train("--init", tmp_path / "sad.keras", "--lr", 1e-6, "--epochs", 1,
                                                   "--out", tmp_path / "started")
    assert (answers("started").argmax(1) == LABELS.index("sad")).all()
    wrong = archs.build("res40", input_size=40)
    wrong.save(tmp_path / "res40.keras")
    bad = CliRunner().invoke(app, [str(a) for a in common + ["--init", tmp_path / "res40.keras", "--out", tmp_path / "y"]])
    assert bad.exit_code != 0 and "do not fit the res40-small recipe" in bad.output


@pytest.mark.train
def test_weight_decay_and_erasing_options(tmp_path):
    """`--weight-decay` and `--erase-p` reach the trainer of the crop-trained recipes: recorded in the run's
    config.json, and a strong decay leaves smaller kernels than none from the same seed; out-of-range values,
    recipes that do not take them and `--kd-mirror` without a teacher are refused with the option named."""
    pytest.importorskip("tensorflow", reason="needs the [train] extra")
    import keras
    from typer.testing import CliRunner

    from edgeemo.cli import app
    from synth_faces import write_fer_folders
    data = tmp_path / "fer"
    write_fer_folders(data, per_class=10, val_per_class=3)
    common = ["train", "--data", data, "--dataset", "fer2013", "--arch", "res40-small", "--optimizer", "sgd",
              "--batch-size", 16, "--patience", 0, "--epochs", 6, "--seed", 1, "--lr", 0.05]

    def run(*options):
        return CliRunner().invoke(app, [str(a) for a in common + list(options)])

    norms = {}
    for decay in (0.0, 0.1):
        out = tmp_path / f"wd{decay}"
        flip = ["--flip-average"] if decay else []         # validated as the device runs it: mirrored or not
        res = run("--weight-decay", decay, "--erase-p", 0.0, "--out", out, *flip)
        assert res.exit_code == 0, res.output
        assert f"val_acc(EMA, {'mirrored' if flip else 'one look'})" in res.output
        extra = json.loads((out / "config.json").read_text())["extra"]
        assert extra["weight_decay"] == decay and extra["erase_p"] == 0.0
        model = keras.models.load_model(out / "model.keras")
        norms[decay] = sum(float(np.square(w).sum()) for w in model.get_weights() if w.ndim == 4)
    assert norms[0.1] < 0.95 * norms[0.0], norms
    bad = run("--erase-p", 1.5, "--out", tmp_path / "x")
    assert bad.exit_code != 0 and "--erase-p" in bad.output and "must be 0 to 1" in bad.output
    bad = run("--kd-mirror", "--out", tmp_path / "z")
    assert bad.exit_code != 0 and "--kd-mirror" in bad.output and "give --teacher too" in bad.output
    common[common.index("res40-small")] = "tiny"
    bad = run("--weight-decay", 1e-4, "--out", tmp_path / "y")
    assert bad.exit_code != 0 and "--weight-decay" in bad.output and "not tiny" in bad.output


def test_the_teachers_mirrored_answers_are_averaged_in():
    """`--kd-mirror`: each teacher answers the face and its mirror image, and the answers are averaged. A
    "teacher" that says happy when the left half of the face is the brighter and sad otherwise says each
    with certainty to one look, and half and half once the mirror image is averaged in."""
    tf = pytest.importorskip("tensorflow", reason="needs the [train] extra")
    from edgeemo.labels import LABELS
    from edgeemo_convert.fasttrain import teacher_answers
    happy, sad = LABELS.index("happy"), LABELS.index("sad")

    def sided(x, training=False):
        left = tf.reduce_mean(x[:, :, :20], axis=[1, 2, 3]) > tf.reduce_mean(x[:, :, 20:], axis=[1, 2, 3])
        return tf.one_hot(tf.where(left, happy, sad), len(LABELS))

    x = np.zeros((4, 40, 40, 1), np.float32)
    x[:2, :, :20] = 1.0            # two faces bright on the left, two on the right
    x[2:, :, 20:] = 1.0
    one = np.asarray(teacher_answers([sided], tf.constant(x)))
    assert list(one.argmax(1)) == [happy, happy, sad, sad] and np.allclose(one.max(1), 1.0)
    both = np.asarray(teacher_answers([sided], tf.constant(x), mirror=True))
    assert np.allclose(both[:, happy], 0.5) and np.allclose(both[:, sad], 0.5) and np.allclose(both.sum(1), 1.0)
    two = np.asarray(teacher_answers([sided, sided], tf.constant(x)))
    assert np.allclose(two, one)
