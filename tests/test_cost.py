"""Cost: the MAC counter against a model whose multiply-accumulates are known by hand, the CPU's int8
instructions read from cpuinfo texts of the machines the product is for, and the averaging knob
(``--passes``) in the runtime, the CLI and the config file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeemo import cost
from edgeemo.cli import app
from edgeemo.errors import SetupError
from edgeemo.runtime import MAX_PASSES, Model, default_model_path

# Hand count for the model below (8x8 gray input, "same" padding, batch 1):
#   Conv2D 3x3, 1 -> 4 channels:      8*8 outputs * 4 channels * (3*3*1)  = 2,304
#   DepthwiseConv2D 3x3 on 4:         8*8 * 4 * (3*3)                     = 2,304
#   Conv2D 1x1, 4 -> 6:               8*8 * 6 * (1*1*4)                   = 1,536
#   Conv2D 3x3 stride 2, 6 -> 5:      4*4 * 5 * (3*3*6)                   = 4,320
#   Dense 80 -> 7 (after Flatten):    7 * 80                              =   560
HAND = {"CONV_2D": 2304 + 1536 + 4320, "DEPTHWISE_CONV_2D": 2304, "FULLY_CONNECTED": 560}


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory):
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    keras = tf.keras
    inp = keras.Input((8, 8, 1), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inp, out)
    path = tmp_path_factory.mktemp("hand") / "hand.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _interpreter(path):
    from edgeemo.runtime import interpreter_class
    _, cls = interpreter_class()
    interp = cls(model_path=str(path))
    interp.allocate_tensors()
    return interp


def test_mac_counter_matches_a_hand_count(hand_model):
    macs = cost.count_macs(_interpreter(hand_model))
    assert {k: macs[k] for k in HAND} == HAND
    assert macs["total"] == sum(HAND.values()) == 11024


def test_mac_counter_agrees_with_the_training_side_count_on_the_shipped_model():
    # archs.multiply_adds counted the Keras model when it was converted (the conversion report beside it);
    # the file's own graph must give the same figure.
    report = json.loads((default_model_path().with_suffix("").with_suffix(".report.json")).read_text())
    assert Model().macs_per_pass()["total"] == report["multiply_adds"] == 71_207_296


# /proc/cpuinfo excerpts (the lines read) of the CPUs the product meets.
X86_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
X86_AVX_VNNI = "flags\t\t: fpu sse2 avx2 avx_vnni\n"
X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 ssse3 avx avx2 fma\n"
PI4_ARM64 = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
             "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n")
PI4_ARMHF = "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n"
PI5 = ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
       "dcpop asimddp\nCPU part\t: 0xd0b\n")


@pytest.mark.parametrize("text, found", [(X86_VNNI, ["avx512_vnni"]), (X86_AVX_VNNI, ["avx_vnni"]),
                                         (X86_AVX2, []), (PI4_ARM64, []), (PI4_ARMHF, []), (PI5, ["asimddp"]),
                                         ("", [])])
def test_int8_dot_product_from_cpuinfo(text, found):
    assert cost.int8_dot_product(text) == found
    note = cost.cpu_note(text)
    assert ("understate" in note) == bool(found) and ("no int8 dot product" in note) == (not found)


def test_derived_milliseconds_use_the_no_vnni_rate():
    # 71.2 M MACs at 39 GMAC/s: the 1.83 ms per pass measured on an AVX2-only x86 core
    assert cost.derived_ms(71_207_296) == pytest.approx(1.826, abs=0.001)


# --- the averaging knob -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces(data_dir):
    """60 real val/ faces, cut as the device cuts them (every view), and their labels."""
    from edgeemo_convert import datasets, prepare
    from edgeemo_convert.evaluation import pick_split
    fs = pick_split(datasets.load(data_dir / "fer2013", "fer2013"), None)
    fs = fs.subset(prepare.fixed_subset(len(fs), 60))
    m = Model()
    return prepare.to_inputs(fs, m.size, m.channels, None, m.margin, m.blur, m.fraction, m.views)


@pytest.mark.parametrize("passes", range(1, MAX_PASSES + 1))
def test_passes_bound_the_runs_per_face(faces, passes):
    every = Model(skip_mirror_at=None, passes=passes)
    every.predict(faces)
    assert every.invocations == passes * len(faces)            # each face gets exactly that many
    unsure = Model(passes=passes)
    unsure.predict(faces)
    assert len(faces) <= unsure.invocations <= passes * len(faces)


def test_passes_take_the_views_in_order(faces):
    """passes=1 is the first view alone; passes=2 averages it with its mirror image; passes=3 adds the first
    further view."""
    one = Model(passes=1).predict(faces)
    ref = Model(passes=1)
    assert np.array_equal(one, ref.predict(faces[:, 0]))
    two = Model(skip_mirror_at=None, passes=2).predict(faces)
    mirrored = ref.predict(faces[:, 0, :, ::-1])
    assert np.allclose(two, (one + mirrored) / 2, atol=1e-6)
    three = Model(skip_mirror_at=None, passes=3).predict(faces)
    further = ref.predict(faces[:, 1])
    assert np.allclose(three, (one + mirrored + further) / 3, atol=1e-6)
    assert Model(passes=3).pass_order() == [(0, False), (0, True), (1, False)]


@pytest.mark.parametrize("bad", [0, 7, -1, 2.5, True])
def test_passes_out_of_range_is_a_setup_error(bad):
    with pytest.raises(SetupError, match="passes"):
        Model(passes=bad)


def test_classify_passes_option(data_dir, tmp_path):
    photo = data_dir / "fer2013" / "val" / "happy" / "PublicTest_10130075.jpg"
    run = CliRunner().invoke(app, ["classify", str(photo), "--detector", "none", "--passes", "1"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout.splitlines()[-1])["faces"][0]["label"] == "happy"
    bad = CliRunner().invoke(app, ["classify", str(photo), "--detector", "none", "--passes", "9"])
    assert bad.exit_code == 2 and "--passes 9" in bad.output and "from 1" in bad.output


def test_passes_from_the_config_file(tmp_path):
    from edgeemo import config
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_text(f'inbox = "{inbox}"\npasses = 2\nmodel = "default"\n')
    s = config.resolve({}, cfg)
    assert s.passes == 2 and s.model == "default"
    opts = s.classifier_options()
    assert opts.passes == 2
    from edgeemo.pipeline import Classifier
    assert Classifier(opts).model.max_passes() == 2
    assert config.resolve({"passes": 1}, cfg).passes == 1            # the command line wins
    cfg.write_text(f'inbox = "{inbox}"\npasses = 0\n')
    with pytest.raises(SetupError, match=r"passes = 0 is not valid; expected an integer from 1 to 6"):
        config.resolve({}, cfg)


def test_info_prints_the_cost():
    out = CliRunner().invoke(app, ["info"]).stdout
    assert "71.2 M multiply-accumulates per pass (71,207,296: CONV_2D 71,206,400, FULLY_CONNECTED 896)" in out
    assert "up to 6 per face" in out and "on average on FER2013 val/" in out
    assert "this cpu" in out
    one = CliRunner().invoke(app, ["info", "--passes", "1", "--json"])
    data = json.loads(one.stdout)
    assert data["cost"]["passes"] == 1 and data["cost"]["macs_per_face"] == 71_207_296


def test_watch_passes_option_is_checked(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    run = CliRunner().invoke(app, ["watch", str(inbox), "--passes", "0"])
    assert run.exit_code == 2 and "--passes 0: not valid; expected an integer from 1 to 6" in run.output


class _Nudged(Model):
    """The shipped model with its first pass's top probability moved by ``nudge`` (one int8 output step is how
    two CPUs' int8 kernels differ), the further passes untouched."""

    nudge = 0.0

    def predict(self, faces, more_views=None):
        self._first = True
        return super().predict(faces, more_views)

    def _run(self, x):
        out = super()._run(x)
        if self._first:
            self._first = False
            out[np.arange(len(out)), out.argmax(axis=1)] += self.nudge
        return out


def test_one_int8_step_on_the_first_pass_moves_the_answer_by_a_hair(data_dir):
    """The averaging rule is soft around SKIP_MIRROR_AT: faces whose first answer sits at the threshold, nudged
    one output step up and down, keep their label and move by about a step; under the hard cut (soft_margin 0)
    the same nudge switches between one look and six and moves some of them by far more."""
    from edgeemo.runtime import SKIP_MIRROR_AT, SOFT_MARGIN
    from edgeemo_convert import datasets, prepare
    from edgeemo_convert.evaluation import pick_split
    fs = pick_split(datasets.load(data_dir / "fer2013", "fer2013"), None)
    fs = fs.subset(prepare.fixed_subset(len(fs), 1200))
    m = Model()
    views = prepare.to_inputs(fs, m.size, m.channels, None, m.margin, m.blur, m.fraction, m.views)
    step = float(m._out["quantization"][0])
    conf = Model(passes=1).predict(views).max(axis=1)
    near = views[np.abs(conf - SKIP_MIRROR_AT) <= 1.5 * step]      # the faces at the threshold
    assert len(near) >= 5, len(near)                                 # measured: 10 of 1,200

    def answers(margin, nudge):
        model = _Nudged(soft_margin=margin)
        model.nudge = nudge
        return model.predict(near)

    up, down = answers(SOFT_MARGIN, step), answers(SOFT_MARGIN, -step)
    moved = np.abs(up - down).max(axis=1)
    # the blend weight moves by 2 steps / (2 * margin), the first answer by 2 steps
    assert moved.max() <= 2 * step * (1 + 1 / (2 * SOFT_MARGIN)), moved.max()
    assert np.array_equal(up.argmax(axis=1), down.argmax(axis=1))
    hard = np.abs(answers(0, step) - answers(0, -step)).max(axis=1)
    assert hard.max() > 0.1 and hard.max() > 3 * moved.max(), (hard.max(), moved.max())   # measured: 0.255, 0.037
