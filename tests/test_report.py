"""`edgeemo report`: figures that match a direct count of the records, accuracy against folder names equal to
`edgeemo evaluate`'s, the page opened in a real headless chromium (Debian's package; `.ci/run` installs it),
and the awkward inputs: a malformed line, an empty file, two models, records without timestamps."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeemo.cli import app
from edgeemo.labels import LABELS

pytest.importorskip("matplotlib", reason="needs the [report] extra")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scene_results(tmp_path_factory, data_dir, device_model, yunet_model):
    out = tmp_path_factory.mktemp("scenes")
    res = run("classify", data_dir / "scenes", "--model", device_model, "--detector", "yunet", "--detector-model",
              yunet_model, "--out", out)
    assert res.exit_code == 0, res.output
    return out / "results.jsonl"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, data_dir):
    """A class-folder tree of FER2013 val/ faces: 12 of each emotion."""
    root = tmp_path_factory.mktemp("labelled") / "faces"
    for lab in LABELS:
        (root / lab).mkdir(parents=True)
        for p in sorted((data_dir / "fer2013" / "val" / lab).glob("*.jpg"))[:12]:
            shutil.copy(p, root / lab / p.name)
    return root


def test_the_figures_match_a_direct_count_of_the_records(scene_results, tmp_path):
    res = run("report", scene_results, "--out", tmp_path / "r.html", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    fig = json.loads((tmp_path / "r.json").read_text())
    recs = records(scene_results)
    faces = [f for r in recs for f in r["faces"]]
    status = Counter(r["status"] for r in recs)
    assert fig["images"] == len(recs) and fig["faces"] == len(faces) > 20
    assert fig["status"] == dict(status) and fig["unreadable"] == status["unreadable"] >= 1
    assert fig["labels"] == {lab: sum(f["label"] == lab for f in faces) for lab in LABELS}
    assert fig["faces_below_0_5"] == sum(f["confidence"] < 0.5 for f in faces)
    assert sum(fig["faces_per_image"].values()) == status["ok"] + status["no_face"]
    assert sum(fig["face_sizes"].values()) == len(faces)
    assert sum(sum(c.values()) for c in fig["timeline"].values()) == len(faces)
    assert [e["file"] for e in fig["first_errors"]] == [r["file"] for r in recs if r["status"] != "ok"
                                                        and r["status"] != "no_face"]
    assert fig["models"] == {recs[0]["model"]["name"]: len(recs)}
    # the terminal summary says the same
    assert f"{len(recs)} images, {len(faces)} faces" in res.stdout


@pytest.mark.train
def test_truth_from_folders_gives_the_accuracy_of_edgeemo_evaluate(labelled, tmp_path, device_model):
    pytest.importorskip("tensorflow", reason="`edgeemo evaluate` needs the [train] extra")
    res = run("classify", labelled, "--recursive", "--model", device_model, "--detector", "none", "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    res = run("report", tmp_path / "c" / "results.jsonl", "--truth", "folders", "--out", tmp_path / "r.html",
              "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    truth = json.loads((tmp_path / "r.json").read_text())["truth"]
    ev = run("evaluate", device_model, "--data", labelled, "--dataset", "folder", "--detector", "none",
             "--out", tmp_path / "ev")
    assert ev.exit_code == 0, ev.output
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert truth["faces"] == 12 * len(LABELS)
    assert truth["accuracy"] == pytest.approx(rep["accuracy"], abs=1e-4)
    assert truth["macro_f1"] == pytest.approx(rep["macro_f1"], abs=1e-3)
    assert "Confusion matrix" in (tmp_path / "r.html").read_text()


def test_malformed_lines_empty_files_two_models_and_no_timestamps(scene_results, tmp_path):
    recs = records(scene_results)
    mixed = tmp_path / "mixed.jsonl"
    other = [{**r, "model": {"name": "other-model", "sha256": "x"}} for r in recs[:3]]
    untimed = [{k: v for k, v in r.items() if k != "time"} for r in recs[:2]]
    with open(mixed, "w") as fh:
        for r in recs + other + untimed:
            fh.write(json.dumps(r) + "\n")
        fh.write('{"file": "torn.jpg", "sha256": "ab')          # a torn last line
        fh.write("\n[1, 2, 3]\nnot json at all\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    res = run("report", mixed, empty, "--out", tmp_path / "r.html", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    fig = json.loads((tmp_path / "r.json").read_text())
    assert fig["images"] == len(recs) + 5 and fig["malformed_lines"] == 3
    assert fig["models"] == {recs[0]["model"]["name"]: len(recs) + 2, "other-model": 3}
    assert fig["records_without_time"] == 2
    assert "not a result record" in res.output
    only_empty = run("report", empty, "--out", tmp_path / "e.html", "--json", tmp_path / "e.json")
    assert only_empty.exit_code == 0 and json.loads((tmp_path / "e.json").read_text())["images"] == 0
    assert "No faces." in (tmp_path / "e.html").read_text()
    no_time = tmp_path / "untimed.jsonl"
    no_time.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "time"}) + "\n" for r in recs))
    res = run("report", no_time, "--out", tmp_path / "u.html")
    assert res.exit_code == 0 and "No timestamps: no timeline." in (tmp_path / "u.html").read_text()
    bad = run("report", mixed, "--since", "yesterday", "--out", tmp_path / "x.html")
    assert bad.exit_code == 2 and "not an ISO 8601" in bad.output


def test_since_until_and_by_day_and_devices(scene_results, tmp_path):
    recs = records(scene_results)
    fleet = tmp_path / "fleet.jsonl"
    with open(fleet, "w") as fh:
        for day, dev in (("2026-11-01", "kitchen"), ("2026-11-02", "hall"), ("2026-11-03", "hall")):
            for r in recs:
                fh.write(json.dumps({**r, "time": f"{day}T10:00:00Z", "device": dev}) + "\n")
    res = run("report", fleet, "--since", "2026-11-02", "--until", "2026-11-03", "--by", "day", "--out",
              tmp_path / "r.html", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    fig = json.loads((tmp_path / "r.json").read_text())
    assert fig["images"] == len(recs) and fig["outside_time_window"] == 2 * len(recs)
    assert list(fig["timeline"]) == ["2026-11-02"] and list(fig["sources"]) == ["device hall"]


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium; .ci/run "
                                                               "installs it)")


def chromium(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", f"--user-data-dir={cwd / 'profile'}",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def colored_pixels(png: Path) -> int:
    import cv2
    img = cv2.imread(str(png))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    return int(((hsv[..., 1] > 80) & (hsv[..., 2] > 60)).sum())


@needs_chromium
def test_the_page_renders_in_a_real_browser_with_its_charts_and_hostile_names_as_text(scene_results, tmp_path):
    recs = records(scene_results)
    hostile = "<img src=x onerror=\"document.title='PWNED'\"><script>document.title='PWNED'</script>.jpg"
    evil = {**recs[0], "file": f"/photos/{hostile}", "status": "error", "error": f"{hostile}: broken", "faces": []}
    src = tmp_path / "results.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs + [evil]))
    page = tmp_path / "report.html"
    assert run("report", src, "--out", page).exit_code == 0
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>edgeemo report" in dom.stdout and "PWNED" not in re.search(r"<title>.*?</title>", dom.stdout).group(0)
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;.jpg" in dom.stdout      # shown as text
    assert "<script>" not in dom.stdout
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    for chart in ("emotions", "timeline", "confidence", "faces-per-image", "sizes"):
        assert re.search(rf'id="chart-{chart}"><svg', dom.stdout), chart
    # the charts are drawn: a screenshot of the page with only the charts visible has colour, one with the
    # charts hidden has none
    only = tmp_path / "only.html"
    only.write_text(page.read_text().replace("</style>", "body *{visibility:hidden}.chart,.chart *{visibility:visible}</style>"))
    none = tmp_path / "none.html"
    none.write_text(page.read_text().replace("</style>", ".chart{visibility:hidden}</style>"))
    for html_file in (only, none):
        shot = chromium(f"--screenshot={html_file.with_suffix('.png')}", "--window-size=1200,3200", html_file.as_uri(),
                        cwd=tmp_path)
        assert shot.returncode == 0 and html_file.with_suffix(".png").exists(), shot.stderr[-2000:]
    assert colored_pixels(only.with_suffix(".png")) > 20_000
    assert colored_pixels(none.with_suffix(".png")) < 500


def test_a_missing_extra_is_named(tmp_path, scene_results):
    import subprocess as sp
    import sys
    code = ("import sys, builtins\nreal = builtins.__import__\n"
            "def block(name, *a, **k):\n    if name.startswith('matplotlib'): raise ImportError(name)\n"
            "    return real(name, *a, **k)\nbuiltins.__import__ = block\n"
            "from edgeemo.cli import main\nsys.argv = ['edgeemo', 'report', sys.argv[1], '--out', sys.argv[2]]\nmain()\n")
    res = sp.run([sys.executable, "-c", code, str(scene_results), str(tmp_path / "r.html")], capture_output=True,
                 text=True, timeout=60)
    assert res.returncode != 0 and "pip install 'edgeemo[report]'" in res.stderr
    assert not (tmp_path / "r.html").exists()





def test_gallery_shows_the_least_confident_faces_only_when_asked(scene_results, tmp_path):
    recs = records(scene_results)
    confs = sorted(f["confidence"] for r in recs for f in r["faces"])
    assert run("report", scene_results, "--out", tmp_path / "plain.html").exit_code == 0
    assert "data:image/jpeg" not in (tmp_path / "plain.html").read_text()         # off by default: privacy
    assert run("report", scene_results, "--gallery", 3, "--out", tmp_path / "g.html").exit_code == 0
    page = (tmp_path / "g.html").read_text()
    thumbs = re.findall(r'<img alt="(\w+) (\d\.\d\d): ', page)
    assert len(thumbs) == 3 and page.count("data:image/jpeg;base64,") == 3
    assert [float(c) for _, c in thumbs] == [round(c, 2) for c in confs[:3]]


def test_odd_values_are_refused_line_by_line_and_a_mathtext_device_name_is_shown_as_text(scene_results, tmp_path):
    """Issue 31: NaN, infinities, 1e309, negative, string or list confidences and string or number boxes each
    took the page down, -0.5 went into a histogram bin, and a device named $\\foo$ crashed matplotlib."""
    recs = records(scene_results)
    ok = next(r for r in recs if r["faces"])
    face = ok["faces"][0]
    odd_confidences = ["NaN", "Infinity", "-Infinity", "1e309", "-0.5", '"0.5"', "[0.5]"]
    lines = [json.dumps(r) for r in recs]
    for v in odd_confidences:
        lines.append(json.dumps({**ok, "faces": [{**face, "confidence": "@"}]}).replace('"@"', v))
    for box in ('"1,2,3,4"', "5", "[1, 2, NaN, 4]"):
        lines.append(json.dumps({**ok, "faces": [{**face, "box": "@"}]}).replace('"@"', box))
    devices = ["$\\foo$", "$x^2$ \\\\ {", "<b>kitchen</b>"]
    for d in devices:
        lines.append(json.dumps({**ok, "device": d}))
    src = tmp_path / "results.jsonl"
    src.write_text("\n".join(lines) + "\n")
    page, js = tmp_path / "report.html", tmp_path / "report.json"
    res = run("report", src, "--out", page, "--json", js)
    assert res.exit_code == 0, res.output
    fig = json.loads(js.read_text())
    assert fig["malformed_lines"] == len(odd_confidences) + 3
    assert f"line {len(recs) + 1}: not a result record" in res.output
    n_faces = sum(len(r["faces"]) for r in recs) + len(devices) * len(ok["faces"])
    assert sum(fig["labels"].values()) == n_faces                 # no odd face counted anywhere
    assert set(fig["sources"]) >= {f"device {d}" for d in devices}
    if CHROMIUM:
        dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
        assert dom.returncode == 0 and "$\\foo$" in dom.stdout and "<b>kitchen</b>" not in dom.stdout


def test_any_lines_give_a_page_or_a_clear_error_never_a_traceback(tmp_path_factory):
    """Hypothesis over what a results file may hold: report.write writes a page for every file, counting the
    lines it cannot use, and its JSON figures are strict."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edgeemo import report
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(), st.text(max_size=12))
    face = st.fixed_dictionaries({"box": st.lists(st.integers(-5, 500), min_size=4, max_size=4) | scalars,
                                  "label": st.sampled_from(LABELS) | scalars,
                                  "confidence": st.floats(0, 1) | scalars,
                                  "score": st.floats(0, 1) | scalars,
                                  "track": st.integers(0, 4) | scalars,
                                  "track_label": st.sampled_from(LABELS) | scalars})
    rec = st.fixed_dictionaries({"file": st.text(max_size=20) | scalars,
                                 "frame": st.integers(0, 50) | scalars,
                                 "frame_time": st.floats(0, 100) | scalars,
                                 "camera": st.sampled_from(["0", "picamera2"]) | scalars,
                                 "status": st.sampled_from(["ok", "no_face", "error", "odd"]),
                                 "faces": st.lists(face, max_size=3) | scalars,
                                 "time": st.sampled_from(["2026-12-06T10:00:00.000+00:00", "yesterday"]) | scalars,
                                 "device": st.text(max_size=10) | scalars})
    line = st.one_of(rec.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(line, max_size=12))
    def check(lines):
        folder = tmp_path_factory.mktemp("fuzz")
        src = folder / "results.jsonl"
        src.write_bytes(b"\n".join(lines))
        fig = report.write([src], folder / "report.html", as_json=folder / "figures.json")
        assert (folder / "report.html").read_text().startswith("<!DOCTYPE html>")
        json.loads((folder / "figures.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert fig["malformed_lines"] <= len([x for x in b"\n".join(lines).splitlines() if x.strip()])
    check()


@pytest.fixture(scope="module")
def video_results(tmp_path_factory, data_dir, device_model, yunet_model):
    """`edgeemo classify` on a generated group video (pan across a real photo, one face hidden a while)."""
    import cv2
    from synth_video import make
    tmp = tmp_path_factory.mktemp("video")
    video = make(tmp / "group.avi", cv2.imread(str(data_dir / "scenes" / "2008_002079.jpg")), frames=40, pan=5,
                 hide={0: range(10, 14)}).path
    res = run("classify", video, "--model", device_model, "--detector", "yunet", "--detector-model", yunet_model,
              "--out", tmp / "out")
    assert res.exit_code == 0, res.output
    return tmp / "out" / "results.jsonl"


def test_a_timeline_per_person_matches_the_tracks_of_the_records(video_results, tmp_path):
    """Issue 32: `edgeemo report` draws one row per face track (person) of each video or camera run, its
    steady emotion over time; the figures match a direct reading of the records, and a camera whose frame
    numbers go back (a restart) is a second run, not the same people."""
    recs = records(video_results)
    camera = [{**r, "camera": "0", "file": None, "frame_time": f"2026-12-07T10:00:{r['frame'] % 60:02d}.000+00:00"}
              for r in recs[:10]]
    src = tmp_path / "results.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs + camera + camera))   # the camera restarted once
    page, figs = tmp_path / "report.html", tmp_path / "report.json"
    res = run("report", src, "--out", page, "--json", figs)
    assert res.exit_code == 0, res.output
    fig = json.loads(figs.read_text())["tracks"]
    runs = {(r["source"], r["run"]): r for r in fig["runs"]}
    assert set(runs) == {(recs[0]["file"], 1), ("camera 0", 1), ("camera 0", 2)}
    video = runs[(recs[0]["file"], 1)]
    seen: dict[int, list] = {}
    for r in recs:
        for f in r["faces"]:
            seen.setdefault(f["track"], []).append((r["frame_time"], f["track_label"]))
    assert {t["track"] for t in video["tracks"]} == set(seen) and len(seen) >= 4
    t0 = recs[0]["frame_time"]
    for t in video["tracks"]:
        steady = seen[t["track"]]
        assert t["first"] == pytest.approx(steady[0][0] - t0, abs=1e-3)
        assert t["last"] == pytest.approx(steady[-1][0] - t0, abs=1e-3)
        assert t["changes"] == sum(a[1] != b[1] for a, b in zip(steady, steady[1:]))
        assert [s[2] for s in t["segments"]][0] == steady[0][1]
    assert fig["tracks"] == len(seen) + 2 * len({f["track"] for r in camera for f in r["faces"]})
    text = page.read_text()
    assert text.count("id=chart-tracks-") == 3 and "People over time" in text
    assert "face tracks in 3 videos or camera runs" in res.output
    assert [t["track"] for t in video["tracks"]] == sorted(seen)


@needs_chromium
def test_the_track_timelines_render_in_a_real_browser(video_results, tmp_path):
    page = tmp_path / "report.html"
    assert run("report", video_results, "--out", page).exit_code == 0
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'id="chart-tracks-1"><svg', dom.stdout) and ">track 1<" in dom.stdout
