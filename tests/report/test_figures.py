import dataclasses
import itertools
import json
import math

import matplotlib.pyplot as plt
import matplotlib.style
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from seqbench.harness.report import data as D
from seqbench.harness.report import figures as F

from .test_data import BENCH

VARIANTS = ["rnn-relu", "lstm-L2", "gru-L3", "rnn-L2"]  # four labels that hash to four different spare colours


def test_each_model_has_a_fixed_colour_and_marker_and_variants_a_stable_one():
    few, many = F.looks(["transformer", "rnn"]), F.looks(["gru", "lstm-L2", "rnn", "lstm", "transformer"])
    assert few["rnn"] == many["rnn"] == (to_rgb(F.MODEL_COLOURS[0]), "o")
    assert few["transformer"] == many["transformer"] == (to_rgb(F.MODEL_COLOURS[3]), "^")
    assert many["lstm-L2"] == F.looks(["lstm-L2"])["lstm-L2"]
    assert many["lstm-L2"].colour not in map(to_rgb, F.MODEL_COLOURS)
    assert many["lstm-L2"].marker not in F.MODEL_MARKERS
    variants = F.looks(VARIANTS)
    assert len({v.colour for v in variants.values()}) == len({v.marker for v in variants.values()}) == 4


def test_the_base_colours_are_matplotlibs_petroff6():
    if "petroff6" not in matplotlib.style.library:  # matplotlib < 3.10
        pytest.skip("this matplotlib has no petroff6 style")
    cycle = matplotlib.style.library["petroff6"]["axes.prop_cycle"].by_key()["color"]
    assert [c.lower() for c in cycle] == list(F.MODEL_COLOURS[:6])  # the seventh, for the LRU, is not petroff6's


# Colour-vision deficiency, simulated as in Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB
DEUTERANOPIA = [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
PROTANOPIA = [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
SRGB_TO_XYZ = [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]


def cielab(rgb, deficiency=None) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour, as a reader with `deficiency` (a Machado matrix) would see it."""
    c = np.asarray(rgb, dtype=float)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    if deficiency is not None:
        linear = np.clip(np.asarray(deficiency) @ linear, 0, 1)
    xyz = np.asarray(SRGB_TO_XYZ) @ linear / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def closest_pair(colours: dict, deficiency=None) -> tuple[float, str, str]:
    """The smallest CIE76 colour difference ΔE*ab between two of `colours`, and which two."""
    lab = {label: cielab(c, deficiency) for label, c in colours.items()}
    return min((float(np.linalg.norm(lab[a] - lab[b])), a, b) for a, b in itertools.combinations(lab, 2))


@pytest.mark.parametrize("deficiency, margin", [(None, 40), (DEUTERANOPIA, 20), (PROTANOPIA, 20)],
                         ids=["normal", "deuteranopia", "protanopia"])
def test_model_colours_are_told_apart_also_by_colour_blind_readers(deficiency, margin):
    # the report's first palette gave the LSTM orange and the Transformer vermillion: ΔE 26, under deuteranopia 13
    assert closest_pair(F.palette(F.COLOUR_ORDER), deficiency)[0] > margin


def test_variant_colours_stay_apart_from_the_models_and_markers_are_distinct():
    labels = [*F.COLOUR_ORDER, *VARIANTS]
    assert closest_pair(F.palette(labels))[0] > 25
    marks = F.markers(labels)
    assert len(set(marks.values())) == len(labels)


def model_lines(fig, look):
    """(label, marker) of every line drawn in a model's colour with a marker (error bar caps and censoring marks
    aside)."""
    by_colour = {tuple(to_rgb(v.colour)): label for label, v in look.items()}
    marks = {"None", "", None, "_", *(m["marker"] for m in F.CENSOR_MARKS.values())}  # _: caps
    return {(by_colour[to_rgb(line.get_color())], line.get_marker()) for ax in fig.axes for line in ax.lines
            if line.get_marker() not in marks and to_rgb(line.get_color()) in by_colour}


@pytest.mark.parametrize("build", [F.learning_curves, F.final_vs_length, F.grad_through_time, F.input_grad_through_time,
                                   F.grad_norm, F.throughput, F.fraction_solved], ids=lambda f: f.__name__)
def test_each_model_has_its_colour_and_marker_in_every_figure_and_legend(report_data, build):
    look = F.looks(report_data.labels)
    fig = build(report_data)
    legend = dict(zip((t.get_text() for t in fig.legends[0].get_texts()), fig.legends[0].legend_handles))
    models = [label for label in legend if label in look]
    assert models == (["lstm"] if build is F.grad_through_time else ["lstm", "transformer"])  # h: recurrent only
    for label in models:
        assert (to_rgb(legend[label].get_color()), legend[label].get_marker()) == look[label], label
    assert model_lines(fig, look) == {(label, look[label].marker) for label in models}, build.__name__
    plt.close(fig)


def visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_learning_curves_have_a_panel_per_cell_the_baseline_and_one_colour_per_model(report_data):
    fig = F.learning_curves(report_data)
    colours = F.palette(report_data.labels)
    axes = {ax.get_title(): ax for ax in visible(fig)}
    assert sorted(axes) == ["adding, T = 12", "adding, T = 8", "copy, T = 12", "copy, T = 8"]
    for title, ax in axes.items():
        dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
        length = int(title.split("= ")[1])
        expected = 1 / 6 if title.startswith("adding") else 10 * math.log(8) / (length + 20)
        assert len(dotted) == 1 and dotted[0].get_ydata()[0] == pytest.approx(expected)
        assert {line.get_color() for line in ax.lines} - {"black"} <= set(colours.values())
        assert ax.get_yscale() == "log"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lstm", "transformer", "baseline"]
    plt.close(fig)


def test_underflow_is_marked_on_a_strip_never_dropped(report_data):
    profiles = report_data.profiles.copy()
    profiles.loc[(profiles.quantity == "h") & (profiles.distance >= 5), "norm"] = 0.0
    d = dataclasses.replace(report_data, profiles=profiles)
    fig = F.grad_through_time(d)
    zeros = D.profile_medians(profiles, "h").query("norm == 0")
    marked = sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections)
    assert len(zeros) > 0 and marked == len(zeros)
    assert "0 (underflow)" in [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "top recurrent layer" in fig._suptitle.get_text()
    plt.close(fig)


def test_kernel_benchmarks_add_throughput_panels(copy_runs):
    root = copy_runs(lambda s: s["model"] == "lstm")
    (root / "bench").mkdir()
    (root / "bench" / "h100.json").write_text(json.dumps(BENCH))
    fig = F.throughput(D.load(root))
    titles = [ax.get_title() for ax in visible(fig)]
    setting = "B = 32, H = 64, float32"
    assert titles == ["training runs: adding", "training runs: copy", f"kernels: forward pass\n{setting}",
                      f"kernels: backward pass\n{setting}"]  # passes in the order the file lists them
    assert len(visible(fig)[2].lines) == 4  # lstm and gru, each on two backends
    plt.close(fig)


def test_a_figure_without_data_is_skipped(report_data):
    no_profiles = dataclasses.replace(report_data, profiles=report_data.profiles.iloc[:0])
    assert F.grad_through_time(no_profiles) is None and F.input_grad_through_time(no_profiles) is None


KERNEL_BENCH = {"machine": {"device_name": "NVIDIA H100 80GB HBM3"}, "results": [
    {"cell": cell, "backend": backend, "batch": 64, "hidden": hidden, "length": 1024, "dtype": dtype, "pass": p,
     "median_us": 1024.0 * hidden / (2 if backend == "triton" else 1), "p20_us": 1.0, "p80_us": 2.0,
     "tokens_per_s": 1.0, "floor_us_per_step": hidden / 100, "tf32_allowed": tf32}
    for cell in ("lstm", "gru") for backend in ("torch", "triton") for hidden in (64, 128, 256)
    for dtype, tf32 in (("float32", True), ("float32", False), ("bfloat16", None)) for p in ("fwd", "fwd+bwd")]}


def test_kernel_figure_panels_per_pass_and_precision(copy_runs):
    root = copy_runs(lambda s: s["model"] == "lstm")
    (root / "bench").mkdir()
    (root / "bench" / "h100.json").write_text(json.dumps(KERNEL_BENCH))
    fig = F.kernels(D.load(root))
    titles = [ax.get_title() for ax in visible(fig)]
    assert titles == [f"{p}, {d}" for p in ("fwd", "fwd+bwd") for d in ("float32", "float32, TF32 off", "bfloat16")]
    ax = visible(fig)[0]
    assert len(ax.lines) == 2 * 2 + 2  # (lstm, gru) x (torch, triton), and each cell's dotted floor
    floors = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert [list(line.get_ydata()) for line in floors] == [[0.64, 1.28, 2.56]] * 2
    assert "B = 64, T = 1024 (NVIDIA H100 80GB HBM3)" in fig._suptitle.get_text().replace("\n", " ")
    plt.close(fig)


def test_no_kernel_results_no_kernel_figure(report_data):
    assert F.kernels(report_data) is None


def test_final_values_on_log_axes_stay_above_zero_with_every_seed_and_chance(report_data):
    fig = F.final_vs_length(report_data)
    axes = {(ax.get_ylabel() or "", ax.get_title()): ax for ax in visible(fig)}
    panels = {title: [ax for (_, t), ax in axes.items() if t == title] for title in ("adding", "copy")}
    loss = {task: next(ax for ax in panels[task] if ax.get_yscale() == "log") for task in panels}
    accuracy = {task: next(ax for ax in panels[task] if ax.get_yscale() != "log") for task in panels}
    for ax in loss.values():  # error bars: geometric mean ×/÷ factor, never at or below zero
        ends = [y for c in ax.collections if hasattr(c, "get_segments") for s in c.get_segments() for y in s[:, 1]]
        assert ends and min(ends) > 0
    seeds = report_data.runs[report_data.runs.counted & (report_data.runs.status == "completed")]
    # the set the summary's statistics use: the test set where the records have it, else the evaluation set
    which = "test" if report_data.cells.get("final_set", pd.Series(["eval"])).eq("test").all() else "eval"
    for task in panels:  # every seed's value as a point: 2 seeds x 2 models x 2 lengths per task
        for ax in (loss[task], accuracy[task]):
            points = [c for c in ax.collections if c.get_offsets().shape[0] and not hasattr(c, "get_segments")]
            values = sorted(y for c in points for y in c.get_offsets()[:, 1])
            column = f"final.{which}_loss" if ax is loss[task] else f"final.{which}_accuracy"
            assert values == pytest.approx(sorted(seeds[seeds.task == task][column]))
    chance = [line for line in accuracy["copy"].lines if line.get_color() == F.CHANCE["color"]]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(1 / 8)  # 1 / task.n_symbols
    assert not [line for line in accuracy["adding"].lines if line.get_color() == F.CHANCE["color"]]
    assert "chance" in [t.get_text() for t in fig.legends[0].get_texts()]
    title = fig._suptitle.get_text().replace("\n", " ")
    assert title.startswith(f"Final {which} loss") and "95% interval as in the summary table" in title
    plt.close(fig)


def test_configurations_are_told_apart_by_style_and_named_in_the_legend(grid_data):
    for build in (F.learning_curves, F.final_vs_length, F.grad_through_time):
        fig = build(grid_data)
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        variants = [f"backend={b}, hidden={h}" for b in ("reference", "torch") for h in (8, 16)]
        assert [t for t in texts if t.startswith("backend=")] == variants, build.__name__
        ax = visible(fig)[0]
        styles = {(line.get_linestyle(), str(line._unscaled_dash_pattern))  # the dash sequence itself
                  for line in ax.lines if line.get_color() != "black" and line.get_linewidth() > 1}
        assert len(styles) >= 4, build.__name__  # one line style per configuration, all the same model's colour
        plt.close(fig)


def dotted(line) -> bool:
    """Every dash of the line's pattern no longer than the line is wide: dots."""
    _, pattern = line._unscaled_dash_pattern  # in line widths; None: solid
    return pattern is not None and max(pattern[::2]) <= 1


def test_no_configuration_takes_the_baselines_dotted_line(grid_data):
    assert not any(pattern and max(pattern[::2]) < 2 for pattern in F.DASHES)  # every style has a real dash
    for build in (F.learning_curves, F.final_vs_length):
        fig = build(grid_data)
        lines = [line for ax in visible(fig) for line in ax.lines]
        baseline = [line for line in lines if line.get_color() == F.BASELINE["color"]]
        configurations = [line for line in lines if line.get_color() not in (F.BASELINE["color"], F.CHANCE["color"])]
        assert baseline and all(dotted(line) and line.get_linestyle() == ":" for line in baseline), build.__name__
        assert len({line._unscaled_dash_pattern for line in configurations}) == 4, build.__name__  # 4 configurations
        assert not any(dotted(line) for line in configurations), build.__name__
        legend = dict(zip((t.get_text() for t in fig.legends[0].get_texts()), fig.legends[0].legend_handles))
        assert dotted(legend["baseline"]) and legend["baseline"].get_color() == F.BASELINE["color"]
        assert not any(dotted(legend[v]) for v in legend if v.startswith("backend="))
        plt.close(fig)


def test_every_built_in_model_has_its_own_place_colour_and_marker():
    """Each model's config gives its report order and palette slot: every built-in model has both, no two share one,
    and every slot is a colour and a marker of the base palette (a model added later takes the next)."""
    from seqbench.harness.models import MODELS

    orders = [cls.report_order for cls in MODELS.values()]
    slots = [cls.palette_slot for cls in MODELS.values()]
    assert None not in orders and None not in slots
    assert len(set(orders)) == len(orders) and len(set(slots)) == len(slots)
    assert max(slots) < min(len(F.MODEL_COLOURS), len(F.MODEL_MARKERS))
    assert set(F.COLOUR_ORDER) == set(D.MODEL_ORDER) == set(MODELS)
    assert F.palette(F.COLOUR_ORDER) == dict(zip(F.COLOUR_ORDER, map(to_rgb, F.MODEL_COLOURS)))


def test_an_mqar_panel_draws_the_no_binding_level_its_runs_recorded(tmp_path):
    """MQAR runs record their no-binding level (accuracy 1/D, loss ln D); the final-metric panels draw it beside
    chance and the baseline, in a dotted style of its own, and the legend names it."""
    from seqbench.harness.train import execute

    from ..harness.conftest import tiny

    for seed in (0, 1):
        mqar = ["task=mqar", "task.vocab=16", "task.num_kv_pairs=2", "task.length=8", "task.random_non_queries=false",
                f"seed={seed}"]
        _, run_dir = execute(tiny(*mqar), tmp_path, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["no_binding_accuracy"] == 0.5 and summary["no_binding_loss"] == pytest.approx(math.log(2))
    fig = F.final_vs_length(D.load(tmp_path))
    axes = visible(fig)
    levels = {ax.get_yscale(): [line.get_ydata()[0] for line in ax.lines if line.get_color() == F.NO_BINDING["color"]]
              for ax in axes}
    assert levels == {"linear": [pytest.approx(0.5)], "log": [pytest.approx(math.log(2))]}
    drawn = [line for ax in axes for line in ax.lines if line.get_color() == F.NO_BINDING["color"]]
    assert all(dotted(line) and line.get_linewidth() > F.CHANCE["linewidth"] for line in drawn)
    assert "no binding" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
