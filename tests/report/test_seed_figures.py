"""Figures that summarise seeds: medians never over a changing set of seeds (runs stopped early), and every seed
shown where a cell has at most FEW_SEEDS."""

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from seqbench.harness.report import data as D
from seqbench.harness.report import figures as F


def metrics(curves: dict[str, list[float]], cell=0, label="lstm", metric="eval_loss") -> pd.DataFrame:
    """Long metrics rows of one cell: run_id -> its values at steps 0, 10, 20, ... (a shorter list: it stopped)."""
    return pd.DataFrame([{"run_id": run, "step": 10 * i, "metric": metric, "value": v, "cell": cell, "task": "copy",
                          "length": 8, "label": label, "backend": "torch", "variant": ""}
                         for run, values in curves.items() for i, v in enumerate(values)])


#: three seeds: one runs to step 40, two stop early (solved) at steps 20 and 30
EARLY = {"a": [4.0, 3.0, 2.0, 1.8, 1.6], "b": [4.2, 2.0, 0.01], "c": [3.8, 2.5, 1.0, 0.02]}


def test_the_median_is_given_only_where_every_seed_has_a_value():
    bands = F.complete_bands(metrics(EARLY), "eval_loss")
    assert list(bands.step) == [0, 10, 20] and bands.complete.all() and (bands.n == 3).all()
    assert list(bands["median"]) == [4.0, 2.5, 1.0]
    assert list(bands.lo) == [3.8, 2.0, 0.01] and list(bands.hi) == [4.2, 3.0, 2.0]
    # what it replaces: at step 40 the seeds still running are the one that never solved, its median 1.6
    survivors = metrics(EARLY).groupby("step").value.median()
    assert survivors[40] == 1.6


def test_carried_on_each_stopped_seed_counts_at_its_last_value_and_the_part_is_marked():
    bands = F.complete_bands(metrics(EARLY), "eval_loss", carry=True).set_index("step")
    assert list(bands.index) == [0, 10, 20, 30, 40]
    assert list(bands.complete) == [True, True, True, False, False]
    assert bands.loc[30, "median"] == pytest.approx(np.median([1.8, 0.01, 0.02]))  # b carried from step 20
    assert bands.loc[40, "median"] == pytest.approx(np.median([1.6, 0.01, 0.02]))  # b and c carried
    assert bands.loc[40, "hi"] == 1.6 and bands.loc[40, "lo"] == 0.01


def test_cells_are_summarised_apart():
    both = pd.concat([metrics(EARLY), metrics({"d": [1.0, 0.5], "e": [2.0, 1.5]}, cell=1, label="gru")])
    bands = F.complete_bands(both, "eval_loss")
    assert list(bands[bands.cell == 1]["median"]) == [1.5, 1.0]
    assert list(bands[bands.cell == 0].step) == [0, 10, 20]  # cell 0's stop does not cut cell 1


def curve_data(report_data, frame) -> D.ReportData:
    return dataclasses.replace(report_data, metrics=frame)


def test_learning_curves_draw_the_complete_median_solid_and_the_carried_part_hollow(report_data):
    fig = F.learning_curves(curve_data(report_data, metrics(EARLY)))
    ax = next(ax for ax in fig.axes if ax.get_visible())
    colour = F.looks(report_data.labels)["lstm"].colour
    thick = [line for line in ax.lines if line.get_color() == colour and line.get_linewidth() > 1]
    full = next(line for line in thick if line.get_markerfacecolor() != "white")
    carried = next(line for line in thick if line.get_markerfacecolor() == "white")
    assert list(full.get_xdata()) == [0, 10, 20]
    assert list(carried.get_xdata()) == [20, 30, 40]  # joined at the last complete step
    assert F.CARRIED_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 0].max() == 20  # the min–max band only where every seed has a value
    plt.close(fig)


def test_the_gradient_norm_median_ends_where_the_first_seed_stopped(report_data):
    fig = F.grad_norm(curve_data(report_data, metrics(EARLY, metric="grad_norm")))
    ax = next(ax for ax in fig.axes if ax.get_visible())
    thick = [line for line in ax.lines if line.get_linewidth() > 1]
    assert len(thick) == 1 and list(thick[0].get_xdata()) == [0, 10, 20]
    assert F.CARRIED_LABEL not in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


def seed_lines(fig) -> int:
    return sum(1 for ax in fig.axes for line in ax.lines if line.get_linewidth() < 1)


@pytest.mark.parametrize("seeds, shown", [(D.FEW_SEEDS, D.FEW_SEEDS), (D.FEW_SEEDS + 1, 0)])
def test_every_seed_is_drawn_up_to_few_seeds(report_data, seeds, shown):
    assert D.FEW_SEEDS == 10
    rng = np.random.default_rng(0)
    frame = metrics({f"s{i}": list(rng.uniform(0.5, 2.0, 4)) for i in range(seeds)})
    fig = F.learning_curves(curve_data(report_data, frame))
    assert seed_lines(fig) == shown
    plt.close(fig)


def test_final_points_show_every_seed_side_by_side_from_the_set_the_summary_uses(report_data):
    evaluated = dataclasses.replace(report_data, cells=report_data.cells.assign(final_set="eval"))
    stats, seeds = F.final_frames(evaluated)
    done = report_data.runs[report_data.runs.counted & (report_data.runs.status == "completed")]
    assert len(seeds[seeds.metric == "loss"]) == done["final.eval_loss"].notna().sum()
    for cell, points in seeds[seeds.metric == "loss"].groupby("cell"):
        x = stats[(stats.cell == cell) & (stats.metric == "loss")].x.iloc[0]
        assert points.x.nunique() == len(points)  # equal values stay countable
        assert (points.x / x).between(1 / F.SEED_SPREAD - 1e-9, F.SEED_SPREAD + 1e-9).all()
    # a summary that takes the test set: the points follow it
    runs = report_data.runs.assign(**{"final.test_loss": report_data.runs["final.eval_loss"] * 2})
    tested = dataclasses.replace(report_data, runs=runs, cells=report_data.cells.assign(final_set="test"))
    _, points = F.final_frames(tested)
    merged = points[points.metric == "loss"].merge(seeds[seeds.metric == "loss"], on=["cell", "x"])
    assert np.allclose(merged.value_x, 2 * merged.value_y)
    fig = F.final_vs_length(tested)
    assert fig._suptitle.get_text().startswith("Final test loss")
    assert any(ax.get_ylabel().startswith("final test") for ax in fig.axes)
    plt.close(fig)


def test_gradient_profiles_show_each_seed(report_data):
    fig = F.grad_through_time(report_data)
    thin = [line for ax in fig.axes for line in ax.lines if line.get_linewidth() < 1]
    runs = report_data.profiles[report_data.profiles.quantity == "h"]
    longest = runs[runs.groupby("task").length.rank(method="dense", ascending=False) <= 2]
    assert len(thin) == 2 * longest.run_id.nunique()  # each run at initialisation and at the end
    plt.close(fig)


def test_length_generalisation_shows_each_seed_beside_its_models_mean(report_data):
    rng = np.random.default_rng(1)
    rows = [{"run_id": f"{label}{seed}", "cell": cell, "task": "copy", "length": 8, "label": label, "backend": "torch",
             "variant": "", "eval_length": n, "ratio": n / 8, "accuracy": rng.uniform(), "loss": 1.0}
            for cell, label in enumerate(["lstm", "transformer"]) for seed in range(4) for n in (8, 16, 32)]
    fig = F.accuracy_vs_eval_length(dataclasses.replace(report_data, lengths=pd.DataFrame(rows)))
    ax = next(ax for ax in fig.axes if ax.get_visible())
    points = np.concatenate([c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 4 * 3])
    assert len(points) == 2 * 4 * 3  # two models, four seeds, three lengths
    assert sorted(points[:, 1]) == pytest.approx(sorted(r["accuracy"] for r in rows))
    lines = {tuple(line.get_color()): line.get_xdata() for line in ax.lines if line.get_marker() not in ("None", "")}
    means = sorted(lines.values(), key=lambda x: x[0])
    assert len(means) == 2 and (means[0] < means[1]).all()  # the models side by side at each length
    for x in means:
        assert x / np.array([8, 16, 32]) == pytest.approx(np.full(3, x[0] / 8))
    plt.close(fig)
