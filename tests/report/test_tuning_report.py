"""Expected best selection score vs tuning trials (Dodge et al. 2019) from tuning.json records."""

import itertools
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from seqbench.harness.errors import RecordError
from seqbench.harness.report import build_report
from seqbench.harness.report import data as D
from seqbench.harness.report import figures as F
from seqbench.harness.report import tuning


def by_enumeration(scores, k):
    """Mean and variance of the best of k draws over every one of the N^k equally likely draws: the hand calculation."""
    best = [max(draw) for draw in itertools.product(scores, repeat=k)]
    return np.mean(best), np.var(best)


def test_the_expected_best_of_one_trial_is_the_mean_and_of_many_the_best():
    mean, var = tuning.expected_best([0.1, 0.5, 0.9], [1, 2, 1000])
    assert mean[0] == pytest.approx(0.5) and var[0] == pytest.approx(np.var([0.1, 0.5, 0.9]))
    # k = 2: P(best = 0.1) = 1/9, P(0.5) = 4/9 - 1/9, P(0.9) = 1 - 4/9
    assert mean[1] == pytest.approx((0.1 * 1 + 0.5 * 3 + 0.9 * 5) / 9)
    assert mean[2] == pytest.approx(0.9) and var[2] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("scores", [[0.1, 0.5, 0.9], [0.3, 0.3, 0.7, 0.2], [0.5]], ids=["three", "tied", "one"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_the_formula_matches_every_draw_enumerated(scores, k):
    mean, var = tuning.expected_best(scores, k)
    assert (mean[0], var[0]) == pytest.approx(by_enumeration(scores, k))


def test_variance_is_never_negative_and_the_expectation_never_falls_with_more_trials():
    rng = np.random.default_rng(0)
    for scores in [rng.uniform(size=7), np.full(4, 0.37), rng.normal(size=30)]:
        mean, var = tuning.expected_best(scores, np.arange(1, 60))
        assert (var >= 0).all()
        assert (np.diff(mean) >= -1e-12).all()
        assert mean[-1] <= scores.max() + 1e-12


def test_for_a_loss_the_expected_lowest():
    mean, var = tuning.expected_best([0.1, 0.5, 0.9], [1, 2, 1000], goal="min")
    up, up_var = tuning.expected_best([-0.1, -0.5, -0.9], [1, 2, 1000])
    assert np.allclose(mean, -up) and np.allclose(var, up_var)
    assert mean[2] == pytest.approx(0.1) and (np.diff(mean) <= 0).all()


def test_no_scores_or_a_bad_goal_are_refused():
    with pytest.raises(ValueError, match="finite scores"):
        tuning.expected_best([], 1)
    with pytest.raises(ValueError, match="goal"):
        tuning.expected_best([0.5], 1, goal="best")


def candidate(lr, scores, run_ids=()):
    valued = [s for s in scores if s is not None]
    return {"values": {"train.lr": lr}, "run_ids": list(run_ids), "scores": scores,
            "score": float(np.mean(valued)) if valued else None}


def tuning_record(runs, metric="eval_accuracy", goal="max") -> dict:
    """One point per (model, task, length) of `runs`: three learning rates, the last never scored for the lstm."""
    points = []
    for (model, task, length), g in runs.groupby(["config.model.name", "task", "length"]):
        ids = list(g.run_id)
        scores = {"lstm": [[0.2, 0.3], [0.6, 0.7], [None, None]], "transformer": [[0.1, 0.1], [0.2, 0.3], [0.9, 0.8]]}
        cands = [candidate(lr, s, ids[:1]) for lr, s in zip([0.001, 0.003, 0.01], scores[model])]
        points.append({"point": {"task": task, "task.length": int(length), "model": model}, "candidates": cands,
                       "chosen": {"train.lr": 0.003}})
    return {"metric": metric, "goal": goal, "keys": {"train.lr": [0.001, 0.003, 0.01]}, "seeds": [1000, 1001],
            "points": points}


@pytest.fixture
def tuned(copy_runs):
    """A results folder with the fixture's T = 8 copy runs and a hand-made tuning.json of a sweep `tuned`."""
    root = copy_runs(lambda s: s["task"] == "copy" and s["config"]["task"]["length"] == 8)
    (root / "tuned").mkdir()
    (root / "tuned" / "tuning.json").write_text(json.dumps(tuning_record(D.load(root).runs)))
    return root


def test_curves_are_placed_by_the_candidates_records_and_leave_unscored_candidates_out(tuned):
    d = D.load(tuned)
    curves = tuning.curves(tuning.load(tuned), d.runs)
    assert set(zip(curves.task, curves.length, curves.label)) == {("copy", 8, "lstm"), ("copy", 8, "transformer")}
    lstm = curves[curves.label == "lstm"]
    assert list(lstm.k) == [1, 2] and (lstm.scored == 2).all() and (lstm.candidates == 3).all()
    assert lstm["mean"].iloc[0] == pytest.approx(np.mean([0.25, 0.65]))
    assert (curves.lo <= curves["mean"]).all() and (curves["mean"] <= curves.hi).all()
    top = curves[curves.label == "transformer"]
    assert top.hi.max() <= 0.85 + 1e-12  # the band stays inside the scores' range


def test_the_figure_is_written_with_a_panel_per_task_and_length_and_a_line_per_model(tuned, tmp_path):
    d = D.load(tuned)
    fig = F.expected_best(d)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["copy, T = 8"]
    look = F.looks(d.labels)
    drawn = {line.get_color() for line in axes[0].lines}
    assert drawn == {look["lstm"].colour, look["transformer"].colour}
    assert "expected highest eval_accuracy" == axes[0].get_ylabel()
    assert "N = 2–3 candidates (1 unscored left out), 2 selection seeds each" in axes[0].get_xlabel()
    png, pdf = F.save(fig, tmp_path / "figures", "expected_best")
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    assert "expected" in png.name


def test_without_a_tuning_record_no_figure(report_data):
    assert F.expected_best(report_data) is None


def test_the_page_lists_the_figure_with_its_caption(tuned, tmp_path):
    index = build_report(tuned, tmp_path / "out")
    page = index.with_suffix(".md").read_text()
    assert "![expected_best](figures/expected_best.png)" in page
    assert "Dodge et al. 2019" in page and "±1 standard deviation" in page
    assert (tmp_path / "out" / "figures" / "expected_best.png").exists()


@pytest.mark.parametrize("doc, says", [
    ([1, 2], "expected a JSON object, got a JSON array"),
    ({"metric": "eval_accuracy"}, "`points` must be a list"),
    ({"goal": "best", "points": []}, "`goal` is 'best'"),
    ({"points": [{"point": {}, "candidates": [{"score": "high"}]}]}, "points[0].candidates[0].score is 'high'"),
    ({"points": [{"point": {}, "candidates": 3}]}, "points[0] must be an object"),
], ids=["array", "no-points", "goal", "score", "candidates"])
def test_a_bad_tuning_record_is_one_line_naming_the_file_and_nothing_is_written(tuned, tmp_path, doc, says):
    path = tuned / "tuned" / "tuning.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError) as e:
        tuning.load(tuned)
    assert str(e.value).startswith(f"{path}: not a tuning record") and says in str(e.value)
    assert "\n" not in str(e.value)


def test_a_bad_tuning_record_stops_the_report_before_anything_is_written(tuned, tmp_path):
    (tuned / "tuned" / "tuning.json").write_text("[]")
    with pytest.raises(RecordError):
        build_report(tuned, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    plt.close("all")


def test_a_candidate_is_scored_as_the_sweep_scored_it():
    # the sweep gives no score unless every selection run completed: such a candidate could not be chosen either
    assert np.isnan(tuning._score({"scores": [0.5, None], "score": None}))
    assert tuning._score({"scores": [0.5, 0.7], "score": 0.6}) == 0.6
    assert tuning._score({"scores": [0.5, 0.7]}) == pytest.approx(0.6)  # a record without the field
    assert np.isnan(tuning._score({"scores": [0.5, None]}))


# --- a tuned sweep's report: selection runs out of the tables, tuned cells marked and compared -------------------
@pytest.fixture(scope="module")
def tuned_sweep(tmp_path_factory):
    """A tiny tuned sweep of two models: train.lr 0.001 or 0.03 on selection seeds 1000 and 1001, then the chosen
    lr per model on seeds 0 and 1 (12 runs)."""
    from seqbench.harness.cli import main
    from tests.harness.test_sweep import write_spec

    root = tmp_path_factory.mktemp("tuned-report")
    spec = write_spec(root, name="tuned", grid={"model": ["rnn", "lstm"]}, seeds=[0, 1],
                      tune={"keys": {"train.lr": [0.001, 0.03]}, "seeds": [1000, 1001]})
    assert main(["sweep", str(spec), "--out", str(root / "out"), "--workers", "2"]) == 0
    return root / "out" / "tuned"


def test_selection_runs_are_kept_out_of_the_tables_and_tuned_cells_are_marked(tuned_sweep):
    d = D.load(tuned_sweep)
    doc = json.loads((tuned_sweep / "tuning.json").read_text())
    selection = {i for p in doc["points"] for c in p["candidates"] for i in c["run_ids"]}
    assert len(selection) == 8 and set(d.selection.run_id) == selection
    assert len(d.runs) == 4 and not set(d.runs.run_id) & selection
    assert "tuned" in d.keys and "lr" not in d.keys  # the lr each model chose is a setting of its cell
    assert list(d.cells.label) == ["rnn", "lstm"] and set(d.cells.tuned) == {"lr"}
    chosen = {p["point"]["model"]: p["chosen"]["train.lr"] for p in doc["points"]}
    assert dict(zip(d.cells.label, d.cells.lr)) == chosen
    assert set(d.cells.final_set) == {"test"}  # final numbers of tuned cells: the held-out test set
    assert set(zip(d.comparisons.label_a, d.comparisons.label_b)) == {("rnn", "lstm")}
    assert len(d.recorded) == 12


def test_models_that_chose_different_values_are_still_compared(tuned_sweep):
    d = D.load(tuned_sweep)
    runs = d.runs.drop(columns=[c for c in d.runs if not (c.startswith(("config.", "final.")) or c in (
        "run_id", "status", "path", "kernel_path", "solved_step", "steps_done", "diverged_step"))])
    lstm = runs["config.model.name"] == "lstm"
    runs.loc[lstm, "config.train.lr"] = 0.5  # as if the lstm had chosen another value than the rnn
    tuned = pd.Series("train.lr", index=runs.index)
    out, keys = D.add_keys(runs, tuned)
    assert "tuned" in keys and "lr" not in keys
    untuned, keys = D.add_keys(runs)
    assert "lr" in keys and "tuned" not in keys  # without the tuning record, two lrs are two settings


def test_the_page_says_what_the_selection_runs_did(tuned_sweep, tmp_path):
    page = build_report(tuned_sweep, tmp_path / "out").with_suffix(".md").read_text()
    assert "8 selection runs of tuned sweeps are not in the tables" in page
    assert "| tuned |" in page
    assert (tmp_path / "out" / "figures" / "expected_best.png").exists()
