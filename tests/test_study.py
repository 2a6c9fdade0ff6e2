"""`edgeemo study` on a tiny synthetic JAFFE-format set, 1 epoch (the real study runs on real JAFFE)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synth_faces import write_jaffe

pytest.importorskip("tensorflow", reason="needs the [train] extra")
from typer.testing import CliRunner  # noqa: E402

from edgeemo.cli import app  # noqa: E402
from edgeemo_convert import study  # noqa: E402

pytestmark = pytest.mark.train


def test_default_runs_are_the_studys_five():
    assert study.parse_runs(None) == (("seed-basic", "adam"), ("seed-dropout", "adam"), ("seed-best", "adam"),
                                      ("seed-best", "sgd"), ("seed-best", "nadam"))
    assert study.parse_runs("seed-best:sgd, seed-basic") == (("seed-best", "sgd"), ("seed-basic", "adam"))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        study.parse_runs("seed-best:rmsprop")
    with pytest.raises(ValueError, match="unknown recipe 'lenet'"):
        study.parse_runs("lenet:adam")


def test_study_on_synthetic_jaffe(tmp_path):
    written = write_jaffe(tmp_path / "jaffe", subjects=("KA", "KM"), takes=2, palette=False)
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "jaffe"), "--out", str(out), "--epochs", "1",
                                   "--seeds", "2", "--runs", "seed-basic:adam,seed-best:nadam"])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    result = json.loads((out / "study.json").read_text())
    assert result["images"] == len(written) == 28 and result["people"] == ["KA", "KM"]
    # 28 images are too few for the study's 64-image test split: 30% instead, stratified
    assert "too few for a 64-image test split; using 8" in res.output
    assert result["detector"] == "none" and result["options"]["faithful"]       # the study's own input
    assert [r["run"] for r in result["rows"]] == ["seed-basic-adam", "seed-best-nadam"]
    basic, best = result["rows"]
    assert basic["params"] == 37_349 and best["params"] == 7_954_391
    assert basic["study_accuracy"] == 0.469 and best["study_accuracy"] == 0.984
    for row in result["rows"]:
        for kind in ("random", "grouped"):
            accs = []
            for seed in (0, 1):
                rep = json.loads((out / row["run"] / kind / f"seed{seed}_report.json").read_text())
                assert rep["seed"] == seed and len(rep["history"]) == 1
                accs.append(rep["accuracy"])
            assert row[f"{kind}_accuracies"] == accs
            assert row[f"{kind}_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-6)
            assert row[f"{kind}_accuracy_std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-6)
            # one epoch: the best epoch is the last, and its Keras test accuracy is the report's
            assert row[f"{kind}_best_epoch_accuracies"] == pytest.approx(accs, abs=1e-4)
            assert row[f"{kind}_best_split_best_epoch"] == pytest.approx(max(accs), abs=1e-4)
        assert row["random_test_images"] == [8, 8]
        cv = json.loads((out / row["run"] / "loso" / "cv_report.json").read_text())
        assert [f["fold"] for f in cv["fold_reports"]] == ["subject KA", "subject KM"]
        assert all(f["n"] == 14 for f in cv["fold_reports"])
        accs = [f["accuracy"] for f in cv["fold_reports"]]
        assert row["loso_folds"] == 2 and row["loso_per_person"] == {"KA": accs[0], "KM": accs[1]}
        assert row["loso_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert (out / "best_loso_confusion.png").is_file()
    table = (out / "study.md").read_text()
    assert table in res.stdout                              # the table is printed, and written
    lines = table.splitlines()
    assert lines[0] == ("| run | params | study (64 test images) | ours, random split (mean ± sd, 2 splits) | "
                        "ours, the luckiest split with the epoch picked on its test images | "
                        "ours, random split without near-duplicates | ours, leave-one-subject-out (2 people) | "
                        "epochs (random split) |")
    assert lines[2].startswith(f"| seed-basic + adam | 37,349 | 46.9% | {100 * basic['random_accuracy_mean']:.1f}% ± "
                               f"{100 * basic['random_accuracy_std']:.1f} |")
    assert "| 98.4% |" in lines[3]
    assert "QUICK" not in table and "the whole photo (no face detection)" in table


def test_faithful_training_stops_when_the_training_loss_stops_falling():
    from edgeemo_convert.train import TrainConfig, loss_plateau
    cfg = TrainConfig(extra={"stop_on": "train_loss", "stop_patience": 3, "stop_min_delta": 0.01})
    state = {"epoch": 0}
    stops = []
    for epoch, loss in enumerate([2.0, 1.5, 1.0, 0.995, 0.99, 0.992, 0.5, 0.499, 0.498, 0.497], 1):
        state["epoch"] = epoch
        stops.append(loss_plateau(cfg, state, {"loss": loss}))
    # 1.0 at epoch 3, then no fall of 1% for 3 epochs: stop at epoch 6, before the drop at epoch 7
    assert stops[:5] == [None] * 5 and "has not fallen by 1% for 3 epochs" in stops[5]
    assert loss_plateau(TrainConfig(), {"epoch": 9}, {"loss": 1.0}) is None       # off unless asked
    # a network on its starting plateau (the loss near ln 7 for 12 epochs) has not started falling: the rule
    # waits until the loss is below half its first epoch's (seed-dropout on one JAFFE split did exactly this)
    cfg.extra["stop_armed_below"] = 0.5
    state, stops = {"epoch": 0}, []
    plateau = [1.97, 1.945, 1.946, 1.945, 1.944, 1.945, 1.94, 1.939, 1.939, 1.935, 1.938, 1.928, 1.9, 1.88]
    for epoch, loss in enumerate(plateau + [1.6, 1.2, 0.9, 0.9, 0.9, 0.9], 1):
        state["epoch"] = epoch
        stops.append(loss_plateau(cfg, state, {"loss": loss}))
    assert stops[:-1] == [None] * (len(stops) - 1) and stops[-1] is not None   # armed at 0.9, stopped 3 later
    del cfg.extra["stop_armed_below"]
    state, stops = {"epoch": 0}, []
    for epoch, loss in enumerate(plateau, 1):
        state["epoch"] = epoch
        stops.append(loss_plateau(cfg, state, {"loss": loss}))
    assert next(i for i, s in enumerate(stops, 1) if s) == 5          # without it: stopped on the plateau


def test_the_split_without_near_duplicates_keeps_each_persons_expression_on_one_side():
    from edgeemo_convert import prepare
    people = [p for p in "ABCDEFGHIJ" for _ in range(7 * 3)]
    labels = np.array([k for _ in "ABCDEFGHIJ" for k in range(7) for _ in range(3)])
    groups = list(zip(people, labels.tolist()))
    for seed in range(3):
        tr, te = prepare.grouped_count_split(labels, groups, 64, seed)
        assert 50 <= len(te) <= 80 and len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(labels)
        assert not {groups[i] for i in tr} & {groups[i] for i in te}
        assert set(labels[te]) == set(range(7)) and set(labels[tr]) == set(range(7))
    a, b = (prepare.grouped_count_split(labels, groups, 64, s)[1] for s in (0, 1))
    assert not np.array_equal(a, b)


def test_study_errors_speak_to_the_user(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no JAFFE-named files" in res.output and "empty" in res.output
    write_jaffe(tmp_path / "one", subjects=("KA",), takes=1, palette=False)
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "o"),
                                   "--detector", "none", "--epochs", "1"])
    assert res.exit_code == 1 and "needs at least 2 people" in res.output and "--no-loso" in res.output
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "one"), "--runs", "seed-best:rmsprop"])
    assert res.exit_code == 1 and "unknown optimizer 'rmsprop'" in res.output


def test_quick_study_caps_epochs_and_people(tmp_path):
    write_jaffe(tmp_path / "jaffe", subjects=("KA", "KL", "KM", "KR"), takes=1, palette=False)
    opts = study.StudyOptions(epochs=30, quick=True, runs=(("seed-basic", "adam"),), input_size=32)
    result = study.run_study(tmp_path / "jaffe", tmp_path / "out", opts, echo=lambda s: None)
    row = result["rows"][0]
    assert result["options"]["epochs_run"] == study.QUICK_EPOCHS == 2 and result["options"]["seeds_run"] == [0, 1]
    rep = json.loads((tmp_path / "out" / "seed-basic-adam" / "random" / "seed0_report.json").read_text())
    assert len(rep["history"]) <= 2
    assert row["random_best_epoch_accuracies"][0] == max(e["val_accuracy"] for e in rep["history"])
    assert row["loso_folds"] == study.QUICK_FOLDS == 3 and list(row["loso_per_person"]) == ["KA", "KL", "KM"]
    assert "QUICK RUN (2 epochs, 2 splits, 3 people left out)" in (tmp_path / "out" / "study.md").read_text()


def test_an_interrupted_study_resumes_with_the_trainings_it_finished(tmp_path):
    write_jaffe(tmp_path / "jaffe", subjects=("KA", "KL", "KM"), takes=1, palette=False)
    opts = study.StudyOptions(epochs=1, seeds=2, runs=(("seed-basic", "adam"),), input_size=32)
    first = study.run_study(tmp_path / "jaffe", tmp_path / "out", opts, echo=lambda s: None)
    # an interruption: the last random-split training and the last LOSO fold never finished, one report is torn
    run = tmp_path / "out" / "seed-basic-adam"
    (run / "random" / "seed1_report.json").unlink()
    (run / "loso" / "folds" / "fold02.json").unlink()
    torn = run / "grouped" / "seed0_report.json"
    torn.write_text(torn.read_text()[:100])
    said = []
    again = study.run_study(tmp_path / "jaffe", tmp_path / "out",
                            study.StudyOptions(**{**opts.__dict__, "resume": True}), echo=said.append)
    reused = [s for s in said if "reused from" in s]
    assert len(reused) == 4, said                  # random seed 0, grouped seed 1, LOSO folds 0 and 1
    assert not any("seed1_report" in s for s in reused if "random" in s)
    assert (run / "random" / "seed1_report.json").is_file() and json.loads(torn.read_text())["key"]
    a, b = first["rows"][0], again["rows"][0]
    assert a["random_accuracies"][0] == b["random_accuracies"][0]
    assert a["grouped_accuracies"][1] == b["grouped_accuracies"][1]
    assert [a["loso_per_person"][p] for p in ("KA", "KL")] == [b["loso_per_person"][p] for p in ("KA", "KL")]
    assert set(b["loso_per_person"]) == {"KA", "KL", "KM"}
    # other settings: nothing is reused
    said.clear()
    study.run_study(tmp_path / "jaffe", tmp_path / "out",
                    study.StudyOptions(**{**opts.__dict__, "resume": True, "epochs": 2}), echo=said.append)
    assert not [s for s in said if "reused from" in s] and any("after 2 epochs" in s or "after 1 epochs" in s
                                                               for s in said)
