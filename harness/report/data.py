"""The report's data: a results folder's records as tidy DataFrames, aggregated over seeds before anything is drawn.

Everything here is read from the records through `harness.loaders`; nothing a run records is recomputed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import pandas as pd

from ..loaders import load_grad_profiles, load_metrics, load_runs
from ..models import MODELS

#: base models in the order (and so the colours) every figure and table uses; variants sort after their base
MODEL_ORDER = ("rnn", "lstm", "gru", "transformer")
STATUSES = ("completed", "diverged", "failed", "incomplete")
#: runs that trained to their end or to their divergence: the denominator of a solve rate (a failed run is a harness
#: or set-up error, not evidence about the model, and an incomplete one has not finished)
FINISHED = ("completed", "diverged")
#: one row of the summary table; backend is a key so that tokens/s of different kernels are never averaged together
CELL = ["task", "length", "label", "backend"]
INIT, END = "initialisation (step 0)", "end of training"
BENCH_COLUMNS = ["cell", "backend", "batch", "hidden", "length", "dtype", "pass", "median_us", "p20_us", "p80_us",
                 "tokens_per_s"]


@dataclasses.dataclass
class ReportData:
    """A results folder, read once: `runs` (one row each, every status), `cells` (aggregated per CELL), the
    completed runs' `metrics` and `profiles` (long, with the cell keys), kernel `bench` results and `sweeps`."""

    root: Path
    runs: pd.DataFrame
    cells: pd.DataFrame
    metrics: pd.DataFrame
    profiles: pd.DataFrame
    bench: pd.DataFrame
    sweeps: list[dict]

    @property
    def labels(self) -> list[str]:
        """Model labels present (runs and kernel benchmarks), in the fixed order."""
        return sorted(set(self.runs.label) | set(self.bench.get("cell", [])), key=label_order)


def load(root: Path) -> ReportData:
    """Read every record under `root`; ValueError if there is none."""
    root = Path(root)
    runs = load_runs(root)
    if runs.empty:
        raise ValueError(f"no runs under {root}")
    runs = add_keys(runs)
    metrics = load_metrics(root)
    last = metrics.groupby("run_id").step.max()
    runs["last_step"] = runs.run_id.map(last)  # how far an incomplete run got
    keys = runs.loc[runs.status == "completed", ["run_id", *CELL]]
    wanted = metrics[metrics.metric.isin(["eval_loss", "grad_norm"])]
    return ReportData(root=root, runs=runs, cells=cells(runs), metrics=wanted.merge(keys, on="run_id"),
                      profiles=load_grad_profiles(root).merge(keys, on="run_id"), bench=load_bench(root),
                      sweeps=load_sweeps(root))


# --- runs and model labels -----------------------------------------------------------------------------------------
@functools.cache
def _default_layers(model: str) -> int:
    fields = getattr(MODELS.get(model), "model_fields", {})
    return fields["layers"].default if "layers" in fields else 1


def model_label(name: str, nonlinearity=None, layers=None) -> str:
    """`rnn`, `rnn-relu`, `lstm-L2`: the model name plus whatever differs from that model's defaults (tanh, depth)."""
    label = str(name)
    if isinstance(nonlinearity, str) and nonlinearity != "tanh":
        label += f"-{nonlinearity}"
    if layers is not None and not pd.isna(layers) and int(layers) != _default_layers(name):
        label += f"-L{int(layers)}"
    return label


def label_order(label: str) -> tuple:
    """Sort key: base models in MODEL_ORDER, unknown ones after them, each base's variants right after it."""
    base = label.split("-")[0]
    return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), base, label != base, label)


def add_keys(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table plus the cell keys: `label`, `length` (T) and `backend` (also for incomplete runs)."""
    runs = runs.copy()
    config = [runs.get(f"config.model.{k}", pd.Series(None, index=runs.index)) for k in ("nonlinearity", "layers")]
    runs["label"] = [model_label(*row) for row in zip(runs["config.model.name"], *config)]
    runs["length"] = runs["config.task.length"].astype(int)
    backend = runs.get("backend", pd.Series(None, index=runs.index, dtype=object))
    runs["backend"] = backend.fillna(runs.get("config.model.backend", "torch")).fillna("torch")
    return runs


# --- statistics ----------------------------------------------------------------------------------------------------
def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df` (closed form: Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, series, term = math.cos(theta) ** 2, 0.0, 1.0
    if df % 2:  # odd: (2/pi)(theta + sin cos (1 + 2/3 cos^2 + 2·4/(3·5) cos^4 + ...))
        for k in range(1, (df - 1) // 2 + 1):
            series, term = series + term, term * c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    for k in range(1, df // 2 + 1):  # even: sin (1 + 1/2 cos^2 + 1·3/(2·4) cos^4 + ...)
        series, term = series + term, term * c2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * series


@functools.cache
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` degrees of freedom, by bisection (no scipy needed)."""
    lo, hi = 0.0, 1e4
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < 2 * p - 1 else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) over the non-null values; the half-width is NaN when n < 2."""
    v = pd.Series(values, dtype="float64").dropna()
    n = len(v)
    if n < 2:
        return (v.iloc[0] if n else math.nan), math.nan, n
    return v.mean(), t_quantile(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n), n


# --- aggregation ---------------------------------------------------------------------------------------------------
def summarise_cell(g: pd.DataFrame) -> dict:
    """One summary row from the runs of one cell (every status)."""
    done = g[g.status == "completed"]
    finished = g[g.status.isin(FINISHED)]
    loss, loss_ci, n = mean_ci(done.get("final.eval_loss"))
    acc, acc_ci, _ = mean_ci(done.get("final.eval_accuracy"))
    solved = finished.solved_step.dropna() if "solved_step" in g else pd.Series(dtype="float64")
    return {
        "loss_mean": loss, "loss_ci": loss_ci, "accuracy_mean": acc, "accuracy_ci": acc_ci, "n": n,
        "solve_rate": len(solved) / len(finished) if len(finished) else math.nan,
        "steps_to_solve": solved.median() if len(solved) else math.nan,
        "tokens_per_s": pd.to_numeric(done.get("tokens_per_s"), errors="coerce").mean(),
        "params": done.get("params", pd.Series(dtype="float64")).median(),
        "baseline_loss": g.get("baseline_loss", pd.Series(dtype="float64")).median(),
        **{status: int((g.status == status).sum()) for status in STATUSES},
    }


def sort_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by task, length, then label in the fixed model order."""
    order = frame.label.map(label_order)
    return frame.assign(_o=order).sort_values(["task", "length", "_o"]).drop(columns="_o").reset_index(drop=True)


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model label x task x length x backend: means, 95% CIs, solve rate, counts of every status."""
    rows = [{**dict(zip(CELL, key)), **summarise_cell(g)} for key, g in runs.groupby(CELL, sort=False)]
    return sort_cells(pd.DataFrame(rows))


def seed_bands(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Median, min and max over seeds of `metric` per cell and step (columns median, lo, hi, n)."""
    m = metrics[metrics.metric == metric]
    stats = m.groupby(["task", "length", "label", "step"], sort=False).value.agg(
        median="median", lo="min", hi="max", n="count")
    return stats.reset_index()


def profile_medians(profiles: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Median over seeds of ‖∂L/∂q_t‖ by distance, at initialisation (step 0) and at the end (each run's last
    profile). For h, the top recurrent layer of each run. A median of exact zeros stays 0 (underflow), never dropped.
    """
    p = profiles[profiles.quantity == quantity]
    by_run = p.groupby("run_id")
    top = p.layer == by_run.layer.transform("max")
    last = p.step == by_run.step.transform("max")
    p = p[top & ((p.step == 0) | last)]
    p = p.assign(phase=p.step.eq(0).map({True: INIT, False: END}))
    med = p.groupby(["task", "length", "label", "phase", "distance"], sort=False).norm.median()
    return med.reset_index()


# --- other files ---------------------------------------------------------------------------------------------------
def load_bench(root: Path) -> pd.DataFrame:
    """Kernel benchmark results from `root/bench/**/*.json` (`{"machine": {...}, "results": [...]}`); empty if none."""
    frames = []
    for path in sorted((Path(root) / "bench").rglob("*.json")):
        doc = json.loads(path.read_text())
        # a kernel that failed its correctness check has no timing (`error` instead): nothing to plot
        results = pd.DataFrame([r for r in doc.get("results", []) if "error" not in r])
        if results.empty:
            continue
        missing = set(BENCH_COLUMNS) - set(results.columns)
        if missing:
            raise ValueError(f"{path}: kernel benchmark results lack {sorted(missing)}")
        machine = doc.get("machine", {})
        frames.append(results.assign(machine=machine.get("device_name") or machine.get("name") or "", file=str(path)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=BENCH_COLUMNS)


def load_sweeps(root: Path) -> list[dict]:
    """Every `sweep.json` under `root` (name, command, commit, run_ids, ...), with its `path`."""
    return [{**json.loads(p.read_text()), "path": str(p)} for p in sorted(Path(root).rglob("sweep.json"))]
