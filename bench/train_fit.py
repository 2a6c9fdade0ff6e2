"""How closely each shipped model fits its own training faces, beside its validation faces.

    python bench/train_fit.py [--models default,fast] [--faces 6000]

One pass (no averaging), the device runtime and crop, on a fixed random sample of FER2013 ``train/`` and on
all of ``val/``. A model that answers its own training faces little better than new ones is short of
capacity (or held back by its training's regularisation), not of data: more epochs of it will not help.
Needs the [train] extra for the data set reader (not TensorFlow).
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
    ap.add_argument("--models", default="default,fast", help="shipped names or .tflite files, comma-separated")
    ap.add_argument("--fer", default=str(SHARED / "data" / "fer2013"))
    ap.add_argument("--faces", type=int, default=6000, help="training faces sampled (seed 0)")
    args = ap.parse_args()
    from edgeemo.runtime import Model
    from edgeemo_convert import datasets, prepare

    fer = datasets.load(args.fer, "fer2013")
    train = fer.split("train")
    train = train.subset(np.sort(np.random.default_rng(0).permutation(len(train.labels))[:args.faces]))
    sets = {"train/ (sample)": train, "val/": fer.split("val")}
    print("| model | " + " | ".join(f"{k} one pass" for k in sets) + " | gap |")
    print("|---|" + "---|" * (len(sets) + 1))
    for name in args.models.split(","):
        m = Model(name, 1, passes=1)
        acc = []
        for fs in sets.values():
            x = prepare.to_inputs(fs, m.size, m.channels, None, m.margin, m.blur, m.fraction)
            acc.append(100 * float((m.predict(x).argmax(1) == np.asarray(fs.labels)).mean()))
        print(f"| {m.name} {m.meta.get('version')} | " + " | ".join(f"{a:.2f}% ({len(fs.labels):,})" for a, fs in
                                                         zip(acc, sets.values())) + f" | {acc[0] - acc[1]:.2f} |")


if __name__ == "__main__":
    main()
