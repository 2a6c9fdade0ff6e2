"""Track quality on a generated video: ID switches against the boxes placed, and label changes per frame
against changes of the steady emotion.

    python bench/track_quality.py [--frames 150] [--photo ../shared/data/scenes/2008_002079.jpg]

Two videos of a real group photo, 10 frames/s; tests/synth_video.py knows every face's true box in every
frame. One pans (scaled 1.6x, 2 pixels a frame) and hides one face behind a grey patch for 6 frames (0.6 s);
the other pans and zooms in to 1.5x over its length (people leave at the edges, faces grow).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--photo", default=str(SHARED / "data" / "scenes" / "2008_002079.jpg"))
    args = ap.parse_args()
    import cv2
    from synth_video import id_switches, make

    from edgeemo.pipeline import Classifier
    from edgeemo.video import classify_video
    for title, kw in (("pan, a face hidden 0.6 s", {"pan": 2, "hide": {1: range(40, 46)}, "scale": 1.6}),
                      ("pan and zoom in to 1.5x", {"pan": 2, "zoom": 0.5 / args.frames, "scale": 1.2})):
        with tempfile.TemporaryDirectory() as tmp:
            video = make(Path(tmp) / "v.avi", cv2.imread(args.photo), frames=args.frames, **kw)
            tracks: list[dict] = []
            recs = list(classify_video(Classifier(), video.path, on_track=tracks.append))
        switches, ids = id_switches(recs, video)
        flips = steady = 0
        for person_ids in ids.values():
            for tid in person_ids:
                faces = [f for r in recs for f in r["faces"] if f["track"] == tid]
                flips += sum(a["label"] != b["label"] for a, b in zip(faces, faces[1:]))
                steady += sum(a["track_label"] != b["track_label"] for a, b in zip(faces, faces[1:]))
        print(f"{title}: {len(recs)} frames, {len(ids)} people placed, {len(tracks)} tracks; ID switches: "
              f"{switches} (ids per person: {sorted(len(v) for v in ids.values())})")
        print(f"  label changes from frame to frame, over the people's tracks: per-frame label {flips}, steady "
              f"emotion (track_label) {steady}; per track (tracks.jsonl label_changes): "
              f"{[t['label_changes'] for t in tracks]}")

if __name__ == "__main__":
    main()
