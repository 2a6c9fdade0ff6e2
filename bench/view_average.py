"""What averaging more looks at a face buys: its mirror image, and the face cut at other fractions of its frame.

    python bench/view_average.py [--model FILE.tflite] [--data ../shared/data/fer2013] [--dataset fer2013]

On the validation split (the device runtime and crop, as ``edgeemo evaluate``), for the model's own fraction
of the face frame plus each candidate set of further fractions (``view_fractions`` in a model's metadata,
``edgeemo convert --view-fractions``), every view with its mirror image: accuracy when every face gets all
of them, and when only faces whose first answer is below a confidence threshold do
(``edgeemo.runtime.SKIP_MIRROR_AT`` is chosen from this table), with the share of such faces and the model
runs per face on average. The model's own ``view_fractions`` are marked. Needs the [train] extra for the data
set readers (not TensorFlow itself).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
CANDIDATES = [(), (0.7917, 0.9583), (0.8333, 0.9167), (0.75, 1.0), (0.7917, 0.8333, 0.9167, 0.9583)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a .tflite model (default: the shipped model)")
    ap.add_argument("--data", default=str(SHARED / "data" / "fer2013"))
    ap.add_argument("--dataset", default="fer2013")
    args = ap.parse_args()

    from edgeemo.runtime import SKIP_MIRROR_AT, SOFT_MARGIN, Model, first_weight
    from edgeemo_convert import datasets, prepare
    from edgeemo_convert.evaluation import pick_split

    m = Model(args.model)
    fs = pick_split(datasets.load(args.data, args.dataset), None)
    y = np.asarray(fs.labels)
    fractions = sorted({f for c in CANDIDATES + [m.views] for f in c})
    x = prepare.to_inputs(fs, m.size, m.channels, None, m.margin, m.blur, m.fraction, tuple(fractions))
    m.flip_average = False
    runs = {}                    # (fraction, mirrored) -> probabilities
    for k, f in enumerate([m.fraction] + fractions):
        runs[f, False] = m.predict(x[:, k])
        runs[f, True] = m.predict(x[:, k, :, ::-1])
    first = runs[m.fraction, False]
    conf = first.max(axis=1)

    def acc(p):
        return 100 * float((p.argmax(axis=1) == y).mean())

    print(f"{m.path.name} on {len(y):,} faces of {args.data} ({fs.name}, validation split); its own fraction "
          f"{m.fraction:g} of the face frame; one pass {acc(first):.2f}%")
    for views in sorted(set(CANDIDATES) | {m.views}, key=len):
        every = np.mean([runs[f, mirrored] for f in (m.fraction, *views) for mirrored in (False, True)], axis=0)
        n = 2 * (1 + len(views))
        own = "  <- the model's own" if tuple(views) == m.views else ""
        print(f"  mirror + {', '.join(f'{f:g}' for f in views) or 'no further views'} ({n} runs): "
              f"every face {acc(every):6.2f}%{own}")
        for t in (0.5, 0.6, 0.7, 0.8):
            unsure = conf < t
            mark = "  <- edgeemo.runtime.SKIP_MIRROR_AT" if abs(t - SKIP_MIRROR_AT) < 1e-9 else ""
            print(f"    only below {t:.1f}: {acc(np.where(unsure[:, None], every, first)):6.2f}%, "
                  f"{100 * unsure.mean():4.1f}% of faces, {1 + unsure.mean() * (n - 1):.2f} runs per face{mark}")

    # The averaging rule at the model's own views: the hard cut at SKIP_MIRROR_AT, and soft margins around it.
    # One output step (the int8 output's scale) up or down on the first answer's top probability, which is how
    # two CPUs' int8 kernels differ: "jump", the most any face's answer moves; "flips", faces whose label
    # differs between the two (near-ties of the final answer flip under any rule).
    every = np.mean([runs[f, mirrored] for f in (m.fraction, *m.views) for mirrored in (False, True)], axis=0)
    n = 2 * (1 + len(m.views))
    step = float(m._out["quantization"][0]) if m.quantized else 1 / 256
    top = first.argmax(axis=1)

    def rule(p1, margin):
        w = first_weight(p1.max(axis=1), SKIP_MIRROR_AT, margin)[:, None]
        return w * p1 + (1 - w) * every, w

    print(f"  averaging rule at {SKIP_MIRROR_AT} with the model's own views ({n} runs), one output step {step:.5f}:")
    for margin in (0.0, 0.02, 0.03, 0.05, 0.1):
        out, w = rule(first, margin)
        bump = np.zeros_like(first)
        bump[np.arange(len(top)), top] = step
        up, down = rule(first + bump, margin)[0], rule(first - bump, margin)[0]
        flips = int((up.argmax(axis=1) != down.argmax(axis=1)).sum())
        moved = np.abs(up - down).max(axis=1)
        runs_per_face = 1 + float((w < 1).mean()) * (n - 1)
        mark = "  <- edgeemo.runtime.SOFT_MARGIN" if abs(margin - SOFT_MARGIN) < 1e-9 else ""
        print(f"    margin {margin:.2f}: {acc(out):6.2f}%, {runs_per_face:.3f} runs per face, "
              f"under one step: jump at most {moved.max():.3f}, {int((moved > 0.05).sum())} faces move > 0.05, "
              f"{flips} labels flip{mark}")


if __name__ == "__main__":
    main()
