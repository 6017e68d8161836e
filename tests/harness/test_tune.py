"""Tuned sweeps (`tune:`): selection runs on their own seeds, the choice by the eval metric in tuning.json, the final
runs with the chosen values; resume, dry run and bad input."""

import json
import shutil

import pytest

from seqbench.harness.cli import main
from seqbench.harness.config import ConfigError
from seqbench.harness.loaders import load_runs
from seqbench.harness.sweep import load_spec
from seqbench.harness.tune import choose, expand_selection
from tests.harness.test_sweep import TINY_BASE, write_spec

LRS, SELECTION_SEEDS, FINAL_SEEDS = [0.001, 0.03], [1000, 1001], [0, 1]
TUNE = {"keys": {"train.lr": LRS}, "seeds": SELECTION_SEEDS}


def tuned_spec(tmp_path, **fields):
    spec = {"grid": {"model": ["lstm"]}, "seeds": FINAL_SEEDS, "tune": TUNE, **fields}
    return write_spec(tmp_path, name="tuned", **spec)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One tiny tuned sweep, run once: lstm on adding, train.lr 0.001 or 0.03 on seeds 1000 and 1001, then the
    chosen lr on seeds 0 and 1 (6 runs)."""
    root = tmp_path_factory.mktemp("tuned")
    path = tuned_spec(root)
    assert main(["sweep", str(path), "--out", str(root / "out"), "--workers", "2"]) == 0
    return path, root / "out", root / "out" / "tuned"


def test_the_choice_is_the_best_candidate_by_the_recorded_eval_loss(swept):
    _, _, sweep_dir = swept
    tuning = json.loads((sweep_dir / "tuning.json").read_text())
    assert (tuning["metric"], tuning["goal"]) == ("eval_loss", "min")  # adding's default: its accuracy is a band
    assert tuning["keys"] == {"train.lr": LRS} and tuning["seeds"] == SELECTION_SEEDS
    [point] = tuning["points"]
    assert point["point"] == {"model": "lstm"}
    means = {}
    for candidate in point["candidates"]:
        records = [json.loads((sweep_dir / run_id / "summary.json").read_text()) for run_id in candidate["run_ids"]]
        assert [r["config"]["train"]["lr"] for r in records] == [candidate["values"]["train.lr"]] * 2
        assert sorted(r["seed"] for r in records) == SELECTION_SEEDS
        scores = [r["final"]["eval_loss"] for r in records]
        assert candidate["scores"] == pytest.approx(scores, rel=1e-12)
        means[candidate["values"]["train.lr"]] = sum(scores) / len(scores)
        assert candidate["score"] == pytest.approx(means[candidate["values"]["train.lr"]], rel=1e-12)
    assert point["chosen"] == {"train.lr": min(means, key=means.get)}


def test_the_final_runs_use_the_chosen_value_on_the_final_seeds_only(swept):
    _, _, sweep_dir = swept
    tuning = json.loads((sweep_dir / "tuning.json").read_text())
    selection = {run_id for c in tuning["points"][0]["candidates"] for run_id in c["run_ids"]}
    runs = load_runs(sweep_dir / "runs.parquet")
    assert len(runs) == 6 and set(runs.status) == {"completed"}
    finals = runs[~runs.run_id.isin(selection)]
    assert sorted(finals["config.seed"]) == FINAL_SEEDS
    assert set(runs[runs.run_id.isin(selection)]["config.seed"]) == set(SELECTION_SEEDS)
    assert set(finals["config.train.lr"]) == {tuning["points"][0]["chosen"]["train.lr"]}
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["tuned"] is True and (sweep_dir / sweep["tuning"]).is_file()
    assert set(sweep["selection_run_ids"]) == selection and set(sweep["run_ids"]) == set(runs.run_id)


def test_a_rerun_runs_nothing_again(swept, capsys):
    path, out, sweep_dir = swept
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0
    assert "6 runs - completed 0, diverged 0, failed 0, skipped 6" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}


def test_after_an_interruption_only_the_missing_runs_run(swept, tmp_path, capsys):
    path, out, _ = swept
    shutil.copytree(out, tmp_path / "out")
    sweep_dir = tmp_path / "out" / "tuned"
    tuning = json.loads((sweep_dir / "tuning.json").read_text())
    lost_selection = tuning["points"][0]["candidates"][1]["run_ids"][0]
    finals = set(json.loads((sweep_dir / "sweep.json").read_text())["run_ids"]) - set(
        json.loads((sweep_dir / "sweep.json").read_text())["selection_run_ids"])
    lost_final = sorted(finals)[0]
    for run_id in (lost_selection, lost_final):  # as if killed before they finished
        (sweep_dir / run_id / "summary.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "2"]) == 0
    assert "6 runs - completed 2, diverged 0, failed 0, skipped 4" in capsys.readouterr().out
    assert kept == {p: p.stat().st_mtime_ns for p in kept}  # the four finished runs were not touched
    assert (sweep_dir / lost_selection / "summary.json").exists() and (sweep_dir / lost_final / "summary.json").exists()
    assert json.loads((sweep_dir / "tuning.json").read_text()) == tuning  # the same records, the same choice


def test_the_dry_run_lists_the_selection_runs_and_the_finals_after_selection(tmp_path, capsys):
    path = tuned_spec(tmp_path, grid={"model": ["lstm", "gru"]})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.endswith("(selection)") for line in lines) == 2 * 2 * 2
    after = [line for line in lines if line.startswith("after selection")]
    assert [line.split()[2] for line in after] == ["model=lstm:", "model=gru:"]
    assert all("2 final runs (seeds 0, 1) with the chosen train.lr" in line for line in after)
    assert "sweep tuned: 12 runs (8 selection runs, 4 final runs, 4 of them after selection), 12 to run, 0 already " \
           "done" in "\n".join(lines)
    assert main(["sweep", str(path), "--out", str(out), "--dry-run", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["total"], listed["to_run"], listed["done"]) == (12, 12, 0)
    assert {r["phase"] for r in listed["runs"]} == {"selection"} and len(listed["runs"]) == 8
    assert {r["point"]["seed"] for r in listed["runs"]} == set(SELECTION_SEEDS)
    assert listed["after_selection"] == [{"point": {"model": m}, "seeds": FINAL_SEEDS, "runs": 2}
                                         for m in ("lstm", "gru")]
    assert not out.exists()


def test_once_selected_the_dry_run_lists_the_chosen_final_runs(swept, capsys):
    path, out, sweep_dir = swept
    chosen = json.loads((sweep_dir / "tuning.json").read_text())["points"][0]["chosen"]["train.lr"]
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    finals = [line for line in lines if line.endswith("(final)")]
    assert len(finals) == 2 and all(f"train.lr={chosen} " in line and "done (completed)" in line for line in finals)
    assert "6 runs (4 selection runs, 2 final runs), 0 to run, 6 already done" in lines[-2]


# --- the choice, from records made up for it --------------------------------------------------------------------------
def fake_records(sweep_dir, points, finals: dict):
    """Write a summary for each selection run: `finals[(point index, candidate index)]` is a list of `final` dicts,
    one per selection seed (None: the run failed)."""
    for (i, j), values in finals.items():
        for cfg, final in zip(points[i].selection[j], values):
            summary = {"run_id": cfg.run_id, "status": "failed" if final is None else "completed",
                       "task": cfg.task.name, "model": cfg.model.name, "final": final, "config": cfg.canonical()}
            (sweep_dir / cfg.run_id).mkdir(parents=True)
            (sweep_dir / cfg.run_id / "summary.json").write_text(json.dumps(summary))


def test_ties_go_to_the_first_candidate_and_incomplete_candidates_are_never_chosen(tmp_path):
    path = tuned_spec(tmp_path, base={**TINY_BASE, "task": "copy"}, grid={"model": ["lstm", "gru", "rnn"]},
                      tune={**TUNE, "keys": {"train.lr": [0.001, 0.003, 0.01]}})
    points = expand_selection(*load_spec(str(path)), {})
    acc = [{"eval_accuracy": a, "test_accuracy": 1 - a, "eval_loss": 1.0} for a in (0.5, 0.7, 0.9)]
    fake_records(tmp_path, points, {
        (0, 0): [acc[0], acc[2]], (0, 1): [acc[1], acc[1]], (0, 2): [acc[2], acc[0]],  # 0.7 each: a three-way tie
        (1, 0): [acc[0], acc[0]], (1, 1): [acc[2], None], (1, 2): [acc[1], acc[0]],  # the best seed's twin failed
        (2, 0): [None, None], (2, 1): [None, acc[2]], (2, 2): [None, None]})
    lstm, gru, rnn = choose(points, tmp_path, "eval_accuracy")
    assert [c["score"] for c in lstm["candidates"]] == pytest.approx([0.7, 0.7, 0.7])
    assert lstm["chosen"] == {"train.lr": 0.001}  # the first listed of equal scores
    assert gru["candidates"][1]["scores"] == [0.9, None] and gru["candidates"][1]["score"] is None
    assert gru["chosen"] == {"train.lr": 0.01}  # 0.6 beats 0.5; the test accuracy (higher for 0.001) is never read
    assert rnn["chosen"] is None


def test_a_point_without_a_choice_runs_no_final_runs_and_fails_the_sweep(tmp_path, capsys):
    path = tuned_spec(tmp_path, grid={"model": ["lstm", "gru"]})
    sweep_dir = tmp_path / "out" / "tuned"
    points = expand_selection(*load_spec(str(path)), {})
    good = [{"eval_loss": loss, "eval_accuracy": 0.0} for loss in (0.2, 0.4)]
    fake_records(sweep_dir, points, {(0, 0): good, (0, 1): good[::-1][:1] + [{"eval_loss": 0.1, "eval_accuracy": 0}],
                                     (1, 0): [None, None], (1, 1): [good[0], None]})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "tuning  model=gru: no candidate completed on every selection seed" in out
    runs = load_runs(sweep_dir / "runs.parquet")
    finals = runs[runs["config.seed"].isin(FINAL_SEEDS)]
    assert set(finals.model) == {"lstm"} and set(finals["config.train.lr"]) == {0.03}  # (0.4 + 0.1) / 2 < 0.3
    assert json.loads((sweep_dir / "tuning.json").read_text())["points"][1]["chosen"] is None


# --- bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tune, needle", [
    ({**TUNE, "seeds": [1000, 1]}, "tune.seeds: 1 also among the final seeds"),
    ({**TUNE, "keys": {"train.lr": []}}, "tune.keys: train.lr: empty list"),
    ({**TUNE, "keys": {}}, "tune.keys: no key to tune"),
    ({**TUNE, "keys": {"train.lrr": [0.1]}}, "tune.keys.train.lrr: not a config key of the runs at model=lstm"),
    ({**TUNE, "keys": {"model.d_model": [8]}}, "tune.keys.model.d_model: not a config key"),
    ({**TUNE, "keys": {"model": ["gru"]}}, "tune.keys.model: also set by the grid (model.name)"),
    ({**TUNE, "keys": {"seed": [1, 2]}}, "tune.keys.seed: the seeds are not tuned"),
    ({**TUNE, "metric": "test_accuracy"}, "tune.metric: 'test_accuracy': unknown metric; allowed: eval_accuracy"),
    ({**TUNE, "metric": "accuracy"}, "tune.metric: 'accuracy': unknown metric"),
    ({**TUNE, "frob": 1}, "tune.frob: unknown key; allowed: keys, seeds, metric"),
])
def test_bad_tune_sections_exit_2_in_one_line_writing_nothing(tmp_path, capsys, tune, needle):
    path = tuned_spec(tmp_path, tune=tune)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and str(path) in err and "\n" not in err
    assert not out.exists()


def test_a_tuned_key_also_in_the_grid_or_an_override_is_refused(tmp_path, capsys):
    path = tuned_spec(tmp_path, grid={"model": ["lstm"], "train.lr": [0.1, 0.2]})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "tune.keys.train.lr: also set by the grid (train.lr)" in capsys.readouterr().err
    path = tuned_spec(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "train.lr=0.1"]) == 2
    assert "train.lr=0.1: sweep tuned tunes train.lr" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_tasks_with_different_default_metrics_need_one_named(tmp_path):
    path = tuned_spec(tmp_path, grid={"model": ["lstm"], "task": ["adding", "copy"]})
    with pytest.raises(ConfigError, match=r"tune.metric: not given, .* \(adding: eval_loss, copy: eval_accuracy\)"):
        expand_selection(*load_spec(str(path)), {})
    named = tuned_spec(tmp_path, grid={"model": ["lstm"], "task": ["adding", "copy"]},
                       tune={**TUNE, "metric": "eval_loss"})
    assert len(expand_selection(*load_spec(str(named)), {})) == 2


def test_the_run_limit_counts_the_selection_runs(tmp_path, capsys):
    # 1 final seed but 400 candidates x 300 selection seeds: refused before a single point is expanded
    path = tuned_spec(tmp_path, seeds=[0], tune={"keys": {"train.lr": [i / 1e4 for i in range(1, 401)]},
                                                 "seeds": list(range(1000, 1300))})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert ("make 120,001 runs (1 points x (1 + 400 x 300)); a sweep may have at most 100,000 runs"
            in capsys.readouterr().err)
