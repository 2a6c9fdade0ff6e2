"""How much mirror averaging buys, and what skipping the mirrored pass for confident faces costs.

    python bench/mirror_threshold.py [--model FILE.tflite] [--data ../shared/data/fer2013] [--dataset fer2013]

For a model with ``flip_average`` in its metadata, prints on the validation split (the device runtime and
crop, as ``edgeemo evaluate``): accuracy of one pass, of averaging every face with its mirror image, and of
averaging only faces whose first answer is below a confidence threshold (edgeemo.runtime.SKIP_MIRROR_AT is
chosen from this table), with the share of faces that get the second pass and how often the answer equals
full averaging. Needs the [train] extra for the data set readers (not TensorFlow itself).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a .tflite model (default: the shipped model)")
    ap.add_argument("--data", default=str(SHARED / "data" / "fer2013"))
    ap.add_argument("--dataset", default="fer2013")
    args = ap.parse_args()

    from edgeemo.runtime import SKIP_MIRROR_AT, Model
    from edgeemo_convert import datasets, prepare
    from edgeemo_convert.evaluation import pick_split

    m = Model(args.model)
    fs = pick_split(datasets.load(args.data, args.dataset), None)
    x = prepare.to_inputs(fs, m.size, m.channels, None, m.margin, m.blur, m.fraction)
    y = np.asarray(fs.labels)
    m.flip_average = False
    first = m.predict(x)
    averaged = (first + m.predict(x[:, :, ::-1])) / 2
    conf = first.max(axis=1)

    def acc(p):
        return 100 * float((p.argmax(axis=1) == y).mean())

    print(f"{m.path.name} on {len(y):,} faces of {args.data} ({fs.name}, validation split)")
    print(f"  one pass                  {acc(first):6.2f}%")
    print(f"  every face mirrored too   {acc(averaged):6.2f}%")
    print("  mirrored pass only below a confidence threshold:")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        unsure = conf < t
        p = np.where(unsure[:, None], averaged, first)
        same = 100 * float((p.argmax(axis=1) == averaged.argmax(axis=1)).mean())
        mark = "  <- edgeemo.runtime.SKIP_MIRROR_AT" if abs(t - SKIP_MIRROR_AT) < 1e-9 else ""
        print(f"    below {t:.1f}: {acc(p):6.2f}%, second pass for {100 * unsure.mean():5.1f}% of faces, "
              f"same answer as full averaging for {same:6.2f}%{mark}")


if __name__ == "__main__":
    main()
