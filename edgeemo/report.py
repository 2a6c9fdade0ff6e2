"""`edgeemo report`: one self-contained HTML page (and a terminal summary, and JSON figures) from result
records, read as a stream.

Figures are gathered in one pass over the records (``Tally``), in memory bounded by the number of time
buckets and labels, not by the number of records; a torn or malformed line is skipped with a warning and
counted. The page is built from a template with every piece of user data (file names, error messages,
model names) escaped; its charts are inline SVG drawn by matplotlib (the ``[report]`` extra), so it opens
from a USB stick with no network.
"""
from __future__ import annotations

import base64
import datetime as dt
import heapq
import html
import io
import json
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path
from string import Template
from typing import Iterable, Iterator

from . import atomic, jsonl
from .errors import SetupError
from .labels import LABELS
from .record import RecordError
from .record import check as check_record
from .track import source_of

log = logging.getLogger("edgeemo")

EXTRA_HELP = "install the report extra: pip install 'edgeemo[report]'"
CONF_BINS = 20                    # confidence histogram: 0.00-0.05, ..., 0.95-1.00
SIZE_EDGES = (0, 24, 32, 48, 64, 96, 128, 192, 256, 512, 10**9)   # face side in pixels
MAX_ERRORS_LISTED = 10
MAX_FACES_PER_IMAGE_BIN = 10
MAX_TRACKS = 5000                 # face tracks held for the per-person timelines (the rest are counted)
MAX_SEGMENTS = 200                # steady-emotion segments held per track (the rest extend the last one)
TIMELINE_SOURCES = 8              # videos or camera runs drawn, the ones with the most tracks
TIMELINE_ROWS = 30                # tracks drawn per video or camera run, the longest ones


def parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def read_records(paths: Iterable[Path], counts: Counter, warn=log.warning) -> Iterator[dict]:
    """Records from JSON Lines files, one at a time. A line that is not a JSON object (torn by a power cut,
    edited by hand) is skipped with a warning (the first five; ``warn``); ``counts['malformed']`` says how
    many."""
    for path in paths:
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise SetupError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        with fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                rec = jsonl.parse(line)
                try:
                    check_record(rec)
                except RecordError as exc:
                    counts["malformed"] += 1
                    if counts["malformed"] <= 5:
                        why = "not JSON, or torn" if rec is None else str(exc)
                        warn(f"{path}, line {n}: not a result record ({why}); skipped")
                    continue
                yield rec


class Tally:
    """Every figure of the report, gathered one record at a time."""

    def __init__(self, by: str = "hour", since: dt.datetime | None = None, until: dt.datetime | None = None,
                 truth: str | None = None, gallery: int = 0):
        self.by, self.since, self.until, self.truth, self.gallery_n = by, since, until, truth, gallery
        self.images = 0
        self.status: Counter = Counter()
        self.labels: Counter = Counter()
        self.errors: list[tuple[str, str, str]] = []        # (status, file, error), the first few
        self.first = self.last = None
        self.no_time = 0
        self.outside = 0
        self.models: Counter = Counter()
        self.timeline: dict[str, Counter] = defaultdict(Counter)
        self.sources: dict[str, Counter] = defaultdict(Counter)   # "camera X" / "device Y" -> labels
        self.conf_hist = {lab: [0] * CONF_BINS for lab in LABELS}
        self.low_conf = 0
        self.faces_per_image: Counter = Counter()
        self.sizes = [0] * (len(SIZE_EDGES) - 1)
        self.confusion = [[0] * len(LABELS) for _ in LABELS]
        self.truth_skipped = 0
        self._least: list[tuple[float, int, str, list]] = []      # max-heap by -confidence: the least confident
        self._k = 0
        self.tracks = TrackTimelines()

    # one record
    def add(self, rec: dict) -> None:
        t = parse_time(rec.get("frame_time") or rec.get("time"))
        if t is not None and ((self.since and t < self.since) or (self.until and t >= self.until)):
            self.outside += 1
            return
        self.images += 1
        status = str(rec.get("status"))
        self.status[status] += 1
        model = rec.get("model") or {}
        self.models[str(model.get("name") if isinstance(model, dict) else model)] += 1
        if status in ("unreadable", "error") and len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append((status, str(rec.get("file")), str(rec.get("error"))))
        if t is None:
            self.no_time += 1
        else:
            self.first = t if self.first is None or t < self.first else self.first
            self.last = t if self.last is None or t > self.last else self.last
        faces = [f for f in rec.get("faces") or [] if isinstance(f, dict) and f.get("label") in LABELS]
        if status in ("ok", "no_face"):
            self.faces_per_image[min(len(faces), MAX_FACES_PER_IMAGE_BIN)] += 1
        bucket = self._bucket(t) if t is not None else None
        where = [f"camera {rec['camera']}"] if rec.get("camera") else []
        if rec.get("device"):
            where.append(f"device {rec['device']}")
        for f in faces:
            lab, conf = f["label"], float(f.get("confidence") or 0.0)
            self.labels[lab] += 1
            self.conf_hist[lab][min(CONF_BINS - 1, int(conf * CONF_BINS))] += 1
            self.low_conf += conf < 0.5
            box = f.get("box") or [0, 0, 0, 0]
            side = min(box[2], box[3]) if len(box) == 4 else 0
            for i in range(len(self.sizes)):
                if SIZE_EDGES[i] <= side < SIZE_EDGES[i + 1]:
                    self.sizes[i] += 1
                    break
            if bucket is not None:
                self.timeline[bucket][lab] += 1
            for w in where:
                self.sources[w][lab] += 1
            if self.gallery_n:
                self._k += 1
                item = (-conf, self._k, str(rec.get("file")), box, lab)
                if len(self._least) < self.gallery_n:
                    heapq.heappush(self._least, item)
                elif -conf > self._least[0][0]:
                    heapq.heapreplace(self._least, item)
        self.tracks.add(rec, faces)
        if self.truth == "folders" and status == "ok" and faces:
            true = Path(str(rec.get("file"))).parent.name.lower()
            if true in LABELS:
                best = max(faces, key=lambda f: float(f.get("confidence") or 0.0))
                self.confusion[LABELS.index(true)][LABELS.index(best["label"])] += 1
            else:
                self.truth_skipped += 1

    def _bucket(self, t: dt.datetime) -> str:
        return t.strftime("%Y-%m-%d %H:00" if self.by == "hour" else "%Y-%m-%d")

    # derived figures
    @property
    def faces(self) -> int:
        return sum(self.labels.values())

    def least_confident(self) -> list[tuple[float, str, list, str]]:
        return sorted(((-c, f, b, lab) for c, _, f, b, lab in self._least), key=lambda x: x[0])

    def truth_metrics(self) -> dict | None:
        n = sum(map(sum, self.confusion))
        if not self.truth or not n:
            return None
        per = {}
        for i, lab in enumerate(LABELS):
            tp = self.confusion[i][i]
            pred = sum(row[i] for row in self.confusion)
            true = sum(self.confusion[i])
            p = tp / pred if pred else 0.0
            r = tp / true if true else 0.0
            per[lab] = {"precision": round(p, 4), "recall": round(r, 4),
                        "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "support": true}
        present = [lab for lab in LABELS if per[lab]["support"]]
        return {"faces": n, "accuracy": round(sum(self.confusion[i][i] for i in range(len(LABELS))) / n, 4),
                "macro_f1": round(sum(per[lab]["f1"] for lab in present) / max(1, len(present)), 4),
                "per_class": per, "confusion": self.confusion, "labels": list(LABELS),
                "skipped_not_a_label_folder": self.truth_skipped}

    def figures(self, malformed: int) -> dict:
        return {
            "images": self.images, "faces": self.faces,
            "images_without_face": self.status.get("no_face", 0),
            "unreadable": self.status.get("unreadable", 0), "errors": self.status.get("error", 0),
            "status": dict(self.status), "malformed_lines": malformed, "outside_time_window": self.outside,
            "records_without_time": self.no_time,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "models": dict(self.models), "labels": {lab: self.labels.get(lab, 0) for lab in LABELS},
            "label_share": {lab: round(self.labels.get(lab, 0) / self.faces, 4) if self.faces else 0.0
                            for lab in LABELS},
            "faces_below_0_5": self.low_conf,
            "share_below_0_5": round(self.low_conf / self.faces, 4) if self.faces else 0.0,
            "faces_per_image": {str(k) + ("+" if k == MAX_FACES_PER_IMAGE_BIN else ""): v
                                for k, v in sorted(self.faces_per_image.items())},
            "face_sizes": {f"{SIZE_EDGES[i]}-{SIZE_EDGES[i + 1] if SIZE_EDGES[i + 1] < 10**9 else ''}": v
                           for i, v in enumerate(self.sizes)},
            "timeline": {b: dict(c) for b, c in sorted(self.timeline.items())},
            "sources": {s: dict(c) for s, c in sorted(self.sources.items())},
            "first_errors": [{"status": s, "file": f, "error": e} for s, f, e in self.errors],
            "truth": self.truth_metrics(),
            "tracks": self.tracks.figures(),
        }


class TrackTimelines:
    """Per person (face track) of each video and camera run: their steady emotion over time, as segments
    (start, end, emotion) in seconds from the run's first frame. A video is its file; a camera run is the
    camera's records until its frame numbers go back (a restart numbers its tracks from 1 again)."""

    def __init__(self):
        self.runs: dict[tuple[str, int], dict] = {}    # (source, run) -> {"t0": .., "tracks": {id: segments}}
        self._run: dict[str, tuple[int, int]] = {}     # source -> (run number, last frame)
        self.held = 0
        self.not_held = 0

    @staticmethod
    def _seconds(rec: dict) -> float | None:
        ft = rec.get("frame_time")
        if isinstance(ft, (int, float)) and not isinstance(ft, bool):
            return float(ft)                            # a video: seconds from its start
        t = parse_time(ft) or parse_time(rec.get("time"))
        return t.timestamp() if t is not None else None

    def add(self, rec: dict, faces: list) -> None:
        faces = [f for f in faces if isinstance(f.get("track"), int) and f.get("track_label") in LABELS]
        frame = rec.get("frame")
        if not faces or not isinstance(frame, int):
            return
        t = self._seconds(rec)
        if t is None:
            return
        source = source_of(rec)
        if rec.get("device"):
            source = f"{source} on {rec['device']}"
        run, last = self._run.get(source, (1, -1))
        if frame < last:
            run += 1
        self._run[source] = (run, frame)
        r = self.runs.setdefault((source, run), {"t0": t, "tracks": {}})
        x = max(0.0, t - r["t0"])
        for f in faces:
            segs = r["tracks"].get(f["track"])
            if segs is None:
                if self.held >= MAX_TRACKS:
                    self.not_held += 1
                    continue
                self.held += 1
                segs = r["tracks"][f["track"]] = [[x, x, f["track_label"]]]
            else:
                segs[-1][1] = x
                if segs[-1][2] != f["track_label"] and len(segs) < MAX_SEGMENTS:
                    segs.append([x, x, f["track_label"]])

    def figures(self) -> dict:
        """{"runs": [{"source", "run", "tracks": [{"track", "first", "last", "dominant", "changes",
        "segments"}]}], "tracks", "not_held"}: the runs with the most tracks first, their tracks by number."""
        runs = []
        for (source, run), r in sorted(self.runs.items(), key=lambda kv: -len(kv[1]["tracks"])):
            tracks = []
            for tid, segs in r["tracks"].items():
                time_in: Counter = Counter()
                for a, b, lab in segs:
                    time_in[lab] += b - a
                tracks.append({"track": tid, "first": round(segs[0][0], 3), "last": round(segs[-1][1], 3),
                               "dominant": time_in.most_common(1)[0][0] if sum(time_in.values()) else segs[0][2],
                               "changes": len(segs) - 1,
                               "segments": [[round(a, 3), round(b, 3), lab] for a, b, lab in segs]})
            tracks.sort(key=lambda tr: tr["track"])
            runs.append({"source": source, "run": run, "tracks": tracks})
        return {"runs": runs, "tracks": self.held, "not_held": self.not_held}


def shown_tracks(run: dict) -> list[dict]:
    """The tracks of a run that the page draws: the TIMELINE_ROWS longest, by number."""
    longest = sorted(run["tracks"], key=lambda tr: -(tr["last"] - tr["first"]))[:TIMELINE_ROWS]
    return sorted(longest, key=lambda tr: tr["track"])


def _runs(n: int) -> str:
    return f"{n} video{'s' if n != 1 else ''} or camera run{'s' if n != 1 else ''}"


def summary_text(fig: dict) -> str:
    span = f"{fig['first']} .. {fig['last']}" if fig["first"] else "no timestamps"
    lines = [f"{fig['images']} images, {fig['faces']} faces; {fig['images_without_face']} without a face; "
             f"{fig['unreadable']} unreadable; {fig['errors']} errors; {fig['malformed_lines']} malformed lines skipped",
             f"time span {span}; models: " + (", ".join(f"{m} ({n})" for m, n in fig["models"].items()) or "none"),
             "emotions: " + (", ".join(f"{lab} {n} ({fig['label_share'][lab]:.0%})"
                                       for lab, n in sorted(fig["labels"].items(), key=lambda kv: -kv[1]) if n)
                             or "none"),
             f"faces below 0.5 confidence: {fig['faces_below_0_5']} ({fig['share_below_0_5']:.0%})"]
    tr = fig["tracks"]
    if tr["tracks"]:
        lines.append(f"{tr['tracks']} face tracks in {_runs(len(tr['runs']))}")
    if fig["truth"]:
        t = fig["truth"]
        lines.append(f"against the folder names: accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f} "
                     f"on {t['faces']} faces")
    return "\n".join(lines)


# --- the page -------------------------------------------------------------------------------------------------

def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SetupError(f"`edgeemo report` draws its charts with matplotlib, which is not installed; "
                         f"{EXTRA_HELP}") from None
    plt.rcParams["svg.fonttype"] = "none"
    # every text is literal: a device name such as "$\\foo$" (any MQTT publisher chooses its own) is not
    # mathtext, which would fail to parse and take the whole page down
    plt.rcParams["text.parse_math"] = False
    plt.rcParams["text.usetex"] = False
    return plt


COLORS = {"angry": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd", "happy": "#f2b701", "sad": "#1f77b4",
          "surprise": "#ff7f0e", "neutral": "#7f7f7f"}


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]          # drop the XML prolog and DOCTYPE: inline in HTML


def _bar_chart(plt, names, values, title, xlabel="", colors=None):
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    ax.bar(range(len(names)), values, color=colors or "#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 7 else 0, ha="right" if len(names) > 7 else "center")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def charts(fig: dict, tally: Tally) -> dict[str, str]:
    plt = _plt()
    out = {}
    labs = [lab for lab in LABELS]
    out["emotions"] = _bar_chart(plt, labs, [fig["labels"][lab] for lab in labs], "Faces per emotion",
                                 colors=[COLORS[lab] for lab in labs])
    if fig["timeline"]:
        buckets = list(fig["timeline"])
        f, ax = plt.subplots(figsize=(9, 3))
        bottom = [0] * len(buckets)
        for lab in labs:
            vals = [fig["timeline"][b].get(lab, 0) for b in buckets]
            ax.bar(range(len(buckets)), vals, bottom=bottom, color=COLORS[lab], label=lab, width=0.9)
            bottom = [a + b for a, b in zip(bottom, vals)]
        step = max(1, len(buckets) // 12)
        ax.set_xticks(range(0, len(buckets), step), buckets[::step], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"Faces per {tally.by}, by emotion")
        ax.legend(ncol=7, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.35))
        ax.spines[["top", "right"]].set_visible(False)
        out["timeline"] = _svg(f)
    f, axes = plt.subplots(1, len(labs), figsize=(12, 2.2), sharey=False)
    for ax, lab in zip(axes, labs):
        ax.bar([(i + 0.5) / CONF_BINS for i in range(CONF_BINS)], tally.conf_hist[lab], width=1 / CONF_BINS,
               color=COLORS[lab])
        ax.axvline(0.5, color="#333", lw=0.8, ls="--")
        ax.set_title(lab, fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
    f.suptitle("Confidence per emotion (dashed: 0.5)", fontsize=10, y=1.05)
    out["confidence"] = _svg(f)
    out["faces_per_image"] = _bar_chart(plt, list(fig["faces_per_image"]), list(fig["faces_per_image"].values()),
                                        "Images by number of faces", "faces in the image")
    out["sizes"] = _bar_chart(plt, list(fig["face_sizes"]), list(fig["face_sizes"].values()),
                              "Faces by size (shorter box side, pixels)", "pixels")
    if fig["sources"]:
        names = list(fig["sources"])
        f, ax = plt.subplots(figsize=(7, 0.5 + 0.4 * len(names)))
        left = [0] * len(names)
        for lab in labs:
            vals = [fig["sources"][n].get(lab, 0) for n in names]
            ax.barh(range(len(names)), vals, left=left, color=COLORS[lab], label=lab)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(range(len(names)), [n if len(n) <= 40 else n[:39] + "…" for n in map(str, names)])
        ax.set_title("Faces per camera / device")
        ax.legend(ncol=7, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15 - 0.3 / max(1, len(names))))
        out["sources"] = _svg(f)
    out["tracks"] = []
    for r in fig["tracks"]["runs"][:TIMELINE_SOURCES]:
        rows = shown_tracks(r)
        f, ax = plt.subplots(figsize=(9, 0.8 + 0.28 * len(rows)))
        for i, tr in enumerate(rows):
            for lab in labs:
                spans = [(a, max(b - a, 0.05)) for a, b, sl in tr["segments"] if sl == lab]
                if spans:
                    ax.broken_barh(spans, (i - 0.4, 0.8), color=COLORS[lab])
        ax.set_yticks(range(len(rows)), [f"track {tr['track']}" for tr in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("seconds from the first frame")
        name = r["source"] if len(r["source"]) <= 60 else "…" + r["source"][-59:]
        ax.set_title(f"{name}" + (f" (run {r['run']})" if r["run"] > 1 else "") + ": steady emotion per person",
                     fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[lab]) for lab in labs]
        ax.legend(handles, labs, ncol=7, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.9 / (1 + len(rows) * 0.35)))
        out["tracks"].append(_svg(f))
    if fig["truth"]:
        cm = fig["truth"]["confusion"]
        f, ax = plt.subplots(figsize=(5, 4.2))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labs)), labs, rotation=45, ha="right")
        ax.set_yticks(range(len(labs)), labs)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (folder name)")
        top = max(max(r) for r in cm) or 1
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
        ax.set_title("Confusion matrix")
        out["confusion"] = _svg(f)
    return out


PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeemo report: $title</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.chart{margin:1em 0}.chart svg{max-width:100%;height:auto}
code{word-break:break-all}.gallery img{height:96px;margin:2px}.note{color:#666;font-size:.9em}
</style></head><body>
<h1>edgeemo report</h1>
<p class="note">$sources_read; made $made</p>
<h2>Summary</h2>
<table>$summary_rows</table>
$errors
<h2>Emotions</h2>
<table><tr><th>emotion</th><th>faces</th><th>share</th></tr>$label_rows</table>
<div class="chart" id="chart-emotions">$chart_emotions</div>
<div class="chart" id="chart-timeline">$chart_timeline</div>
<div class="chart" id="chart-sources">$chart_sources</div>
<h2>Confidence</h2>
<p>$low_conf</p>
<div class="chart" id="chart-confidence">$chart_confidence</div>
<h2>Faces per image and face sizes</h2>
<p class="note">A face under about 48 pixels is the usual cause of a wrong answer.</p>
<div class="chart" id="chart-faces-per-image">$chart_faces_per_image</div>
<div class="chart" id="chart-sizes">$chart_sizes</div>
$tracks
$truth
$gallery
</body></html>
""")


def _rows(pairs) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td class=n>{html.escape(str(v))}</td></tr>" for k, v in pairs)


def _thumbs(least: list, limit_px: int = 96) -> str:
    import cv2
    from .imageio import ImageError, read_image
    items = []
    for conf, file, box, lab in least:
        try:
            img = read_image(file)
        except (ImageError, OSError):
            continue
        x, y, w, h = (int(v) for v in box) if len(box) == 4 else (0, 0, img.width, img.height)
        s = img.scale
        crop = img.pixels[int(y * s):int((y + h) * s), int(x * s):int((x + w) * s)]
        if crop.size == 0:
            continue
        k = limit_px / max(crop.shape[:2])
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * k)), max(1, int(crop.shape[0] * k))))
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            alt = html.escape(f"{lab} {conf:.2f}: {file}", quote=True)
            items.append(f'<img alt="{alt}" title="{alt}" src="data:image/jpeg;base64,'
                         f'{base64.b64encode(buf.tobytes()).decode()}">')
    return "".join(items)


def render(fig: dict, tally: Tally, sources: list[str]) -> str:
    ch = charts(fig, tally)
    span = f"{fig['first']} to {fig['last']}" if fig["first"] else "no timestamps"
    summary = [("images", fig["images"]), ("faces", fig["faces"]), ("images without a face", fig["images_without_face"]),
               ("unreadable", fig["unreadable"]), ("errors", fig["errors"]),
               ("malformed lines skipped", fig["malformed_lines"]), ("time span", span),
               ("records without a time", fig["records_without_time"]),
               ("models", ", ".join(f"{m} ({n} records)" for m, n in fig["models"].items()) or "none")]
    if fig["outside_time_window"]:
        summary.append(("records outside --since/--until", fig["outside_time_window"]))
    errors = ""
    if fig["first_errors"]:
        errors = ("<h3>First unreadable and error records</h3><table><tr><th>status</th><th>file</th><th>error</th></tr>"
                  + "".join(f"<tr><td>{html.escape(e['status'])}</td><td><code>{html.escape(e['file'])}</code></td>"
                            f"<td>{html.escape(e['error'])}</td></tr>" for e in fig["first_errors"]) + "</table>")
    label_rows = "".join(f"<tr><td>{lab}</td><td class=n>{fig['labels'][lab]}</td>"
                         f"<td class=n>{fig['label_share'][lab]:.1%}</td></tr>" for lab in LABELS)
    truth = ""
    if fig["truth"]:
        t = fig["truth"]
        rows = "".join(f"<tr><td>{lab}</td><td class=n>{v['precision']:.3f}</td><td class=n>{v['recall']:.3f}</td>"
                       f"<td class=n>{v['f1']:.3f}</td><td class=n>{v['support']}</td></tr>"
                       for lab, v in t["per_class"].items())
        truth = (f"<h2>Against the folder names</h2><p>Accuracy <b>{t['accuracy']:.4f}</b>, macro-F1 "
                 f"<b>{t['macro_f1']:.4f}</b> on {t['faces']} faces (the most confident face of each picture; "
                 f"{t['skipped_not_a_label_folder']} records in folders that are not a label name left out).</p>"
                 f"<table><tr><th>emotion</th><th>precision</th><th>recall</th><th>F1</th><th>faces</th></tr>{rows}</table>"
                 f"<div class=chart id=chart-confusion>{ch.get('confusion', '')}</div>")
    tracks = ""
    tf = fig["tracks"]
    if tf["tracks"]:
        shown = tf["runs"][:TIMELINE_SOURCES]
        parts = [f"<h2>People over time (face tracks)</h2><p class=note>{tf['tracks']} face tracks in "
                 f"{_runs(len(tf['runs']))}; one row per person (a track), coloured by their steady "
                 f"emotion. Shown: the {len(shown)} with the most tracks, in each its {TIMELINE_ROWS} longest tracks"
                 + (f"; {tf['not_held']} more tracks not held" if tf["not_held"] else "") + ".</p>"]
        for r, svg in zip(shown, ch["tracks"]):
            rows = "".join(f"<tr><td class=n>{t['track']}</td><td class=n>{t['first']:.1f}</td>"
                           f"<td class=n>{t['last']:.1f}</td><td>{t['dominant']}</td><td class=n>{t['changes']}</td></tr>"
                           for t in shown_tracks(r))
            parts.append(f"<h3><code>{html.escape(r['source'])}</code>" + (f" (run {r['run']})" if r["run"] > 1 else "")
                         + f"</h3><div class=chart id=chart-tracks-{len(parts)}>{svg}</div><table><tr><th>track</th><th>first s</th><th>last s</th>"
                         f"<th>dominant</th><th>changes</th></tr>{rows}</table>")
        tracks = "".join(parts)
    gallery = ""
    if tally.gallery_n:
        thumbs = _thumbs(tally.least_confident())
        gallery = ("<h2>Least confident faces</h2><div class=gallery>"
                   + (thumbs or "<p class=note>none of the pictures can be read any more</p>") + "</div>")
    low = (f"{fig['faces_below_0_5']} of {fig['faces']} faces ({fig['share_below_0_5']:.1%}) are below 0.5 confident."
           if fig["faces"] else "No faces.")
    return PAGE.substitute(
        title=html.escape(", ".join(os.path.basename(s) for s in sources)),
        sources_read=html.escape("from " + ", ".join(sources)), made=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        summary_rows=_rows(summary), errors=errors, label_rows=label_rows, low_conf=html.escape(low),
        chart_emotions=ch["emotions"], chart_timeline=ch.get("timeline", "<p class=note>No timestamps: no timeline.</p>"),
        chart_sources=ch.get("sources", ""), chart_confidence=ch["confidence"],
        chart_faces_per_image=ch["faces_per_image"], chart_sizes=ch["sizes"], tracks=tracks, truth=truth, gallery=gallery)


def write(results, out: Path, by: str = "hour", since=None, until=None, truth: str | None = None, gallery: int = 0,
          as_json: Path | None = None, warn=lambda message: None) -> dict:
    """The whole `edgeemo report`: read the records of ``results`` (paths of results.jsonl files), write the
    page to ``out`` (atomically) and, with ``as_json``, every figure as JSON; return the figures."""
    _plt()                          # the extra is there, before reading a million records
    fig, tally = build(results, by, since, until, truth, gallery, warn=warn)
    page = render(fig, tally, [str(p) for p in results])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, page)
    if as_json:
        atomic.write_text(as_json, json.dumps(fig, indent=1, allow_nan=False) + "\n")
    return fig


def build(paths: list[Path], by: str = "hour", since=None, until=None, truth=None, gallery: int = 0,
          warn=log.warning) -> tuple[dict, Tally]:
    """Read every record once; (figures, the Tally they came from)."""
    counts: Counter = Counter()
    tally = Tally(by, since, until, truth, gallery)
    for rec in read_records(paths, counts, warn):
        tally.add(rec)
    if counts["malformed"] > 5:
        warn(f"{counts['malformed']} malformed lines skipped in all")
    return tally.figures(counts["malformed"]), tally


__all__ = ["Tally", "TrackTimelines", "build", "render", "summary_text", "read_records", "parse_time"]
