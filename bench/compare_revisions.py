"""End-to-end speed of this working tree against an earlier git revision, measured in alternation.

    python bench/compare_revisions.py REV [--pairs 3] [--rounds 12] [--detector yunet]

This machine's speed drifts with load elsewhere on its host (the same code can run 25% slower an hour
later), so two figures taken at different times say little. This runs the revision and the working tree
one after the other, several times, each in its own process on one core, over the same 640x480 photos
(bench/classify_bench.py's), each with its own shipped model, and prints each pair and the median
ratio. REV is checked out into a temporary git worktree, removed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the checkout given as argv[1]: median milliseconds per image over argv[2] rounds.
MEASURE = r"""
import statistics, sys, tempfile, time
from pathlib import Path
repo, rounds, detector = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path[:0] = [repo, repo + "/bench", sys.argv[4]]
import classify_bench as cb
cb.pin_one_core()
import edgeemo
assert Path(edgeemo.__file__).resolve().is_relative_to(Path(repo).resolve()), edgeemo.__file__
from edgeemo.pipeline import Classifier
photos = cb.photos_640x480(Path(tempfile.mkdtemp(prefix="edgeemo-ab-")))
clf = Classifier(None, detector=detector, detector_model=str(cb.YUNET) if detector == "yunet" else None)
clf.classify_image(photos[0])
per = []
for _ in range(rounds):
    t = time.perf_counter()
    for p in photos:
        clf.classify_image(p)
    per.append((time.perf_counter() - t) / len(photos) * 1000)
print(statistics.median(per))
"""


def measure(repo: Path, rounds: int, detector: str) -> float:
    env = {"EDGEEMO_SHARED": str(ROOT.parent / "shared"),
           **{k: v for k, v in os.environ.items() if k != "EDGEEMO_MODEL"}}     # each its own shipped model
    out = subprocess.run([sys.executable, "-c", MEASURE, str(repo), str(rounds), detector, str(ROOT / "bench")],
                         check=True, capture_output=True, text=True, cwd=repo, env=env).stdout
    return float(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="a git revision to compare against, e.g. HEAD~3 or a commit hash")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=12, help="passes over the photos per measurement")
    ap.add_argument("--detector", default="yunet", choices=("yunet", "haar"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgeemo-rev-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tmp), args.rev], check=True)
    try:
        ratios = []
        print(f"ms per 640x480 photo ({args.detector}, one core, median of {args.rounds} rounds), "
              f"{args.rev} then this working tree:")
        for i in range(args.pairs):
            old = measure(tmp, args.rounds, args.detector)
            new = measure(ROOT, args.rounds, args.detector)
            ratios.append(new / old)
            print(f"  pair {i + 1}: {old:6.2f} -> {new:6.2f} ms  ({new / old:.2f}x the time)")
        print(f"median: the working tree takes {statistics.median(ratios):.2f}x the time of {args.rev}")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp)], check=False)


if __name__ == "__main__":
    main()
