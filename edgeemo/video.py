"""Recorded videos as batch input: one record per analysed frame, in frame order, with face tracks.

``is_video`` tells a video from a photo by its first bytes (MP4/MOV, AVI, Matroska/WebM, MPEG, FLV, ASF),
or by its name where the bytes say nothing. ``classify_video`` decodes it with OpenCV's FFmpeg backend,
analyses one frame in ``every``, and yields for each analysed frame a record with ``frame`` (its index) and
``frame_time`` (seconds from the start); every face in it carries ``track``, ``track_label`` and
``track_confidence`` (``edgeemo.track``), and ``classified`` (false where the track's last answer was
reused). When a track ends, ``on_track`` gets its timeline (``track.timeline``). A video that cannot be
opened gets one ``unreadable`` record; one that breaks half-way gets an ``error`` record after the frames
already done, which are kept.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import cv2

from . import imageio
from .track import Tracker, timeline

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv",
                  ".3gp"}


def is_video(path: Path) -> bool:
    """A regular file (never a link, a FIFO or a device: those take the photo path, which refuses them) whose
    first bytes are a video container's, or whose name is a video's and whose bytes are no picture's."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return False
            head = fh.read(32)
    except OSError:
        return False
    if head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:4] == b"\x1a\x45\xdf\xa3" \
            or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3") or head[:3] == b"FLV" \
            or head[:4] == b"\x30\x26\xb2\x75":
        return True
    return Path(path).suffix.lower() in VIDEO_SUFFIXES and imageio.sniff(head) is None


def classify_video(clf, path: Path, every: int = 1, sha256: str | None = None,
                   on_track: Callable[[dict], None] = lambda line: None, tracker: Tracker | None = None,
                   start: int = 0, **extra) -> Iterator[dict]:
    """Records of the analysed frames of ``path`` (see the module's text); ``clf`` is a pipeline.Classifier.
    ``start``: the first frame index to analyse (a video continued after the frames recorded before)."""
    name = str(path)
    cap = cv2.VideoCapture(name, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        yield clf.record(name, "unreadable", sha256=sha256, error=f"{name}: not a video OpenCV's FFmpeg backend "
                         f"can read (damaged, or an unknown container or codec)", **extra)
        return
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps < 1000 else 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    tracker = tracker or Tracker(clf.labels)
    index, decoded = -1, 0
    try:
        while True:
            if not cap.grab():
                break
            index += 1
            if index < start or index % every:
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                break
            decoded += 1
            t = index / fps
            yield track_frame(clf, tracker, name, frame, index, t, sha256,
                              {"frame": index, "frame_time": round(t, 3), **extra})
            for tr in tracker.ended(t):
                on_track(timeline(tr, name))
    finally:
        cap.release()
        for tr in tracker.close():
            on_track(timeline(tr, name))
    if decoded == 0 and not (start and index + 1 >= start):     # nothing left after ``start`` is no damage
        yield clf.record(name, "unreadable", sha256=sha256, error=f"{name}: no frame could be decoded (damaged "
                         f"or empty video)", **extra)
    elif total > 0 and index + 1 < total - max(2, total // 50):
        yield clf.record(name, "error", sha256=sha256, error=f"{name}: the video breaks after frame {index} of "
                         f"{total} (truncated or damaged); the frames before are recorded", frame=index + 1,
                         frame_time=round((index + 1) / fps, 3), **extra)


def track_frame(clf, tracker: Tracker, name: str | None, frame, index: int, t: float, sha256, fields) -> dict:
    """The record of one frame (a video's or a camera's): faces detected, matched to ``tracker``'s tracks at
    time ``t`` (seconds), classified where the tracker says so; ``fields`` go into the record."""
    h, w = frame.shape[:2]
    where = SimpleNamespace(width=w, height=h, sha256=sha256)
    boxes = clf.detector.detect(frame)
    assigned = tracker.update([b.xywh for b in boxes], [b.score for b in boxes], t, index)
    if not boxes:
        return clf.record(name, "no_face", image=where, **fields)
    todo = [k for k, (_, due) in enumerate(assigned) if due]
    if todo:
        for k, p in zip(todo, clf.classify_faces(frame, [boxes[k] for k in todo])):
            tracker.observe(assigned[k][0], p)
    faces = []
    for b, (tr, due) in zip(boxes, assigned):
        p = tr.probs
        k = int(p.argmax())
        faces.append({"box": [b.x, b.y, b.w, b.h], "score": round(float(b.score), 4), "label": clf.labels[k],
                      "confidence": round(float(p[k]), 4),
                      "probs": {lab: round(float(v), 4) for lab, v in zip(clf.labels, p)},
                      "track": tr.id, "track_label": tr.label, "track_confidence": round(tr.confidence, 4),
                      "classified": bool(due)})
    return clf.record(name, "ok", image=where, faces=faces, **fields)
