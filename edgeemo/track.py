"""Face tracks across the frames of a video or a camera: who is the same person from frame to frame, their
steady emotion, and when to classify them again.

A small IoU tracker of the SORT kind, with no dependency: each track predicts its box from its last motion,
detections are matched to predictions greedily by overlap (best first), and a track that finds no face is
kept for ``max_lost`` seconds (a face hidden or missed for a moment keeps its id). A detection that matches
no track starts a new one.

A track is classified again only when it is useful (``Track.due``): when it is new, when its box moved or
changed size a lot since its last classification, when its steady emotion is unsure, or every
``reclassify_every`` analysed frames. Between those, the face's record repeats the track's last answer
(``classified`` false).

The steady emotion is an exponential average of the track's answers (``alpha``) with hysteresis: the label
changes only when another emotion's average leads the current one's by ``hysteresis``. A person who keeps
one expression keeps one label even when single frames flip.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]
    first_time: float
    last_time: float
    first_frame: int
    last_frame: int
    velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)   # box change per second
    frames_seen: int = 1
    probs: np.ndarray | None = None          # the last classification's probabilities
    steady: np.ndarray | None = None         # their exponential average
    label: str | None = None                 # the steady emotion
    confidence: float = 0.0
    classified_box: tuple | None = None
    classified_at: int = -1                  # the analysed-frame count of the last classification
    seconds: dict = field(default_factory=dict)    # seconds spent in each steady emotion
    best_box: tuple | None = None
    best_score: float = -1.0
    best_time: float = 0.0
    changes: int = 0                         # changes of the steady emotion

    def predicted(self, t: float) -> tuple:
        dt = t - self.last_time
        return tuple(v + dv * dt for v, dv in zip(self.box, self.velocity))


class Tracker:
    """Tracks of one video or camera. ``update(boxes, scores, t, frame)`` once per analysed frame gives, for
    each box, its track and whether to classify it; ``observe(track, probs)`` gives the track an answer;
    ``ended(t)`` (and ``close()``) hand over the tracks that are gone."""

    def __init__(self, labels, iou_min: float = 0.25, max_lost: float = 1.0, reclassify_every: int = 10,
                 alpha: float = 0.4, hysteresis: float = 0.15, unsure: float = 0.5, moved: float = 0.6):
        self.labels = list(labels)
        self.iou_min, self.max_lost = iou_min, max_lost
        self.reclassify_every, self.alpha, self.hysteresis = reclassify_every, alpha, hysteresis
        self.unsure, self.moved = unsure, moved
        self.tracks: dict[int, Track] = {}
        self.next_id = 1
        self.analysed = 0
        self.classifications = 0

    def update(self, boxes, scores, t: float, frame: int) -> list[tuple[Track, bool]]:
        self.analysed += 1
        live = [tr for tr in self.tracks.values() if t - tr.last_time <= self.max_lost]
        pairs = sorted(((iou(tr.predicted(t), b), i, tr.id) for i, b in enumerate(boxes) for tr in live),
                       reverse=True)
        taken_box, taken_track, match = set(), set(), {}
        for overlap, i, tid in pairs:
            if overlap < self.iou_min:
                break
            if i in taken_box or tid in taken_track:
                continue
            taken_box.add(i)
            taken_track.add(tid)
            match[i] = self.tracks[tid]
        out = []
        for i, b in enumerate(boxes):
            b = tuple(float(v) for v in b)
            tr = match.get(i)
            if tr is None:
                tr = Track(self.next_id, b, t, t, frame, frame)
                self.tracks[tr.id] = tr
                self.next_id += 1
            else:
                dt = t - tr.last_time
                if dt > 0:
                    seen = tuple((nv - ov) / dt for nv, ov in zip(b, tr.box))
                    tr.velocity = tuple(0.5 * s + 0.5 * v for s, v in zip(seen, tr.velocity))
                if tr.label is not None and dt > 0:
                    tr.seconds[tr.label] = tr.seconds.get(tr.label, 0.0) + dt
                tr.box, tr.last_time, tr.last_frame = b, t, frame
                tr.frames_seen += 1
            score = float(scores[i]) if scores is not None else 0.0
            if score > tr.best_score:
                tr.best_box, tr.best_score, tr.best_time = b, score, t
            out.append((tr, self.due(tr)))
        return out

    def due(self, tr: Track) -> bool:
        """Whether the track is worth classifying again now."""
        if tr.probs is None:
            return True
        if self.analysed - tr.classified_at >= self.reclassify_every:
            return True
        if tr.confidence < self.unsure:
            return True
        old = tr.classified_box
        return iou(old, tr.box) < self.moved

    def observe(self, tr: Track, probs) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        self.classifications += 1
        tr.probs, tr.classified_box, tr.classified_at = probs, tr.box, self.analysed
        tr.steady = probs.copy() if tr.steady is None else (1 - self.alpha) * tr.steady + self.alpha * probs
        top = int(np.argmax(tr.steady))
        if tr.label is None:
            tr.label = self.labels[top]
        else:
            cur = self.labels.index(tr.label)
            if top != cur and tr.steady[top] - tr.steady[cur] > self.hysteresis:
                tr.label = self.labels[top]
                tr.changes += 1
        tr.confidence = float(tr.steady[self.labels.index(tr.label)])

    def ended(self, t: float) -> list[Track]:
        """The tracks not seen for more than ``max_lost`` seconds, removed."""
        gone = [tr for tr in self.tracks.values() if t - tr.last_time > self.max_lost]
        for tr in gone:
            del self.tracks[tr.id]
        return gone

    def close(self) -> list[Track]:
        """Every track still open (the end of the video)."""
        gone = list(self.tracks.values())
        self.tracks.clear()
        return gone


def source_of(rec: dict) -> str:
    """The video or camera a frame's record (or a track's timeline) belongs to: ``camera X``, or its file."""
    return f"camera {rec['camera']}" if rec.get("camera") is not None else str(rec.get("file"))


def timeline(tr: Track, source: str | None) -> dict:
    """The line of ``tracks.jsonl`` for a track that ended."""
    seconds = {k: round(v, 3) for k, v in sorted(tr.seconds.items(), key=lambda kv: -kv[1])}
    dominant = next(iter(seconds), tr.label)
    return {"file": source, "track": tr.id, "first_time": round(tr.first_time, 3),
            "last_time": round(tr.last_time, 3), "first_frame": tr.first_frame, "last_frame": tr.last_frame,
            "frames_seen": tr.frames_seen, "dominant": dominant, "seconds": seconds, "label_changes": tr.changes,
            "best_box": [int(round(v)) for v in tr.best_box] if tr.best_box else None,
            "best_time": round(tr.best_time, 3)}
