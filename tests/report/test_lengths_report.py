"""The report's length generalisation: the tidy per-length results, their statistics (mean and bootstrap interval per
length, the beyond-training score of Delétang et al. with its best seed), the table, the figure and the page."""

import json

import pytest

from seqbench.harness.report import build_report, data
from seqbench.harness.report import tables
from seqbench.harness.train import execute
from tests.harness.conftest import tiny

LENGTHS = "eval.lengths=4,8,16"


@pytest.fixture(scope="module")
def lengths_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("lengths")
    for model in ("gru", "transformer"):
        for seed in (0, 1, 2):
            execute(tiny(f"model={model}", "task=copy", "task.length=4", "task.copy_len=2", f"seed={seed}", LENGTHS),
                    root / "runs", progress=False)
    # a run at another training length without eval.lengths: in the summary, not in the length results
    execute(tiny("model=gru", "task=copy", "task.length=6", "task.copy_len=2"), root / "runs", progress=False)
    return root / "runs"


def finals(root):
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/summary.json")}


def test_length_results_are_each_runs_final_values_at_each_length(lengths_results):
    d = data.load(lengths_results)
    lr = d.lengths
    assert len(lr) == 6 * 3 and set(lr.eval_length) == {4, 8, 16}
    assert sorted(lr.ratio.unique()) == [1, 2, 4] and len(lr[lr.eval_length == 4]) == 6  # listed and trained: once
    for run_id, s in finals(lengths_results).items():
        rows = lr[lr.run_id == run_id].set_index("eval_length")
        if s["config"]["task"]["length"] == 6:
            assert rows.empty
            continue
        assert rows.loc[4, "accuracy"] == s["final"][f"{rows.loc[4, 'set']}_accuracy"]  # the test set where recorded
        assert rows.loc[16, "accuracy"] == s["final"]["eval_accuracy@16"]
        assert rows.loc[8, "loss"] == s["final"]["eval_loss@8"]


def test_statistics_per_length_and_beyond_training(lengths_results):
    d = data.load(lengths_results)
    lc, score = data.length_cells(d.lengths), data.beyond_training(d.lengths)
    for cell, g in d.lengths.groupby("cell"):
        for n, at in g.groupby("eval_length"):
            row = lc[(lc.cell == cell) & (lc.eval_length == n)].iloc[0]
            assert row["mean"] == pytest.approx(at.accuracy.mean()) and row.n == 3
            assert row.lo <= row["mean"] <= row.hi
        per_seed = g[g.eval_length > 4].groupby("run_id").accuracy.mean()  # lengths 8 and 16
        assert score.loc[cell, "mean"] == pytest.approx(per_seed.mean())
        assert score.loc[cell, "best"] == per_seed.max() and score.loc[cell, "lengths"] == 2


def test_the_table_has_a_column_per_multiple_of_the_training_length(lengths_results):
    d = data.load(lengths_results)
    table = tables.lengths(d)
    assert list(table.columns) == ["model", "task", "T", "backend", "1×", "2×", "4×", "beyond T: mean",
                                   "beyond T: best seed", "protocol", "n"]
    assert set(table.protocol) == {"fixed T"}  # trained at T alone, and 8, 16 skip lengths: not Delétang's score
    assert list(table.model) == ["gru", "transformer-L1"] and set(table["T"]) == {"4"} and set(table.n) == {"3"}
    lc = data.length_cells(d.lengths)
    gru = lc[(lc.label == "gru") & (lc.eval_length == 16)].iloc[0]
    assert table.loc[0, "4×"] == tables.interval(gru["mean"], gru.lo, gru.hi)


def test_the_report_shows_the_table_and_the_figure(lengths_results, tmp_path):
    index = build_report(lengths_results, tmp_path / "report")
    html = index.read_text()
    assert "Accuracy at each length" in html and "<h3>accuracy_vs_eval_length" in html
    assert "no run evaluated at other lengths" not in html
    png = tmp_path / "report" / "figures" / "accuracy_vs_eval_length.png"
    assert png.stat().st_size > 10_000
    tex = (tmp_path / "report" / "tables" / "lengths.tex").read_text()
    assert "beyond T: best seed" in tex and "Delétang" in tex
    csv = (tmp_path / "report" / "tables" / "lengths.csv").read_text().splitlines()
    assert csv[0].startswith("run_id,cell,task,length") and len(csv) == 1 + 18


def test_without_eval_lengths_there_is_no_table_and_the_figure_says_why(tmp_path):
    execute(tiny("model=gru", "task=copy", "task.length=4", "task.copy_len=2"), tmp_path / "runs", progress=False)
    index = build_report(tmp_path / "runs", tmp_path / "report")
    html = index.read_text()
    assert "Accuracy at each length" not in html
    assert "no run evaluated at other lengths (eval.lengths)" in html
    assert not (tmp_path / "report" / "tables" / "lengths.md").exists()
    d = data.load(tmp_path / "runs")
    assert d.lengths.empty and data.beyond_training(d.lengths).empty and tables.lengths(d).empty


def test_the_score_is_named_delétangs_only_where_the_runs_followed_their_protocol(tmp_path):
    """Trained at lengths drawn up to T (task.length_dist=uniform) and evaluated at every length above T: their score.
    The same runs evaluated at every other length, or trained at T alone, are the same average, not their score."""
    common = ["model=gru", "task=copy", "task.length=4", "task.copy_len=2"]
    for seed in (0, 1):
        execute(tiny(*common, "task.length_dist=uniform", "eval.lengths=5..8", f"seed={seed}"), tmp_path / "theirs",
                progress=False)
        execute(tiny(*common, "task.length_dist=uniform", "eval.lengths=6..8:2", f"seed={seed}"), tmp_path / "gaps",
                progress=False)
        execute(tiny(*common, "eval.lengths=5..8", f"seed={seed}"), tmp_path / "fixed", progress=False)
    for folder, protocol in (("theirs", "Delétang et al."), ("gaps", "fixed T"), ("fixed", "fixed T")):
        d = data.load(tmp_path / folder)
        score = data.beyond_training(d.lengths, d.runs)
        assert list(score.deletang) == [protocol != "fixed T"], folder
        assert list(tables.lengths(d).protocol) == [protocol], folder
