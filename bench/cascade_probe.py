"""What a cascade would buy: the fast model first, the default only for faces the fast model is unsure of.

    python bench/cascade_probe.py [--first fast] [--second default]

On all faces of FER2013 ``val/`` (the device runtime and crop, as ``edgeemo evaluate``): for each confidence
threshold of the first model, and each ``--passes`` setting of the second (run on every face below the
threshold), the accuracy when the second model's answer replaces the first's, the share of faces sent on, and
the average multiply-accumulates per face (counted from both files). A measurement to decide whether a
cascade is worth building; edgeemo does not ship one (issue 28's notes). Needs the [train] extra for the data
set readers (not TensorFlow).
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
    ap.add_argument("--first", default="fast")
    ap.add_argument("--second", default="default")
    ap.add_argument("--data", default=str(SHARED / "data" / "fer2013"))
    args = ap.parse_args()
    from edgeemo.runtime import Model
    from edgeemo_convert import datasets, prepare
    from edgeemo_convert.evaluation import pick_split

    fs = pick_split(datasets.load(args.data, "fer2013"), None)
    y = np.asarray(fs.labels)

    def answers(name, passes):
        m = Model(name, 1, skip_mirror_at=None, passes=passes)
        x = prepare.to_inputs(fs, m.size, m.channels, None, m.margin, m.blur, m.fraction, m.views)
        return m.predict(x), m.macs_per_pass()["total"]

    first, first_macs = answers(args.first, 1)
    print(f"{args.first} alone: {100 * (first.argmax(1) == y).mean():.2f}% at {first_macs / 1e6:.1f} M MACs per face "
          f"({len(y):,} faces of val/)")
    second = {p: answers(args.second, p) for p in (1, 2, 6)}
    for t in (0.4, 0.5, 0.6, 0.7):
        unsure = first.max(1) < t
        for p, (probs, macs) in second.items():
            out = np.where(unsure[:, None], probs, first)
            print(f"  below {t:.1f} ({100 * unsure.mean():4.1f}% of faces) -> {args.second} at {p} passes: "
                  f"{100 * (out.argmax(1) == y).mean():.2f}%, {(first_macs + unsure.mean() * p * macs) / 1e6:.1f} M "
                  "MACs per face")


if __name__ == "__main__":
    main()
