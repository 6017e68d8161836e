"""The time-to-solve figure: finished seeds as censored data (solve_times) and their Kaplan–Meier curves drawn as
step lines, censored seeds marked, on hand-made runs and on the fixture's records."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from seqbench.harness.report import data as D
from seqbench.harness.report import figures as F
from seqbench.harness.report import survival


def run(run_id, label, status="completed", solved_step=None, steps=100, steps_done=None, diverged_step=None,
        criterion="eval_loss < 0.01", counted=True, length=8, seed=0):
    return {"run_id": run_id, "cell": {"lstm": 0, "gru": 1}[label], "task": "adding", "length": length,
            "label": label, "variant": "", "status": status, "counted": counted, "solved_step": solved_step,
            "solved_criterion": criterion, "config.train.steps": steps, "config.seed": seed,
            "steps_done": steps if steps_done is None else steps_done, "diverged_step": diverged_step}


#: lstm: solved at 20 and 60, one unsolved at its budget 100, one diverged at 30 after meeting the criterion at 10,
#: a failed and an unfinished run (left out); gru: solved at 40, one unsolved
RUNS = pd.DataFrame([
    run("a", "lstm", solved_step=20), run("b", "lstm", solved_step=60, seed=1), run("c", "lstm", seed=2),
    run("d", "lstm", status="diverged", solved_step=10, steps_done=30, diverged_step=30, seed=3),
    run("e", "lstm", status="failed", seed=4), run("f", "lstm", status="incomplete", seed=5),
    run("g", "gru", solved_step=40), run("h", "gru", seed=1),
])


def report_data(runs: pd.DataFrame) -> D.ReportData:
    """The least a ReportData needs for the time-to-solve figure: runs, and the cells' variants."""
    cells = pd.DataFrame({"variant": [""] * (runs.cell.max() + 1)})
    empty = pd.DataFrame()
    return D.ReportData(root=".", runs=runs, cells=cells, metrics=empty, profiles=empty,
                        bench=pd.DataFrame(columns=D.BENCH_COLUMNS), sweeps=[])


def test_a_solved_seed_is_an_event_the_others_are_censored_at_their_budget_or_divergence():
    times = F.solve_times(RUNS).set_index("run_id")
    assert sorted(times.index) == ["a", "b", "c", "d", "g", "h"]  # failed and unfinished runs left out
    assert times.loc[["a", "b", "g"], "solved"].all() and list(times.loc[["a", "b", "g"], "step"]) == [20, 60, 40]
    assert not times.loc["c"].solved and times.loc["c"].step == 100 and times.loc["c"].censored == "budget"
    # met the criterion at step 10, then diverged: never solved, it leaves the count where it diverged
    assert not times.loc["d"].solved and times.loc["d"].step == 30 and times.loc["d"].censored == "diverged"


def test_runs_without_a_solved_criterion_or_repeating_a_seed_are_left_out():
    runs = pd.concat([RUNS, pd.DataFrame([run("x", "lstm", criterion=None, seed=6),
                                          run("y", "lstm", solved_step=5, counted=False)])], ignore_index=True)
    assert set(F.solve_times(runs).run_id) == set(F.solve_times(RUNS).run_id)
    assert F.fraction_solved(report_data(RUNS.assign(solved_criterion=None))) is None
    assert F.fraction_solved(report_data(RUNS.drop(columns="solved_criterion"))) is None  # records before the field


def step_lines(ax):
    return [line for line in ax.lines if line.get_drawstyle() == "steps-post"]


def test_the_figure_draws_each_cells_kaplan_meier_curve_and_marks_its_censored_seeds():
    fig = F.fraction_solved(report_data(RUNS))
    ax = next(ax for ax in fig.axes if ax.get_visible() and ax.lines)
    assert ax.get_title() == "adding, T = 8: eval_loss < 0.01"
    look = F.looks(["lstm", "gru"])
    times = F.solve_times(RUNS)
    for label in ("lstm", "gru"):
        rows = times[times.label == label]
        curve = survival.km_curve(rows.step, rows.solved)
        line = next(line for line in step_lines(ax) if line.get_color() == look[label].colour)
        # the estimate at each solve, held to the last seed's step
        assert list(line.get_xdata()) == [*curve.step, rows.step.max()]
        assert list(line.get_ydata()) == pytest.approx([*curve.fraction_solved, curve.fraction_solved.iloc[-1]])
    # lstm: 1/4 solved by 20; the diverged seed leaves at 30 (risk set 2); 60 solves one of those 2 -> 1 - 3/4 * 1/2
    lstm = next(line for line in step_lines(ax) if line.get_color() == look["lstm"].colour)
    assert lstm.get_ydata()[-1] == pytest.approx(1 - 0.75 * 0.5)
    ticks = sorted((x, y) for line in ax.lines if line.get_marker() == "|" for x, y in line.get_xydata())
    crosses = [(x, y) for line in ax.lines if line.get_marker() == "x" for x, y in line.get_xydata()]
    assert np.allclose(ticks, [(100, 0.5), (100, 1 - 0.75 * 0.5)])  # gru's and lstm's unsolved seed
    assert np.allclose(crosses, [(30, 0.25)])  # where the diverged seed left the count, at the curve's height
    assert sorted(t.get_text() for t in ax.texts) == ["1/2", "2/4"]  # solved / finished
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["lstm", "gru", "unsolved, at the budget", "unsolved, diverged"]
    plt.close(fig)


def test_the_fixtures_records_give_one_panel_per_task_and_length_with_the_diverged_seed_marked(report_data):
    fig = F.fraction_solved(report_data)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert sorted(axes) == ["adding, T = 12: eval_loss < 0.01", "adding, T = 8: eval_loss < 0.01",
                            "copy, T = 12: eval_accuracy >= 0.99", "copy, T = 8: eval_accuracy >= 0.99"]
    adding = axes["adding, T = 12: eval_loss < 0.01"]
    # lstm: seeds 0 and 1 completed, seed 3 diverged (it met the criterion at step 0: still unsolved), 2 and 4 not
    # finished; transformer: seeds 0 and 1
    assert sorted(t.get_text() for t in adding.texts) == ["0/2", "0/3"]
    diverged = report_data.runs[(report_data.runs.status == "diverged")].iloc[0]
    crosses = [x for line in adding.lines if line.get_marker() == "x" for x in line.get_xdata()]
    assert crosses == [diverged.diverged_step]
    plt.close(fig)


def test_the_page_lists_the_figure_with_a_caption_on_censoring(report):
    page = (report / "index.md").read_text()
    assert "![fraction_solved](figures/fraction_solved.png)" in page
    caption = F.FIGURES["fraction_solved"].caption
    assert "Kaplan–Meier" in caption and "censored" in caption and "diverged" in caption
    assert (report / "figures" / "fraction_solved.png").stat().st_size > 0


def test_solve_times_of_a_folder_copy(copy_runs):
    """Real records edited to solve: the event step comes from the record's solved_step."""
    root = copy_runs(lambda s: s["model"] == "lstm" and s["task"] == "adding")
    summaries = sorted(root.glob("*/summary.json"))
    first = json.loads(summaries[0].read_text())
    first["solved_step"] = 3
    summaries[0].write_text(json.dumps(first))
    d = D.load(root)
    times = F.solve_times(d.runs).set_index("run_id")
    assert times.loc[first["run_id"]].solved and times.loc[first["run_id"]].step == 3
    assert (times.drop(first["run_id"]).step == 6).all()  # the others: censored at train.steps
    fig = F.fraction_solved(d)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sorted(texts) == ["0/2", "1/2"]  # T = 8 and T = 12, two seeds each
    plt.close(fig)
