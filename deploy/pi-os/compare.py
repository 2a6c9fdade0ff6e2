"""Compare two `edgeemo classify` runs of the same pictures (results.jsonl), e.g. x86 against emulated ARM.

    python deploy/pi-os/compare.py X86/results.jsonl ARM/results.jsonl [--faces] [--truth training.xml]
        [--min-labels 0.97]

Pictures are matched by file name. Prints, per picture with a difference and in total: faces on each side,
faces with the same box, equal labels, and the largest confidence and probability differences. ``--faces``
also requires the same faces (the same number and boxes within 2 pixels) in every picture. ``--truth`` counts
the labelled faces (imglab XML) that the second run found, at IoU >= 0.4 as tests/test_detect.py does.
Exit status 1 when the labels agree on fewer than ``--min-labels`` of the faces, or ``--faces`` fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BOX_SLACK = 2


def load(path: Path) -> dict[str, dict]:
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            records[Path(rec["file"]).name] = rec
    return records


def pair_faces(a: list[dict], b: list[dict]) -> list[tuple[dict, dict]]:
    """Faces of two runs of one picture paired by box (nearest corner sum), each used once."""
    pairs, free = [], list(b)
    for fa in a:
        if not free:
            break
        fb = min(free, key=lambda f: sum(abs(p - q) for p, q in zip(fa["box"], f["box"])))
        if max(abs(p - q) for p, q in zip(fa["box"], fb["box"])) <= BOX_SLACK:
            pairs.append((fa, fb))
            free.remove(fb)
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("other", type=Path)
    ap.add_argument("--faces", action="store_true", help="require the same faces and boxes in every picture")
    ap.add_argument("--truth", type=Path, help="imglab XML of labelled faces: count those the second run found")
    ap.add_argument("--min-labels", type=float, default=0.97)
    args = ap.parse_args(argv)

    ref, other = load(args.reference), load(args.other)
    ok = True
    if set(ref) != set(other):
        print(f"pictures differ: only in {args.reference}: {sorted(set(ref) - set(other))}; "
              f"only in {args.other}: {sorted(set(other) - set(ref))}")
        ok = False
    n_ref = n_other = paired = equal = 0
    conf_diff = prob_diff = 0.0
    for name in sorted(set(ref) & set(other)):
        a, b = ref[name].get("faces") or [], other[name].get("faces") or []
        if ref[name]["status"] != other[name]["status"]:
            print(f"{name}: status {ref[name]['status']} against {other[name]['status']}")
            ok = False
        pairs = pair_faces(a, b)
        n_ref, n_other, paired = n_ref + len(a), n_other + len(b), paired + len(pairs)
        for fa, fb in pairs:
            equal += fa["label"] == fb["label"]
            conf_diff = max(conf_diff, abs(fa["confidence"] - fb["confidence"]))
            prob_diff = max(prob_diff, max(abs(fa["probs"][k] - fb["probs"][k]) for k in fa["probs"]))
            if fa["label"] != fb["label"]:
                print(f"{name}: face at {fa['box']}: {fa['label']} {fa['confidence']:.4f} against "
                      f"{fb['label']} {fb['confidence']:.4f}")
        if len(pairs) != len(a) or len(pairs) != len(b):
            print(f"{name}: {len(a)} faces against {len(b)}, {len(pairs)} with the same box")
    share = equal / paired if paired else 0.0
    print(f"pictures {len(set(ref) & set(other))}; faces {n_ref} against {n_other}, {paired} with the same box "
          f"(within {BOX_SLACK} px); equal labels {equal}/{paired} = {100 * share:.1f}%; largest difference: "
          f"confidence {conf_diff:.4f}, probability {prob_diff:.4f}")
    if args.faces and not (n_ref == n_other == paired):
        print("FAIL: the faces differ")
        ok = False
    if share < args.min_labels:
        print(f"FAIL: labels agree on {100 * share:.1f}%, below {100 * args.min_labels:.0f}%")
        ok = False
    if args.truth:
        from edgeemo_convert.detection_scoring import load_imglab, match
        truth = load_imglab(args.truth)
        found = labelled = 0
        for name, boxes in truth.items():
            faces = [f["box"] for f in (other.get(name, {}).get("faces") or [])]
            found += match(faces, boxes, 0.4)[0]
            labelled += len(boxes)
        print(f"labelled faces found by {args.other}: {found}/{labelled} ({args.truth.name}, IoU >= 0.4)")
    print("OK" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
