"""The report's figures, drawn with seaborn from the aggregated long DataFrames of `data`, one colour and marker per
model (colour-blind-safe, the same in every figure), one line style per configuration.

Each builder takes a `ReportData` and returns a matplotlib Figure, or None when its data is absent (the page then says
the figure was skipped). `save` writes PNG (for the page) and PDF (for papers) and closes the figure.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import textwrap
from pathlib import Path
from typing import Callable, NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from ..models import MODELS  # noqa: E402
from . import data as D  # noqa: E402
from . import survival, tuning  # noqa: E402

DPI = 150
# Reference levels are dotted, a style no configuration takes (DASHES has no dotted pattern), and drawn above the
# curves that sit on them: the analytic baseline black, chance accuracy grey and more loosely dotted.
BASELINE = dict(color="black", linestyle=":", linewidth=1.6, zorder=5)
CHANCE = dict(color="0.45", linestyle=(0, (1, 3)), linewidth=1.6, zorder=5)
#: recall tasks' no-binding level (MQAR: accuracy 1/D, loss ln D): dark grey, thick, densely dotted
NO_BINDING = dict(color="0.25", linestyle=(0, (0.6, 1.4)), linewidth=2.6, zorder=5)
#: the captions' words for the reference levels
LEVELS_NOTE = ("Dotted (black): the analytic baseline loss; loosely dotted (grey): each task's chance accuracy; thick "
               "densely dotted (dark grey), on recall tasks that have it: the level without cue-answer binding "
               "(MQAR: accuracy 1/D, loss ln D, guessing among the sequence's D values).")
#: configurations' line styles (dash patterns in line widths), the first solid; none dotted, every one has a dash of
#: two line widths or more
DASHES = [(), (4, 1.5), (3, 1, 1, 1), (6, 2), (2, 2, 6, 2), (5, 1, 1, 1, 1, 1), (8, 2, 2, 2), (2.5, 1.5)]
#: markers on lines with many points: about one every fifth of the panel's diagonal
MARK_EVERY = 0.2
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
GRAD_H, GRAD_X = "‖∂L/∂hₜ‖", "‖∂L/∂xₜ‖"  # Unicode, not mathtext: cheaper to draw and wraps by its real width


@contextlib.contextmanager
def style():
    """Figures look the same wherever the report is built, without touching the caller's global rcParams."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        yield


#: the built-in models by the colour and marker each takes (its config's `palette_slot`: a model added later takes the
#: next, so every model keeps its own)
COLOUR_ORDER = tuple(sorted((n for n, c in MODELS.items() if c.palette_slot is not None),
                            key=lambda n: MODELS[n].palette_slot))
#: the base models' colours: matplotlib's "petroff6" cycle (M. A. Petroff, "Accessible color sequences for data
#: visualization", 2021), six colours chosen to stay apart under the common colour-vision deficiencies, written out
#: as matplotlib < 3.10 lacks it (blue, orange, red, purple, grey, violet); then for each further model the sRGB
#: colour (of lightness 25-62 and chroma 30 or more, so that it reads on white and is no grey) farthest in CIE ΔE from
#: those before it, as seen with normal vision, deuteranopia and protanopia: a green (LRU), a maroon (Mamba)
MODEL_COLOURS = ("#5790fc", "#f89c20", "#e42536", "#964a8b", "#9c9ca1", "#7a21dd", "#37a664", "#6f2121")
#: variants' colours (`lstm-L2`, plugin models): the colours of petroff10 farthest from the six above
SPARE_COLOURS = ("#a96b59", "#e76300", "#b9ac70", "#92dadd")
#: markers: the base models', then variants' (each model keeps its marker where colour alone does not tell it apart)
MODEL_MARKERS, SPARE_MARKERS = "osD^vPX*", "<>dph8H"


def _assign(labels, base, spare) -> dict:
    """Base models take `base` in COLOUR_ORDER, variants (`rnn-relu`, `lstm-L2`) and unknown models a hash of their
    label into `spare`, so a label keeps its value from one report to the next."""
    fixed = dict(zip(COLOUR_ORDER, base))
    out, taken = {}, set()
    for label in sorted(set(labels), key=D.label_order):
        if label in fixed:
            out[label] = fixed[label]
            continue
        i = int(hashlib.sha256(label.encode()).hexdigest(), 16) % len(spare)
        while i in taken and len(taken) < len(spare):  # two variants on one value: the later one moves on
            i = (i + 1) % len(spare)
        taken.add(i)
        out[label] = spare[i]
    return out


def palette(labels) -> dict[str, tuple]:
    """A fixed colour (RGB) per model label (see MODEL_COLOURS, SPARE_COLOURS)."""
    return {label: to_rgb(c) for label, c in _assign(labels, MODEL_COLOURS, SPARE_COLOURS).items()}


def markers(labels) -> dict[str, str]:
    """A fixed marker per model label (see MODEL_MARKERS)."""
    return _assign(labels, MODEL_MARKERS, SPARE_MARKERS)


class Look(NamedTuple):
    """How a model is drawn in every figure."""
    colour: tuple
    marker: str


def looks(labels) -> dict[str, Look]:
    colours, marks = palette(labels), markers(labels)
    return {label: Look(colours[label], marks[label]) for label in colours}


def draw(d: D.ReportData, folder: Path) -> dict[str, Path | str]:
    """Every figure of FIGURES: name -> its PNG (the PDF lies beside it), or the reason it was skipped."""
    out = {}
    for name, (build, _, absent) in FIGURES.items():
        with style():
            fig = build(d)
        if fig is not None:
            out[name] = save(fig, folder, name)[0]
        else:  # no stale file from an earlier report may pass for this one
            out[name] = absent
            for ext in ("png", "pdf"):
                (folder / f"{name}.{ext}").unlink(missing_ok=True)
    return out


def save(fig, folder: Path, name: str) -> tuple[Path, Path]:
    """Write `name`.png and `name`.pdf under `folder`, then close the figure."""
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    # no creation dates or software strings: the same records give the same files, byte for byte
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return png, pdf


# --- layout: a fixed grid in inches --------------------------------------------------------------------------------
# Figures are laid out on fixed margins rather than by tight or constrained layout: their extra drawing passes were
# most of the report's run time. LEFT holds tick and axis labels, RIGHT the legend, TOP the title.
PANEL_W, PANEL_H = 3.3, 2.4
LEFT, RIGHT, BOTTOM, TOP = 1.0, 1.9, 0.65, 0.85
HGAP, WGAP, WGAP_SHARED = 0.95, 1.05, 0.3
STRIP = 0.07  # below the panel, in axes fractions: where exact zeros (underflow) are marked


def _facets(frame, row: str, col: str, title: str, row_order=None, col_order=None, sharey="row", ragged=False):
    """One panel per (row, col) value pair -> (figure, {(row value, col value): axes}); rows share y if "row".
    `ragged`: only the pairs present, each row's columns from the left."""
    rows = row_order or sorted(frame[row].unique())
    cols = col_order or sorted(frame[col].unique())
    if ragged:
        cols = range(max(frame.loc[frame[row] == r, col].nunique() for r in rows))
    wgap = WGAP_SHARED if sharey == "row" else WGAP
    width = LEFT + len(cols) * PANEL_W + (len(cols) - 1) * wgap + RIGHT
    height = TOP + len(rows) * PANEL_H + (len(rows) - 1) * HGAP + BOTTOM
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width, height), squeeze=False, sharey=sharey,
                             gridspec_kw=dict(left=LEFT / width, right=1 - RIGHT / width, bottom=BOTTOM / height,
                                              top=1 - TOP / height, wspace=wgap / PANEL_W, hspace=HGAP / PANEL_H))
    if ragged:  # each row its own column values, left-aligned (each task its own lengths): no empty panels between
        per_row = {r: sorted(frame.loc[frame[row] == r, col].unique()) for r in rows}
        grid = {(r, c): axes[i, j] for i, r in enumerate(rows) for j, c in enumerate(per_row[r])}
        used = {id(ax) for ax in grid.values()}
        for ax in axes.flat:
            if id(ax) not in used:
                ax.set_axis_off()
    else:
        grid = {(r, c): axes[i, j] for i, r in enumerate(rows) for j, c in enumerate(cols)}
    for (r, c), ax in grid.items():
        ax.set_title(title.format(row=r, col=c))
    return fig, grid


class Style(NamedTuple):
    """A line's dash pattern (its configuration's) and marker (its model's)."""
    dashes: tuple
    marker: str | None = None

    def line(self) -> dict:
        return dict(dashes=self.dashes) if self.dashes else dict(linestyle="-")


def styles(variants, order=()) -> dict[str, Style]:
    """A line style per variant (the backend where several ran, and the config keys that vary: `hidden=8,
    lr=0.001`), the first solid: in `order` (the summary's, where keys sort by value), then sorted."""
    present = set(variants)
    ordered = [v for v in dict.fromkeys(order) if v in present] + sorted(present - set(order))
    return {v: Style(d) for v, d in zip(ordered, itertools.cycle(DASHES))}


def _map(frame, grid: dict, keys: list[str], plot, look: dict, style: dict | None = None) -> None:
    """plot(axes, rows, colour, style) for the rows of each facet, model label and variant: the model's colour, the
    variant's dashes with the model's marker."""
    variant = frame.variant if "variant" in frame else pd.Series("", index=frame.index)
    style = style or styles(variant)
    for key, facet in frame.groupby(keys, sort=False):
        for (label, v), rows in facet.groupby(["label", variant.loc[facet.index]], sort=False):
            plot(grid[key], rows, look[label].colour, style[v]._replace(marker=look[label].marker))


def _pow10(x, _=None) -> str:
    """10⁻³ in Unicode superscripts (no mathtext); other values as they are."""
    e = round(math.log10(x)) if x > 0 else 0
    return f"10{str(e).translate(SUPERSCRIPT)}" if x > 0 and math.isclose(x, 10.0**e) else f"{x:g}"


def _short(x, _=None) -> str:
    """0.3, 20, 50k, 2M: short tick labels for a log axis that spans few decades."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= max(scale, 1e4):  # 5000 stays 5000
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _plain_log_labels(ax) -> None:
    """Log y tick labels as plain text (10⁻³, or 0.2 0.5 1 2 on a short axis): the default mathtext labels made the
    report several times slower. Minor ticks are dropped: invisible in this style, they cost as much as the rest."""
    axis = ax.yaxis
    if axis.get_scale() != "log":
        return
    lo, hi = axis.get_view_interval()
    decades = math.log10(hi) - math.log10(lo) if 0 < lo < hi else math.inf
    if decades < 2.5:  # too few decades to read: label 1-2-5 (or every) multiple instead
        subs = (1, 2, 5) if decades > 1 else (1, 2, 3, 5) if decades > 0.5 else range(1, 10)
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_major_formatter(FuncFormatter(_short))
    else:
        axis.set_major_formatter(FuncFormatter(_pow10))
    axis.set_minor_locator(NullLocator())


def _legend_data(labels, look, baseline=False, variants: dict | None = None, chance=False, binding=False) -> dict:
    """Legend entries: a colour and marker per model, a line style per variant, the reference lines."""
    handles = {label: Line2D([], [], color=look[label].colour, marker=look[label].marker, markersize=5, linewidth=2)
               for label in labels}
    shown = {variant: style for variant, style in (variants or {}).items() if variant}
    if shown:
        handles["configuration:"] = Line2D([], [], linestyle="none")  # a heading: no line
    for variant, style in shown.items():
        handles[variant] = Line2D([], [], color="0.3", **style.line())
    if baseline:
        handles["baseline"] = Line2D([], [], **BASELINE)
    if chance:
        handles["chance"] = Line2D([], [], **CHANCE)
    if binding:
        handles["no binding"] = Line2D([], [], **NO_BINDING)
    return handles


def _finish(fig, grid: dict, handles: dict, title: str, xlabel: str, ylabel, legend_title="model"):
    """Hide facets without data, label the axes (y once per row where rows share y), add legend and title."""
    axes = [ax for ax in grid.values() if ax.has_data()]
    for ax in grid.values():
        ax.set_visible(ax in axes)
    rows = {}
    for key, ax in grid.items():
        if ax in axes:
            rows.setdefault(ax.get_subplotspec().rowspan.start, []).append((key, ax))
    for panels in rows.values():
        for i, (key, ax) in enumerate(panels):
            _plain_log_labels(ax)
            ax.set_xlabel(xlabel)
            shared = ax.get_shared_y_axes().get_siblings(ax)
            if i == 0 or len(shared) == 1:  # the first visible panel of a row carries the shared y labels
                ax.set_ylabel(ylabel(key))
                ax.yaxis.set_tick_params(labelleft=True)
    width, height = fig.get_size_inches()
    right = max(RIGHT, 1.1 + 0.075 * max(len(str(text)) for text in [*handles, legend_title or ""]))
    lines = textwrap.wrap(title, int((width - RIGHT + right) / 0.11))  # narrow figures wrap their title
    top = TOP + 0.22 * max(0, len(lines) - 2)
    if right > RIGHT or top > TOP:  # long legend entries (key=value settings), a long title: panels keep their size
        panels = width - LEFT - RIGHT, height - TOP - BOTTOM
        width, height = LEFT + panels[0] + right, top + panels[1] + BOTTOM
        fig.set_size_inches(width, height)
        next(iter(grid.values())).get_subplotspec().get_gridspec().update(
            left=LEFT / width, right=(LEFT + panels[0]) / width, bottom=BOTTOM / height, top=1 - top / height)
    fig.legend(handles.values(), handles.keys(), title=legend_title, loc="center left",
               bbox_to_anchor=(1 - (right - 0.15) / width, 0.5), frameon=False)
    fig.suptitle("\n".join(lines), y=1 - 0.15 / height)
    return fig


def _baseline(ax, cells, task: str, length=None) -> None:
    """The task's analytic baseline (the runs' recorded `baseline_loss`), dotted: a level at one length, or a line
    over the lengths of `cells` (the copy baseline falls with T)."""
    sel = cells[cells.task == task]
    if length is not None:
        sel = sel[sel.length == length]
    base = sel.groupby("length").baseline_loss.median().dropna()
    if base.empty:
        return
    if len(base) == 1:
        ax.axhline(base.iloc[0], **BASELINE)
    else:
        ax.plot(base.index, base.values, **BASELINE)


def _length_ticks(ax, lengths) -> None:
    """Log x axis ticked at the lengths that were run."""
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.minorticks_off()


# --- 1, 4: curves over training ------------------------------------------------------------------------------------
CURVE_KEYS = ["task", "length", "label", "variant", "cell"]
BAND_COLUMNS = [*CURVE_KEYS, "step", "median", "lo", "hi", "n", "complete"]


def complete_bands(metrics: pd.DataFrame, metric: str, carry: bool = False) -> pd.DataFrame:
    """Median, min and max over seeds of `metric` per cell and step (BAND_COLUMNS), never over a changing set of
    seeds. Runs stopped early (at the solved criterion) end at different steps, and a median over the seeds still
    running is a median of survivors: it moves as seeds leave it, not as training goes. So a cell's statistics are
    given at the steps where every seed has a value (`complete`), and with `carry` also after, each stopped seed
    counted at its last value (`complete` False there)."""
    m = metrics.loc[(metrics.metric == metric) & metrics.value.notna(), [*CURVE_KEYS, "run_id", "step", "value"]]
    if m.empty:
        return pd.DataFrame(columns=BAND_COLUMNS)
    seeds = m.groupby("cell").run_id.nunique()
    observed = m.groupby(["cell", "step"]).run_id.nunique()
    complete = observed == seeds.reindex(observed.index.get_level_values("cell")).to_numpy()
    if carry:  # every (cell, step) against every seed of the cell, a stopped seed's last value carried forward
        grid = m[["cell", "step"]].drop_duplicates().merge(m[["cell", "run_id"]].drop_duplicates(), on="cell")
        m = grid.merge(m[["run_id", "step", "value"]], on=["run_id", "step"], how="left").sort_values(
            ["run_id", "step"])
        m["value"] = m.groupby("run_id").value.ffill()  # before a run's first value: none, and no statistic there
    stats_ = m.groupby(["cell", "step"]).value.agg(median="median", lo="min", hi="max", n="count", all="size")
    # every seed of the cell has a value (with `carry`, its own or its last)
    stats_ = stats_[(stats_.n == stats_["all"]) & (carry | complete.reindex(stats_.index))].drop(columns="all")
    keys = metrics.loc[metrics.metric == metric, CURVE_KEYS].drop_duplicates("cell").set_index("cell")
    out = stats_.join(complete.rename("complete")).reset_index().join(keys, on="cell")
    return out.sort_values(["cell", "step"], kind="stable").reset_index(drop=True)[BAND_COLUMNS]


#: the part of a median where seeds that stopped early are counted at their last value: hollow markers, no band
CARRIED = dict(linewidth=1.2, markersize=4.5, markerfacecolor="white", markevery=MARK_EVERY)
CARRIED_LABEL = "stopped seeds at their last value"


def _band(ax, rows, colour, style) -> None:
    """Median line and min–max band over seeds (precomputed: no seaborn bootstrap) where every seed has a value; the
    median carried on (CARRIED) where some seeds stopped early."""
    full, carried = rows[rows.complete.astype(bool)], rows[~rows.complete.astype(bool)]
    ax.fill_between(full.step, full.lo, full.hi, color=colour, alpha=0.2, linewidth=0, zorder=2)
    ax.plot(full.step, full["median"], color=colour, linewidth=1.5, marker=style.marker, markersize=4,
            markevery=MARK_EVERY, zorder=3, **style.line())
    if len(carried):  # from the last complete step on, so that the line does not break
        joined = pd.concat([full.tail(1), carried])
        ax.plot(joined.step, joined["median"], color=colour, marker=style.marker, zorder=3, **CARRIED, **style.line())


def _seed_lines(ax, rows, colour, style) -> None:
    """Each seed's own curve, thin and under the median: with few seeds the reader sees every one."""
    for _, run in rows.groupby("run_id", sort=False):
        ax.plot(run.step, run.value, color=colour, linewidth=0.5, alpha=0.4, zorder=1, **style.line())


def few_seeds(frame: pd.DataFrame, by: str = "run_id") -> pd.DataFrame:
    """The rows of the cells with at most FEW_SEEDS seeds (distinct `by` values): those figures show every seed."""
    return frame[frame.groupby("cell")[by].transform("nunique") <= D.FEW_SEEDS]


def _curves(d: D.ReportData, metric: str, ylabel, title: str, baseline: bool, carry: bool):
    """`metric` vs step: rows = task, cols = length, one median line and min–max band per cell (colour = model,
    style = variant) where all its seeds have a value (with `carry`, the median carried on, see `complete_bands`),
    each seed's curve where a cell has at most FEW_SEEDS seeds, log y."""
    bands = complete_bands(d.metrics, metric, carry)
    if bands.empty:
        return None
    fig, grid = _facets(bands, "task", "length", "{row}, T = {col}", ragged=True)
    look, style = looks(d.labels), styles(bands.variant, d.cells.variant)
    _map(bands, grid, ["task", "length"], _band, look, style)
    _map(few_seeds(d.metrics[d.metrics.metric == metric]), grid, ["task", "length"], _seed_lines, look, style)
    for (task, length), ax in grid.items():
        ax.set_yscale("log")
        if baseline and ax.has_data():
            _baseline(ax, d.cells, task, length)
    labels = [lab for lab in d.labels if lab in set(bands.label)]
    handles = _legend_data(labels, look, baseline, style)
    if not bands.complete.all():
        handles[CARRIED_LABEL] = Line2D([], [], color="0.3", marker="o", **{**CARRIED, "markevery": None})
    return _finish(fig, grid, handles, title, "training step", lambda key: ylabel(key[0]))


CURVES = f"median over seeds, band: min–max; thin lines: each seed where a cell has ≤ {D.FEW_SEEDS}"
#: what the page says of a median over seeds when runs stop early (train.early_stop, at the solved criterion)
CARRIED_NOTE = ("Where runs stop early (train.early_stop, at the solved criterion), the seeds of a cell end at "
                "different steps, and a median over the seeds still running would be a median of survivors. So the "
                "median and band are drawn in full only where every seed of the cell has a value; after the first seed "
                "stops, the median goes on with hollow markers and without a band, each stopped seed counted at its "
                "last value (it stopped because it solved the task).")
TRUNCATED_NOTE = ("Where runs stop early (train.early_stop), the median and band end at the step where the first seed "
                  "of the cell stopped: a stopped run has no gradient, and a median over the seeds still running would "
                  "be a median of survivors; the thin seed lines go on.")


def learning_curves(d: D.ReportData):
    return _curves(d, "eval_loss", lambda task: d.words(task)["loss_label"],
                   f"Eval loss during training ({CURVES}; hollow markers: seeds that stopped early at their last "
                   "value)",
                   baseline=True, carry=True)


def grad_norm(d: D.ReportData):
    return _curves(d, "grad_norm", lambda task: "global gradient norm",
                   "Global gradient norm before clipping (median over seeds and min–max band where every seed still "
                   f"runs; thin lines: each seed where a cell has ≤ {D.FEW_SEEDS})", baseline=False,
                   carry=False)


# --- 2: final metrics vs length ------------------------------------------------------------------------------------
def _errorbars(ax, rows, colour, style) -> None:
    """The statistic and its interval (asymmetric: lo, hi), plus each seed's value where a cell has few."""
    yerr = [(rows["mean"] - rows.lo).fillna(0).clip(lower=0), (rows.hi - rows["mean"]).fillna(0).clip(lower=0)]
    ax.errorbar(rows.x, rows["mean"], yerr=yerr, color=colour, marker=style.marker, markersize=4, capsize=3,
                linewidth=1.5, **style.line())


def _seed_points(ax, rows, colour, style) -> None:
    """Each seed's value, hollow, beside the statistic drawn over it."""
    ax.scatter(rows.x, rows.value, facecolors="none", edgecolors=[colour], marker=style.marker, s=18, linewidths=0.8,
               alpha=0.8, zorder=3)


#: a cell's seeds are drawn side by side within this factor either way of the cell's x (log axes), so that equal
#: values (ten seeds at accuracy 0) stay countable; less than the dodge between cells (DODGE)
SEED_SPREAD, DODGE = 1.012, 1.03


def _spread(frame: pd.DataFrame, x: pd.Series, order: str = "config.seed", group=("cell",)) -> pd.Series:
    """Each seed's x: its row's `x` times a factor from SEED_SPREAD⁻¹ to SEED_SPREAD, in `order` (seed) within each
    `group` (the cell)."""
    by = frame.groupby(list(group))[order]
    rank, count = by.rank(method="first") - 1, by.transform("count")
    offset = (2 * rank / (count - 1).clip(lower=1) - 1).where(count > 1, 0.0)  # -1 .. 1
    return x * SEED_SPREAD ** offset


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame.get(column, pd.Series(np.nan, index=frame.index)), errors="coerce")


def final_sets(cells: pd.DataFrame) -> pd.Series:
    """Per cell, the set its final numbers come from, as the summary chose it (`final_set`): `test` (`final.test_*`,
    the held-out test set scored once at the end) or `eval` (`final.eval_*`, the evaluation set that also decided the
    early stop and the solved criterion); `eval` where the summary does not say."""
    return cells.get("final_set", pd.Series("eval", index=cells.index)).fillna("eval")


def _set_words(sets) -> str:
    """'test', 'eval' or 'test (eval where a cell lacks it)': which set a figure's final values come from."""
    sets = set(sets)
    return "test" if sets == {"test"} else "eval" if sets <= {"eval"} else "test (eval where a cell lacks it)"


def final_frames(d: D.ReportData, by: str = "length") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell and metric (loss, accuracy): the summary's statistic `mean` and interval `lo`–`hi`, dodged `x` (the
    cell's `by`: length or budget); and each counted seed's `value` for cells with at most FEW_SEEDS seeds, from the
    set the cell's statistic uses (`final_set`), spread around the cell's x (`_spread`). Loss: geometric mean, ×/÷
    its interval (never below zero on the log axis); accuracy: mean, its interval inside [0, 1]."""
    c = d.cells.dropna(subset=["loss_gmean"])
    c = c.assign(cell=c.index)
    pairs = sorted(dict.fromkeys(zip(c.label, c.variant)), key=lambda p: D.label_order(p[0]))  # the summary's order
    dodge = {p: DODGE ** (i - (len(pairs) - 1) / 2) for i, p in enumerate(pairs)}  # side by side on log x
    x = pd.Series([dodge[p] for p in zip(c.label, c.variant)], index=c.index) * c[by].astype(float)
    stats = pd.concat([c.assign(metric="loss", mean=c.loss_gmean, lo=c.loss_lo, hi=c.loss_hi, x=x),
                       c.assign(metric="accuracy", mean=c.accuracy_mean, lo=c.accuracy_lo, hi=c.accuracy_hi, x=x)],
                      ignore_index=True).dropna(subset=["mean"])
    runs = d.runs[d.runs.counted & (d.runs.status == "completed") & d.runs.cell.isin(c.index[c.n <= D.FEW_SEEDS])]
    runs = runs.assign(x=_spread(runs, runs.cell.map(x)))
    test = runs.cell.map(final_sets(d.cells)) == "test"
    frames = [runs.assign(metric=m, value=_numbers(runs, f"final.test_{m}").where(test,
                                                                                _numbers(runs, f"final.eval_{m}")))
              for m in ("loss", "accuracy")]
    seeds = pd.concat(frames, ignore_index=True).dropna(subset=["value"])
    return stats, seeds[["task", "length", "label", "variant", "cell", "metric", "value", "x"]]


def _without_budget(variant: str) -> str:
    return ", ".join(part for part in variant.split(", ") if part and not part.startswith("budget="))


def final_vs_budget(d: D.ReportData):
    """Final eval loss (top row) and accuracy (bottom row) vs parameter budget (log x), a panel per task and length:
    the runs that compare budgets (model.params). One line per model (and per other varying key)."""
    if not D.budgeted(d.runs, d.keys) or d.cells.budget.nunique() < 2:
        return None
    stats, seeds = final_frames(d, by="budget")
    if stats.empty:
        return None
    for frame in (stats, seeds):
        frame["variant"] = frame.variant.map(_without_budget)
        frame["panel"] = [f"{task}, T = {length}" for task, length in zip(frame.task, frame.length)]
    panels = sorted(stats.panel.unique(), key=lambda p: (p.split(",")[0], int(p.rsplit("= ", 1)[1])))
    fig, grid = _facets(stats, "metric", "panel", "{col}", row_order=["loss", "accuracy"], col_order=panels,
                        sharey=False)
    look, style = looks(d.labels), styles(stats.variant, d.cells.variant.map(_without_budget))
    _map(stats.sort_values("x"), grid, ["metric", "panel"], _errorbars, look, style)
    _map(seeds, grid, ["metric", "panel"], _seed_points, look, style)
    budgets = sorted(stats.budget.unique())
    for (metric, panel), ax in grid.items():
        task, length = panel.split(", T = ")
        ax.set_xscale("log")
        ax.set_xticks(budgets, [_short(b) for b in budgets])
        ax.xaxis.set_minor_locator(NullLocator())
        _final_axes(ax, metric, d.cells, task, int(length))

    which = _set_words(final_sets(d.cells.loc[stats.cell.unique()]))
    labels = [lab for lab in d.labels if lab in set(stats.label)]
    handles = _legend_data(labels, look, True, style, d.cells.chance.notna().any(), _binding_shown(d.cells))
    return _finish(fig, grid, handles, f"Final {which} loss and accuracy vs parameter budget: {FINAL_STATS}",
                   "parameter budget (model.params)", _final_ylabel(d, which, lambda key: key[1].split(",")[0]))


FINAL_STATS = f"statistic and 95% interval as in the summary table; points: each seed (cells of ≤ {D.FEW_SEEDS})"


def _final_ylabel(d: D.ReportData, which: str, task_of: Callable):
    """y label of a final-metric panel keyed (metric, ...): the task's loss or accuracy, on the set the values come
    from (`which`: test, eval)."""
    def ylabel(key) -> str:
        task, name = task_of(key), ("test" if which == "test" else "eval" if which == "eval" else "test/eval")
        text = d.words(task)["loss_label" if key[0] == "loss" else "accuracy_label"]
        return "final " + (name + text.removeprefix("eval") if text.startswith("eval") else f"{name} {text}")
    return ylabel


def _chance(ax, cells, task) -> None:
    """Chance accuracy (the runs' recorded `chance_accuracy`), loosely dotted; and where the task has one, the
    no-binding level (`no_binding_accuracy`)."""
    chance = cells.chance[cells.task == task].dropna()
    if len(chance):
        ax.axhline(chance.median(), **CHANCE)
    _no_binding(ax, cells, task, "no_binding")


def _no_binding(ax, cells, task, column: str) -> None:
    """A recall task's no-binding level (accuracy or loss), at each length where its runs recorded one; one level
    when it does not change with the length (MQAR's depends on D only)."""
    if column not in cells:
        return
    levels = cells[cells.task == task].groupby("length")[column].median().dropna()
    for level in sorted(set(levels.round(12))):
        ax.axhline(level, **NO_BINDING)


def _binding_shown(cells, tasks=None) -> bool:
    sel = cells if tasks is None else cells[cells.task.isin(tasks)]
    return "no_binding" in sel and sel.no_binding.notna().any()


def _final_axes(ax, metric: str, cells, task: str, length=None) -> None:
    """A final-metric panel's y axis: loss on a log scale over the analytic baseline, accuracy in [0, 1] over chance."""
    if metric == "loss":
        _baseline(ax, cells, task, length)
        _no_binding(ax, cells if length is None else cells[cells.length == length], task, "no_binding_loss")
        ax.set_yscale("log")
    else:
        _chance(ax, cells, task)
        ax.set_ylim(-0.02, 1.02)


def final_vs_length(d: D.ReportData):
    """Final eval loss (top row) and accuracy (bottom row) vs T per task (see `final_frames`)."""
    stats, seeds = final_frames(d)
    if stats.empty:
        return None
    fig, grid = _facets(stats, "metric", "task", "{col}", row_order=["loss", "accuracy"], sharey=False)
    look, style = looks(d.labels), styles(stats.variant, d.cells.variant)
    _map(stats, grid, ["metric", "task"], _errorbars, look, style)
    _map(seeds, grid, ["metric", "task"], _seed_points, look, style)
    for (metric, task), ax in grid.items():
        _length_ticks(ax, sorted(stats.length[stats.task == task].unique()))
        _final_axes(ax, metric, d.cells, task)

    which = _set_words(final_sets(d.cells.loc[stats.cell.unique()]))
    labels = [lab for lab in d.labels if lab in set(stats.label)]
    chance = d.cells.chance.notna().any()
    return _finish(fig, grid, _legend_data(labels, look, True, style, chance, _binding_shown(d.cells)),
                   f"Final {which} loss and accuracy vs length: {FINAL_STATS}", "length T",
                   _final_ylabel(d, which, lambda key: key[1]))


# --- 2b: length generalisation -------------------------------------------------------------------------------------
TRAINED = dict(color="0.45", linestyle="--", linewidth=1.0, zorder=1)


def _length_line(ax, rows, colour, style) -> None:
    """Mean accuracy over seeds at each evaluation length, its 95% interval (as in the lengths table) where there are
    two seeds or more."""
    rows = rows.sort_values("eval_length")
    if rows.lo.notna().any():
        ax.fill_between(rows.x, rows.lo, rows.hi, color=colour, alpha=0.18, linewidth=0)
    ax.plot(rows.x, rows["mean"], color=colour, marker=style.marker, markersize=4, linewidth=1.5, **style.line())


def _dodge(frame: pd.DataFrame) -> pd.Series:
    """Each row's factor on a log x axis that sets the (model, variant) pairs side by side, in the summary's order."""
    pairs = sorted(dict.fromkeys(zip(frame.label, frame.variant)), key=lambda p: D.label_order(p[0]))
    dodge = {p: DODGE ** (i - (len(pairs) - 1) / 2) for i, p in enumerate(pairs)}
    return pd.Series([dodge[p] for p in zip(frame.label, frame.variant)], index=frame.index)


def accuracy_vs_eval_length(d: D.ReportData):
    """Final accuracy against evaluation length (log x), a panel per task and training length, the training length
    marked: the runs with `eval.lengths`."""
    lc = D.length_cells(d.lengths)
    if lc.empty:
        return None
    fig, grid = _facets(lc, "task", "length", "{row}, trained at T = {col}", ragged=True, sharey=False)
    look, style = looks(d.labels), styles(lc.variant, d.cells.variant)
    lc = lc.assign(x=lc.eval_length * _dodge(lc))  # models side by side, each seed's point beside its model's mean
    _map(lc, grid, ["task", "length"], _length_line, look, style)
    seeds = few_seeds(d.lengths).dropna(subset=["accuracy"])
    seeds = seeds.assign(x=_spread(seeds, seeds.eval_length * _dodge(seeds), "run_id", ("cell", "eval_length")),
                         value=seeds.accuracy)
    _map(seeds, grid, ["task", "length"], _seed_points, look, style)
    for (task, length), ax in grid.items():
        _length_ticks(ax, sorted(lc.eval_length[(lc.task == task) & (lc.length == length)].unique()))
        ax.axvline(length, **TRAINED)
        _chance(ax, d.cells, task)
        ax.set_ylim(-0.02, 1.02)
    labels = [lab for lab in d.labels if lab in set(lc.label)]
    handles = _legend_data(labels, look, False, style, d.cells.chance[d.cells.task.isin(lc.task)].notna().any(),
                           _binding_shown(d.cells, lc.task))
    handles["training length"] = Line2D([], [], **TRAINED)
    return _finish(fig, grid, handles, "Final accuracy vs evaluation length (mean over seeds, band: 95% interval; "
                   f"points: each seed where a cell has ≤ {D.FEW_SEEDS}); dashed: the training length",
                   "evaluation length",
                   lambda key: "final " + d.words(key[0])["accuracy_label"])


# --- 2c: time to solve ---------------------------------------------------------------------------------------------
SOLVE_COLUMNS = ["cell", "task", "length", "label", "variant", "run_id", "step", "solved", "censored", "criterion",
                 "budget"]
#: how a seed that did not solve is marked at the step it left the count: at its budget, or where it diverged
CENSOR_MARKS = {"budget": dict(marker="|", markersize=9, markeredgewidth=1.4),
                "diverged": dict(marker="x", markersize=6, markeredgewidth=1.2)}


def solve_times(runs: pd.DataFrame) -> pd.DataFrame:
    """Each finished seed's time to solve as censored data, tidy (SOLVE_COLUMNS): a completed run that met the solved
    criterion (`solved_step`) is an event at that step; one that did not is censored (`censored` = "budget") at its
    budget, `config.train.steps`; a diverged run (never solved, whatever it met before) is censored ("diverged") at
    its last step. Only runs whose record names a `solved_criterion`; failed and unfinished runs are left out."""
    criterion = runs.get("solved_criterion", pd.Series(None, index=runs.index, dtype=object))
    r = runs[runs.counted & runs.status.isin(D.FINISHED_TRAINING) & criterion.notna()]
    step, solved = D.solve_times(r)  # the summary's steps to solve is the median of these curves
    completed = r.status == "completed"
    censored = np.where(solved, "", np.where(completed, "budget", "diverged"))
    budget = _numbers(r, "config.train.steps").fillna(step)
    return r.assign(step=step, solved=solved, censored=censored, criterion=criterion.loc[r.index],
                    budget=budget)[SOLVE_COLUMNS]


def _km_line(ax, rows, colour, style) -> None:
    """The Kaplan–Meier fraction solved of one cell as a step function to its step budget (no seed still unsolved
    and running can change it after its last step: a solved seed stays solved, a diverged one never solves), its
    model's marker at each solve, each censored seed marked where it left the count (CENSOR_MARKS)."""
    curve = survival.km_curve(rows.step, rows.solved)
    end = max(rows.budget.max(), rows.step.max())
    x = np.append(curve.step.to_numpy(), max(end, curve.step.iloc[-1]))
    y = np.append(curve.fraction_solved.to_numpy(), curve.fraction_solved.iloc[-1])
    ax.step(x, y, where="post", color=colour, linewidth=1.5, zorder=3, **style.line())
    events = curve[curve.events > 0]
    ax.plot(events.step, events.fraction_solved, linestyle="none", color=colour, marker=style.marker, markersize=4,
            zorder=4)
    for kind, seeds in rows[rows.censored != ""].groupby("censored"):
        at = curve.fraction_solved.to_numpy()[np.searchsorted(curve.step.to_numpy(), seeds.step, side="right") - 1]
        ax.plot(seeds.step, at, linestyle="none", color=colour, zorder=5, **CENSOR_MARKS[kind])
    ax.annotate(f"{int(rows.solved.sum())}/{len(rows)}", (end, y[-1]), xytext=(6, 0), textcoords="offset points",
                color=colour, fontsize=7, va="center", annotation_clip=False)


def _spread_labels(ax, gap: float = 0.075) -> None:
    """Move the solved/finished labels at a panel's right apart (at least `gap` of the axes' height) where curves end
    at one height."""
    texts = sorted(ax.texts, key=lambda t: t.xy[1])
    lo, hi = ax.get_ylim()
    ys, floor = [], -math.inf
    for text in texts:
        ys.append(max(text.xy[1], floor))
        floor = ys[-1] + gap * (hi - lo)
    ceiling = hi - gap * (hi - lo) / 2  # the top labels move down rather than out of the panel
    for i in reversed(range(len(ys))):
        ys[i] = min(ys[i], ceiling)
        ceiling = ys[i] - gap * (hi - lo)
    for text, y in zip(texts, ys):
        text.xyann = (text.xyann[0], (y - text.xy[1]) / (hi - lo) * ax.bbox.height / ax.figure.dpi * 72)


def fraction_solved(d: D.ReportData):
    """Time to solve: the Kaplan–Meier fraction of seeds solved vs training step, one panel per task and length, a
    step line per cell; only the runs with a solved criterion."""
    times = solve_times(d.runs)
    if times.empty:
        return None
    fig, grid = _facets(times, "task", "length", "{row}, T = {col}", ragged=True)
    look, style = looks(d.labels), styles(times.variant, d.cells.variant)
    _map(times.sort_values(["cell", "step"]), grid, ["task", "length"], _km_line, look, style)
    for (task, length), ax in grid.items():
        criteria = times.criterion[(times.task == task) & (times.length == length)].unique()
        if len(criteria) == 1:
            ax.set_title(f"{task}, T = {length}: {criteria[0]}")
        ax.set_ylim(-0.04, 1.08)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xlim(0, times.budget[(times.task == task) & (times.length == length)].max() * 1.17)  # room: labels
        _spread_labels(ax)
    labels = [lab for lab in d.labels if lab in set(times.label)]
    handles = _legend_data(labels, look, variants=style)
    for kind in sorted(set(times.censored) - {""}, key=list(CENSOR_MARKS).index):
        handles[f"unsolved, {'at the budget' if kind == 'budget' else 'diverged'}"] = Line2D(
            [], [], linestyle="none", color="0.3", **CENSOR_MARKS[kind])
    return _finish(fig, grid, handles, "Time to solve: fraction of seeds that met the solved criterion by each step "
                   "(Kaplan–Meier; unsolved seeds censored, marked where they left the count); right: seeds solved / "
                   "finished", "training step", lambda key: "fraction solved")


# --- 2d: tuning ----------------------------------------------------------------------------------------------------
def _expected_line(ax, rows, colour, style) -> None:
    """Expected best score vs trials k, its ±1 sd band kept inside the scores' range."""
    ax.fill_between(rows.k, rows.lo, rows.hi, color=colour, alpha=0.18, linewidth=0)
    ax.plot(rows.k, rows["mean"], color=colour, marker=style.marker, markersize=4, linewidth=1.5,
            markevery=None if len(rows) <= 12 else MARK_EVERY, **style.line())


def _trials_note(rows: pd.DataFrame) -> str:
    """'N = 3 candidates, 2 selection seeds each' for a panel (a range where its points differ)."""
    def span(values) -> str:
        lo, hi = int(values.min()), int(values.max())
        return str(lo) if lo == hi else f"{lo}–{hi}"

    unscored = (rows.candidates - rows.scored).max()
    note = f"N = {span(rows.scored)} candidates" + (f" ({int(unscored)} unscored left out)" if unscored else "")
    return note + (f", {span(rows.seeds)} selection seeds each" if rows.seeds.max() > 0 else "")


def expected_best(d: D.ReportData):
    """Expected best selection score of k tuning trials vs k (Dodge et al. 2019), one panel per tuned task and
    length, a line per model (and per other key of the tuning point); from the sweeps' tuning.json records."""
    frame = tuning.curves(d.tuning, d.recorded)
    if frame.empty:
        return None
    frame = frame.assign(length=frame.length.fillna(0).astype(int))  # 0: the point's records and labels lack it
    fig, grid = _facets(frame, "task", "length", "{row}, T = {col}", ragged=True, sharey=False)
    look, style = looks([*d.labels, *frame.label]), styles(frame.variant)
    _map(frame.sort_values("k"), grid, ["task", "length"], _expected_line, look, style)
    for (task, length), ax in grid.items():
        rows = frame[(frame.task == task) & (frame.length == length)]
        if length == 0:
            ax.set_title(task)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.7, rows.k.max() + 0.3)

    def ylabel(key) -> str:
        rows = frame[(frame.task == key[0]) & (frame.length == key[1])]
        best = "highest" if rows.goal.iloc[0] == "max" else "lowest"
        return f"expected {best} " + " / ".join(dict.fromkeys(rows.metric))

    labels = sorted(set(frame.label), key=D.label_order)
    fig = _finish(fig, grid, _legend_data(labels, look, variants=style), "Expected best selection score of k tuning "
                  "trials drawn from the N candidates (Dodge et al. 2019), band: ±1 sd", "tuning trials k", ylabel)
    for (task, length), ax in grid.items():  # each panel says how many candidates its curves are drawn from
        ax.set_xlabel(f"tuning trials k\n({_trials_note(frame[(frame.task == task) & (frame.length == length)])})",
                      fontsize=8)
    return fig


# --- 3: gradient through time --------------------------------------------------------------------------------------
def _longest(frame, per_task: int):
    """Rows of the `per_task` longest lengths of each task: the long-range behaviour is what these figures are for."""
    return frame[frame.groupby("task").length.rank(method="dense", ascending=False) <= per_task]


def _profile_line(ax, rows, colour, style) -> None:
    ax.plot(rows.distance, rows.positive, color=colour, linewidth=1.5, marker=style.marker, markersize=4,
            markevery=MARK_EVERY, **style.line())  # NaN (underflow): a gap


def _profile_seeds(profiles: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Each run's ‖∂L/∂q_t‖ by distance, as `profile_medians` takes it (h: the top recurrent layer; at initialisation
    and at the run's last profile), for the cells with at most FEW_SEEDS seeds."""
    p = profiles[profiles.quantity == quantity]
    by_run = p.groupby("run_id")
    p = p[(p.layer == by_run.layer.transform("max")) & ((p.step == 0) | (p.step == by_run.step.transform("max")))]
    p = p.assign(phase=p.step.eq(0).map({True: D.INIT, False: D.END}))
    return few_seeds(p).sort_values(["run_id", "phase", "distance"])


def _seed_profiles(ax, rows, colour, style) -> None:
    for _, run in rows.groupby("run_id", sort=False):
        ax.plot(run.distance, run.norm.where(run.norm > 0), color=colour, linewidth=0.5, alpha=0.4, zorder=1,
                **style.line())


def _underflow_strip(ax, zeros, look) -> None:
    """Exact zeros cannot sit on a log axis (nor below its smallest float): mark them (each model's marker) on a strip
    just under the panel, labelled like a tick on the panels that carry the y tick labels."""
    for label, rows in zeros.groupby("label", sort=False):
        ax.scatter(rows.distance, [-STRIP] * len(rows), color=look[label].colour, marker=look[label].marker, s=12,
                   linewidths=0, clip_on=False, transform=blended_transform_factory(ax.transData, ax.transAxes))
    ax.tick_params(axis="x", pad=16)  # the x tick labels make way for the strip
    if ax.get_subplotspec().is_first_col():
        ax.text(-0.02, -STRIP, "0 (underflow)", transform=ax.transAxes, fontsize=7, ha="right", va="center")


def _profile_figure(d: D.ReportData, quantity: str, symbol: str, what: str):
    """‖∂L/∂q_t‖ vs distance from the loss: rows = task and length, cols = initialisation / end, log y."""
    med = D.profile_medians(d.profiles, quantity)
    if med.empty:
        return None
    med = _longest(med, per_task=2).sort_values(["task", "length", "distance"])
    med = med.assign(panel=med.task + ", T = " + med.length.astype(str), positive=med.norm.where(med.norm > 0))
    fig, grid = _facets(med, "panel", "phase", "{row}: {col}", row_order=list(dict.fromkeys(med.panel)),
                        col_order=[D.INIT, D.END])
    look, style = looks(d.labels), styles(med.variant, d.cells.variant)
    _map(med, grid, ["panel", "phase"], _profile_line, look, style)
    seeds = _profile_seeds(d.profiles, quantity)
    seeds = seeds.assign(panel=seeds.task + ", T = " + seeds.length.astype(str))
    _map(seeds[seeds.panel.isin(med.panel)], grid, ["panel", "phase"], _seed_profiles, look, style)
    for (panel, phase), ax in grid.items():
        ax.set_yscale("log")
        zeros = med[(med.panel == panel) & (med.phase == phase) & (med.norm == 0)]
        if len(zeros):
            _underflow_strip(ax, zeros, look)
    labels = [lab for lab in d.labels if lab in set(med.label)]
    return _finish(fig, grid, _legend_data(labels, look, variants=style), f"Gradient through time: {symbol} {what} "
                   f"(median over seeds; thin lines: each seed where a cell has ≤ {D.FEW_SEEDS})",
                   "distance from the loss (steps)", lambda key: symbol)


def grad_through_time(d: D.ReportData):
    return _profile_figure(d, "h", GRAD_H, "of the top recurrent layer")


def input_grad_through_time(d: D.ReportData):
    return _profile_figure(d, "x", GRAD_X, "at the embedded input, every model")


# --- 5: throughput -------------------------------------------------------------------------------------------------
def _mean_lines(ax, rows, x: str, y: str, kind: str, look: dict, kinds: dict) -> None:
    """Mean of `y` against `x`, one line per model label (its colour and marker, in model order) and `kind` (its
    dashes)."""
    for (label, k), line in sorted(rows.groupby(["label", kind]), key=lambda g: (D.label_order(g[0][0]), g[0][1])):
        mean = line.groupby(x)[y].mean()
        ax.plot(mean.index, mean.values, color=look[label].colour, marker=look[label].marker, markersize=5,
                linewidth=1.5, **kinds[k].line())


def _bench_setting(bench):
    """Kernel results at their most common (batch, hidden, dtype): one comparable set of curves."""
    batch, hidden, dtype = bench.groupby(["batch", "hidden", "dtype"]).size().idxmax()
    sel = bench[(bench.batch == batch) & (bench.hidden == hidden) & (bench.dtype == dtype)]
    return sel.rename(columns={"cell": "label"}), f"B = {batch}, H = {hidden}, {dtype}"


def _throughput_seeds(d: D.ReportData) -> pd.DataFrame:
    """Each counted completed run's tokens/s (`value`) at its length, spread by seed (`x`), for the cells with at most
    FEW_SEEDS seeds, with its `panel`."""
    runs = few_seeds(d.runs[d.runs.counted & (d.runs.status == "completed")], "config.seed")
    runs = runs.assign(value=_numbers(runs, "tokens_per_s")).dropna(subset=["value"])
    return runs.assign(x=_spread(runs, runs.length.astype(float)), panel="training runs: " + runs.task)


def throughput(d: D.ReportData):
    """Training tokens/s vs T per task (style = backend and the varying keys), plus kernel benchmark panels (one per
    pass) when present."""
    runs = d.cells.dropna(subset=["tokens_per_s"]).assign(panel=lambda f: "training runs: " + f.task)
    runs = runs.assign(style="backend: " + runs.backend + runs.setting.map(lambda s: s and f", {s}"))
    bench, setting = _bench_setting(d.bench) if len(d.bench) else (d.bench, "")
    bench = bench.assign(panel=lambda f: "kernels: " + f["pass"].astype(str) + f" pass\n{setting}",
                         style=lambda f: "backend: " + f.backend.astype(str))
    frame = pd.concat([runs, bench], ignore_index=True).assign(one="")
    if frame.empty:
        return None
    fig, grid = _facets(frame, "one", "panel", "{col}", col_order=list(dict.fromkeys(frame.panel)), sharey=False)
    look = looks(d.labels)
    order = list(runs.sort_values("backend", key=lambda b: b != "torch", kind="stable")["style"])
    order += sorted(bench["style"].unique(), key=lambda b: (b != "backend: torch", b))
    kinds = styles(order, order)  # summary order, torch first: the usual backend drawn solid
    seeds = _throughput_seeds(d)
    for (_, panel), ax in grid.items():
        rows = frame[frame.panel == panel]
        _mean_lines(ax, rows, "length", "tokens_per_s", "style", look, kinds)
        for label, points in seeds[seeds.panel == panel].groupby("label"):
            _seed_points(ax, points, look[label].colour, Style((), look[label].marker))
        _length_ticks(ax, sorted(rows.length.unique()))
        ax.set_yscale("log")
    handles = _legend_data([lab for lab in d.labels if lab in set(frame.label)], look)
    handles.update({k: Line2D([], [], color="0.3", **style.line()) for k, style in kinds.items()})
    return _finish(fig, grid, handles, "Throughput (training runs: steady-state tokens/s, mean over seeds; points: "
                   f"each seed where a cell has ≤ {D.FEW_SEEDS})",
                   "length T", lambda key: "tokens/s", legend_title=None)


# --- 6: kernel benchmarks ------------------------------------------------------------------------------------------
def kernels(d: D.ReportData):
    """Kernel benchmark time per step vs hidden size, one panel per (pass, precision), at the most common (batch,
    length); colour = cell, style = backend; dotted, in the cell's colour: the floor over the device's ceilings."""
    if d.bench.empty:
        return None
    bench = d.bench.assign(us_per_step=lambda f: f.median_us / f.length)
    batch, length = bench.groupby(["batch", "length"]).size().idxmax()
    sel = bench[(bench.batch == batch) & (bench.length == length)].rename(columns={"cell": "label"})
    tf32_off = sel["tf32_allowed"].eq(False) if "tf32_allowed" in sel else pd.Series(False, index=sel.index)
    sel = sel.assign(precision=sel.dtype + tf32_off.map({True: ", TF32 off", False: ""}))
    fig, grid = _facets(sel, "pass", "precision", "{row}, {col}", row_order=list(dict.fromkeys(sel["pass"])),
                        col_order=list(dict.fromkeys(sel.precision)))
    look = looks(d.labels)
    labels = [lab for lab in d.labels if lab in set(sel.label)]
    order = sorted(sel.backend.unique(), key=lambda b: (b != "torch", b))
    backends = styles(order, order)  # torch solid
    has_floor = "floor_us_per_step" in sel and sel.floor_us_per_step.notna().any()
    for (pass_, precision), ax in grid.items():
        rows = sel[(sel["pass"] == pass_) & (sel.precision == precision)]
        if rows.empty:
            continue
        _mean_lines(ax, rows, "hidden", "us_per_step", "backend", look, backends)
        if has_floor:
            for label, cell in rows.dropna(subset=["floor_us_per_step"]).groupby("label"):
                floor = cell.groupby("hidden").floor_us_per_step.first()
                ax.plot(floor.index, floor.values, ":", color=look[label].colour, lw=1.2)
        hidden = sorted(rows.hidden.unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(hidden, [str(h) for h in hidden])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
    handles = _legend_data(labels, look)
    handles.update({f"backend: {b}": Line2D([], [], color="0.3", **style.line()) for b, style in backends.items()})
    if has_floor:
        handles["floor"] = Line2D([], [], color="0.3", ls=":")
    machines = ", ".join(sorted(set(sel.machine) - {""})) or "unnamed device"
    return _finish(fig, grid, handles, f"Recurrent layer kernels: time per step, B = {batch}, T = {length} "
                   f"({machines})", "hidden size H", lambda key: "µs per step", legend_title=None)


class Spec(NamedTuple):
    build: Callable  # ReportData -> Figure, or None without data
    caption: str
    absent: str  # what the page says when the figure is skipped


#: every figure, in the order of the page
STYLE_NOTE = ("Colour and marker: model (the same in every figure); line style: the backend where several ran and the "
              "config keys that differ between configurations (legend: key=value).")
FIGURES = {
    "learning_curves": Spec(
        learning_curves, f"Eval loss vs training step: median over seeds, band: min–max over seeds, thin lines: every "
        f"seed where a cell has at most {D.FEW_SEEDS}; dotted (black): the task's analytic baseline. {CARRIED_NOTE} "
        f"{STYLE_NOTE}",
        "no eval_loss in the metrics of completed runs"),
    "final_vs_length": Spec(
        final_vs_length, "Final loss and accuracy vs length. Values: the held-out test set (final.test_*) where "
        "every completed run of a cell recorded one, else the evaluation set (final.eval_*, which also decided early "
        "stopping and the solved criterion); the figure's title and axes say which. The statistic and its 95% "
        "interval over seeds are the summary table's (its caption names the methods): the loss's geometric mean ×/÷ "
        "its factor (never below zero on the log axis); the accuracy's mean, its interval inside [0, 1]. Accuracy "
        "(adding: fraction of sequences with |error| < 0.04; the others: accuracy on the positions that carry a "
        f"target, e.g. copy's recall window). Points: every seed where a cell has at most {D.FEW_SEEDS}, side by side "
        f"in seed order. {LEVELS_NOTE} {STYLE_NOTE}", "no completed run with a final eval loss"),
    "final_vs_budget": Spec(
        final_vs_budget, "Parameter-matched comparison: final eval loss and accuracy vs the parameter budget "
        "(model.params; each model's width chosen so that its trainable parameter count is closest to the budget: the "
        "summary table gives the width and the actual count), one panel per task and length. Statistics, bars and "
        f"points as in the figure above. {LEVELS_NOTE} {STYLE_NOTE}",
        "no runs compare parameter budgets (model.params with two budgets or more)"),
    "fraction_solved": Spec(
        fraction_solved, "Time to solve as censored data: the Kaplan–Meier estimate of the fraction of seeds that met "
        "the task's solved criterion (each run's solved_criterion, on the evaluation set) by each training step, a "
        "step line per model and configuration, the model's marker at each solve. A seed that did not solve is not "
        "dropped but censored: at its budget (train.steps, marked |) if it completed, at the step it diverged "
        "(marked ×) if it diverged; it counts in the denominator until then. A curve that ends below 0.5 never "
        "reached its median step to solve within the budget. Right of each curve: seeds solved / seeds finished "
        f"(failed and unfinished runs are left out). {STYLE_NOTE}",
        "no finished run records a solved criterion (solved_criterion)"),
    "accuracy_vs_eval_length": Spec(
        accuracy_vs_eval_length, "Length generalisation: final accuracy of the runs with eval.lengths at each "
        "evaluation length (log x), one panel per task and training length T (dashed). Mean over seeds, band: the "
        "95% interval of the lengths table (its caption names the method); points: every seed where a cell has at "
        f"most {D.FEW_SEEDS}. Loosely dotted (grey): chance accuracy; thick densely dotted (dark grey): the no-binding "
        f"level of recall tasks that have one (MQAR: 1/D). {STYLE_NOTE}",
        "no run evaluated at other lengths (eval.lengths)"),
    "expected_best": Spec(
        expected_best, "How much tuning a result took (Dodge et al. 2019, \"Show your work\", EMNLP): for each "
        "tuned point (sweeps with tune:, their tuning.json), the expected best selection score of k trials drawn "
        "with replacement from its N candidates' scores (each the mean over the selection seeds on the evaluation "
        "set), k = 1..N; for a loss the expected lowest. At k = 1 it is the candidates' mean, and it approaches the "
        "best candidate's score as k grows. Band: ±1 standard deviation of that best, kept inside the range of the "
        "scores. A line that rises early reached its best with few trials; one that keeps rising needed the whole "
        f"grid. Candidates without a score (no selection run finished) are left out and counted. {STYLE_NOTE}",
        "no tuned sweep (no tuning.json under the results folder)"),
    "grad_through_time": Spec(
        grad_through_time, "‖∂L/∂h_t‖ of the top recurrent layer vs distance from the loss, at initialisation "
        "and after training (two longest lengths per task); exact zeros (underflow) are marked on a strip under "
        f"the panel (medians only). Median over seeds; thin lines: every seed where a cell has at most {D.FEW_SEEDS} "
        f"(a seed's exact zeros: gaps). {STYLE_NOTE}", "no gradient profiles of a recurrent layer"),
    "input_grad_through_time": Spec(
        input_grad_through_time, "‖∂L/∂x_t‖ at the embedded input vs distance from the loss (every model, incl. "
        f"the Transformer); median over seeds, thin lines: every seed where a cell has at most {D.FEW_SEEDS}. "
        f"{STYLE_NOTE}", "no gradient profiles"),
    "grad_norm": Spec(
        grad_norm, "Global gradient norm (before clipping) vs training step: median over seeds, band: min–max, thin "
        f"lines: every seed where a cell has at most {D.FEW_SEEDS}. {TRUNCATED_NOTE} {STYLE_NOTE}",
        "no grad_norm in the metrics of completed runs"),
    "throughput": Spec(
        throughput, "Training throughput vs length, mean over seeds, points: every seed where a cell has at most "
        f"{D.FEW_SEEDS} (colour and marker: model; line style: backend and the config keys that differ between "
        "configurations); kernel benchmark panels when results exist under bench/.",
        "no tokens_per_s recorded and no kernel benchmark results"),
    "kernels": Spec(
        kernels, "Kernel benchmarks (`seqbench bench`): median time per step of one layer vs hidden size, per pass and "
        "precision (colour and marker: cell; line style: backend); dotted, in the cell's colour: the floor, FLOPs and "
        "bytes per step over the device's datasheet ceilings.", "no kernel benchmark results under bench/"),
}
