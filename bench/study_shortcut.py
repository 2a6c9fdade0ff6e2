"""Why the JAFFE split without near-duplicates scores below leave-one-subject-out: the identity shortcut.

    python bench/study_shortcut.py [--data ../shared/data/jaffe] [--seeds 2] [--runs seed-basic:adam,seed-best:adam]

The split without near-duplicates (`edgeemo study`'s middle column) keeps each woman's takes of one
expression on one side: every test photo shows an expression the model never saw *that woman* make, while
it did see her other expressions. A model that recognises the woman rather than the expression answers
with one of the expressions it saw her make, which is then wrong by construction. This trains each run as
the faithful study does (whole photo, 128x128 RGB, the optimizer's own rate, until the training loss stops
falling) on the study's split without near-duplicates and prints, per split: accuracy, and the share of
test answers that are an expression the model saw for that woman in training, beside that share if the
answers were blind to who she is (her trained expressions as a share of the 7).
No picture is written anywhere.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "jaffe"))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--runs", default="seed-basic:adam,seed-best:adam")
    args = ap.parse_args()
    from edgeemo_convert import commands, prepare, study
    from edgeemo_convert.train import fit, predict

    opts = study.StudyOptions()
    fs, x = commands.load_inputs(args.data, "jaffe", opts.input_size, 3, "none", None)
    groups = list(zip(fs.subjects, fs.labels.tolist()))
    for arch, optimizer in study.parse_runs(args.runs):
        for seed in range(args.seeds):
            tr, te = prepare.grouped_count_split(fs.labels, groups, opts.test_images, seed)
            cfg = opts.train_config(arch, optimizer, seed, opts.epochs)
            model, history = fit(x[tr], fs.labels[tr], x[te], fs.labels[te], cfg, None, False,
                                 echo=lambda s: None, keep_best=False)
            pred = predict(model, x[te]).argmax(axis=1)
            seen: dict[str, set] = {}
            for i in tr:
                seen.setdefault(fs.subjects[i], set()).add(int(fs.labels[i]))
            in_seen = np.mean([int(p) in seen[fs.subjects[i]] for i, p in zip(te, pred)])
            blind = np.mean([len(seen[fs.subjects[i]]) / 7 for i in te])
            print(f"{arch} + {optimizer}, split without near-duplicates, seed {seed}: accuracy "
                  f"{np.mean(pred == fs.labels[te]):.1%} on {len(te)} photos ({len(history)} epochs); answers that are "
                  f"an expression the model saw that woman make: {in_seen:.1%} (blind to who she is: {blind:.1%})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
