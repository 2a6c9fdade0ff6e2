"""Frames per second of `edgeemo classify VIDEO`, with face tracking and without (every face classified in
every frame), on a 640x480 video made from a real group photo (about 6 faces per frame).

    python bench/video_bench.py [--frames 150] [--model default|fast] [--photo ../shared/data/scenes/X.jpg]

Prints, for each setting, measured in one run on one core: frames/s, classifier runs (model passes) per
frame, MACs per frame, and frames/s derived for an x86 core without int8 dot product (the model's passes at
39 GMAC/s, decoding, detection and tracking as measured here). The CPU's int8 instructions come first: with
them, the measured figures overstate a Pi 4's.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--model", default=None)
    ap.add_argument("--photo", default=str(SHARED / "data" / "scenes" / "2008_002079.jpg"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    cv2.setNumThreads(1)
    from synth_video import make

    from edgeemo import cost
    from edgeemo.pipeline import Classifier
    from edgeemo.track import Tracker
    from edgeemo.video import classify_video
    print(cost.cpu_note())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.avi"
        make(path, cv2.imread(args.photo), frames=args.frames, pan=1, scale=1.0)
        for name, every in (("with tracking (the default)", None), ("without tracking: every face, every frame", 1)):
            clf = Classifier(args.model, detector="auto")
            macs = clf.model.macs_per_pass()["total"]
            # reclassify_every=1: every track is due in every frame, i.e. every face classified every time
            tracker = Tracker(clf.labels) if every is None else Tracker(clf.labels, reclassify_every=every)
            t0 = time.perf_counter()
            recs = list(classify_video(clf, path, tracker=tracker))
            dt = time.perf_counter() - t0
            n = len(recs)
            faces = sum(len(r["faces"]) for r in recs)
            passes = clf.model.invocations
            other = dt - clf.model.run_seconds
            derived = other + passes * macs / (cost.NO_DOT_GMACS * 1e9)
            print(f"{name}: {n} frames, {faces / n:.1f} faces per frame; {n / dt:.1f} frames/s measured here; "
                  f"{tracker.classifications / n:.2f} faces classified per frame, {passes / n:.2f} model passes "
                  f"per frame, {passes * macs / n / 1e6:.1f} M MACs per frame; on an x86 core without int8 dot "
                  f"product (derived): {n / derived:.1f} frames/s")


if __name__ == "__main__":
    main()
