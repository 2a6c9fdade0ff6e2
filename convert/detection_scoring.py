"""Score a detector against hand-labelled boxes (dlib imglab XML): recall at an IoU threshold, false positives."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def load_imglab(xml_path: str | Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """{image file name: [(x, y, w, h), ...]} from an imglab XML file; boxes marked ignore are left out."""
    root = ET.parse(xml_path).getroot()
    out = {}
    for img in root.iter("image"):
        boxes = []
        for b in img.iter("box"):
            if b.get("ignore") == "1":
                continue
            boxes.append((int(b.get("left")), int(b.get("top")), int(b.get("width")), int(b.get("height"))))
        out[img.get("file")] = boxes
    return out


def iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(found, truth, threshold: float = 0.4) -> tuple[int, int]:
    """(true positives, false positives): greedy one-to-one matching by IoU."""
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, used_t = set(), set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i in used_f or j in used_t:
            continue
        used_f.add(i)
        used_t.add(j)
    return len(used_t), len(found) - len(used_f)
