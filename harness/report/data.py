"""The report's data: a results folder's records as tidy DataFrames, aggregated over seeds before anything is drawn.

Everything here is read from the records through `harness.loaders`; nothing a run records is recomputed. A cell is one
configuration up to its seeds: task, length, model label, the backend that actually ran, and every config key whose
value differs between the runs of the report (`ReportData.keys`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import OPERATIONAL_KEYS
from ..errors import RecordError
from ..loaders import load_grad_profiles, load_metrics, load_runs
from ..records import json_kind, read_json
from ..status import FINISHED as RECORD_FINISHED, Status
from ...tasks import TASKS, get_task
from ..models import MODELS
from ..models.plugins import PLUGIN_BACKEND
from . import tuning
from .stats import (ALPHA, clopper_pearson, fisher_p, geo_ci, holm, logrank_p, mean_ci, paired_difference,
                    paired_ratio, proportion_ci, sign_flip_p, smallest_fisher_p, smallest_logrank_p,
                    smallest_sign_flip_p)
from .survival import km_median

#: the built-in models in the order every figure and table lists them (each model's `report_order`); variants sort
#: after their base, models from outside the package after the built-in ones
MODEL_ORDER = tuple(sorted((n for n, c in MODELS.items() if c.report_order is not None),
                           key=lambda n: MODELS[n].report_order))
#: what a report counts a record as: a finished record's status (status.FINISHED), or incomplete (no summary yet)
STATUSES = (*RECORD_FINISHED, "incomplete")
#: runs that trained to their end or to their divergence: the denominator of a solve rate (a failed run is a harness
#: or set-up error, not evidence about the model, and an incomplete one has not finished)
FINISHED_TRAINING = (Status.COMPLETED.value, Status.DIVERGED.value)
#: the fixed part of a cell's key; the config keys that vary in a report follow (backend is what ran, so that
#: tokens/s of different kernels are never averaged together)
CELL = ["task", "length", "label", "backend"]
#: a run's seeds: what a cell aggregates over; `n` counts distinct pairs
SEED = ["config.seed", "config.data_seed"]
#: config columns that never separate cells: the seeds, how a run was executed, and what CELL already says
NOT_KEYS = frozenset({*SEED, *(f"config.{k}" for k in OPERATIONAL_KEYS), "config.eval.lengths",
                      "config.task.name", "config.task.length",
                      "config.model.name", "config.model.backend", "config.model.nonlinearity"})
#: settings every table shows, by short name -> config columns (the Transformer's width is its d_model)
SETTINGS = {"hidden": ("config.model.hidden", "config.model.d_model"), "layers": ("config.model.layers",),
            "lr": ("config.train.lr",), "batch_size": ("config.train.batch_size",), "steps": ("config.train.steps",)}
#: config columns shown under another short name: the Transformer's width shares `hidden`, a parameter budget is the
#: `budget` (the summary's `params` is the count a run actually has)
RENAMED = {"config.model.d_model": "hidden", "config.model.params": "budget"}
#: short names of the widths a budget chooses (with model.params they follow from the budget and the model)
WIDTHS = ("hidden", "embed", "model.embed")
#: cells with at most this many seeds show every seed's value in the figures
FEW_SEEDS = 10
INIT, END = "initialisation (step 0)", "end of training"
BENCH_COLUMNS = ["cell", "backend", "batch", "hidden", "length", "dtype", "pass", "median_us", "p20_us", "p80_us",
                 "tokens_per_s"]


@dataclasses.dataclass
class ReportData:
    """A results folder, read once: `runs` (one row each, every status, with its `cell`), `cells` (aggregated per
    cell, row i is cell i), the short names of the config `keys` that separate cells, the paired model
    `comparisons`, the counted completed runs' `metrics` and `profiles` (long, with the cell keys), kernel `bench`
    results and `sweeps`."""

    root: Path
    runs: pd.DataFrame
    cells: pd.DataFrame
    metrics: pd.DataFrame
    profiles: pd.DataFrame
    bench: pd.DataFrame
    sweeps: list[dict]
    keys: list[str] = dataclasses.field(default_factory=list)
    comparisons: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    lengths: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    #: tuned sweeps' tuning.json records, and their selection runs (kept out of `runs`: they chose a tuned cell's
    #: values on the evaluation set, and only the expected-best figure shows them)
    tuning: list = dataclasses.field(default_factory=list)
    selection: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def words(self, task: str) -> dict[str, str | None]:
        """The task's loss and accuracy labels and accuracy note (`loss_label`, `accuracy_label`, `accuracy_note`),
        as its runs recorded them (see `task_words`)."""
        return task_words(self.runs, task)

    @property
    def record_warnings(self) -> list[str]:
        """What records have lost though they can still be read, one sentence each (`load_runs`' `record_warnings`):
        a finished run without its config.json (its summary's copy is used), a completed run with no metrics rows (no
        curves; its final values come from its summary)."""
        notes = self.runs.get("record_warnings", pd.Series(dtype=object)).dropna()
        return [note for text in notes for note in text.split("; ")]

    @property
    def recorded(self) -> pd.DataFrame:
        """Every run the report read: `runs` and the tuned sweeps' selection runs (provenance covers both)."""
        return pd.concat([self.runs, self.selection], ignore_index=True) if len(self.selection) else self.runs

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
    docs, sweeps = tuning.load(root), load_sweeps(root)
    chosen_by = selection_runs(docs)
    selection = runs[runs.run_id.isin(chosen_by)]
    runs = runs[~runs.run_id.isin(chosen_by)]
    if runs.empty:
        raise ValueError(f"no runs under {root} but the selection runs of tuned sweeps")
    runs, keys = add_keys(runs, tuned_keys(runs, sweeps, docs))
    if len(selection):
        selection, _ = add_keys(selection)
    metrics = load_metrics(root)
    last = metrics.groupby("run_id").step.max()
    runs["last_step"] = runs.run_id.map(last)  # how far an incomplete run got
    table = cells(runs, keys)
    runs = runs.assign(cell=cell_index(runs, table, keys))
    counted = runs.loc[(runs.status == "completed") & runs.counted, ["run_id", "cell", *CELL, "variant"]]
    wanted = metrics[metrics.metric.isin(["eval_loss", "grad_norm"])]
    profiles = load_grad_profiles(root)
    if runs.run_id.duplicated().any():  # one run recorded in two folders: the loaders give its rows twice
        wanted = wanted.drop_duplicates(["run_id", "step", "metric"])
        profiles = profiles.drop_duplicates(["run_id", "step", "quantity", "layer", "t"])
    counted = counted.drop_duplicates("run_id")
    return ReportData(root=root, runs=runs, cells=table, metrics=wanted.merge(counted, on="run_id"),
                      profiles=profiles.merge(counted, on="run_id"), bench=load_bench(root),
                      sweeps=sweeps, keys=keys, tuning=docs, selection=selection,
                      comparisons=comparisons(runs, table, pairing_keys(runs, keys)),
                      lengths=length_results(runs[runs.run_id.isin(counted.run_id)].drop_duplicates("run_id")))


# --- runs, model labels and cell keys ------------------------------------------------------------------------------
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


def backend_name(kernel_path) -> str | None:
    """What computed the recurrence, read from the words of a record's `kernel_path`, for records made before the
    structured `kernel` (see seqbench.harness.models.recurrent and seqbench.kernels.fused):
    `triton` where a fused path ran, `reference (fallback)` where a fused module fell back to its step loop,
    `reference` for the reference backend, `torch` for torch.nn modules and the Transformer's attention; None where
    the record does not say (no path recorded, or a fused module that never ran a forward)."""
    if not isinstance(kernel_path, str):
        return None
    module, _, path = kernel_path.partition(": ")
    module = module.removeprefix("seqbench.")  # records made before the package moved under `seqbench` lack it
    if path.startswith("fused-triton"):
        return "triton"
    if path.startswith("fallback-"):  # minGRU/minLSTM's triton falls back to the torch scan ("fallback-scan")
        what = path.removeprefix("fallback-").split(":")[0]
        return {"scan": "torch"}.get(what, what) + " (fallback)"
    if module.startswith("kernels.reference.") or path.startswith("reference-loop"):
        return "reference"
    if path.startswith("scan-torch"):
        return "torch"
    return None if module.startswith("kernels.") else "torch"


def _backends(runs: pd.DataFrame) -> pd.Series:
    """Each run's backend as recorded; a run whose record does not say (unfinished, or failed before a forward)
    takes what its otherwise identical runs (other seeds) recorded, else its configured backend."""
    recorded = runs.get("kernel_path", pd.Series(None, index=runs.index, dtype=object)).map(backend_name)
    if "kernel.backend" in runs:  # the structured record (`kernel`); older records say it in kernel_path alone
        fallback = runs.get("kernel.fallback", pd.Series(None, index=runs.index, dtype=object))
        structured = runs["kernel.backend"].where(fallback.isna(), runs["kernel.backend"] + " (fallback)")
        recorded = structured.where(runs["kernel.backend"].notna(), recorded)
    identity = [c for c in runs.columns if c.startswith("config.") and c not in SEED
                and c.removeprefix("config.") not in OPERATIONAL_KEYS]
    same = pd.Series([repr(row) for row in runs[identity].itertuples(index=False)], index=runs.index)
    peers = recorded.dropna().groupby(same).agg(lambda v: v.iloc[0] if v.nunique() == 1 else None)
    configured = runs.get("config.model.backend", pd.Series(None, index=runs.index, dtype=object))
    backends = recorded.fillna(same.map(peers)).fillna(configured).fillna("torch")
    # a model from outside seqbench runs its own code, which kernel_path cannot name: its backend key, else `plugin`
    plugin = ~runs["config.model.name"].isin(list(MODELS))
    return backends.mask(plugin, configured.fillna(PLUGIN_BACKEND))


def short_names(runs: pd.DataFrame) -> dict[str, str]:
    """Config column -> the short name it is shown under: its last part (`hidden`, `lr`), `section.leaf` where that
    would clash; the Transformer's `d_model` shares `hidden` with the recurrent models' hidden size."""
    columns = [c for c in runs.columns if c.startswith("config.") and c not in NOT_KEYS]
    leaf = {c: RENAMED.get(c, c.rsplit(".", 1)[1]) for c in columns}
    taken = set(runs.columns) | RESERVED
    counts = pd.Series([v for c, v in leaf.items() if c not in RENAMED]).value_counts()
    return {c: c.removeprefix("config.") if leaf[c] in taken or counts.get(leaf[c], 0) > 1 else leaf[c]
            for c in columns}


def _priority(names: dict[str, str]):
    """Sort key for short names: the settings first, then model, task, training and other keys, in record order."""
    order = {name: i for i, name in enumerate(dict.fromkeys(names.values()))}
    section = {n: c.split(".")[1] if c.count(".") > 1 else "" for c, n in names.items()}
    rank = {"model": 0, "task": 1, "train": 2}
    return lambda n: (list(SETTINGS).index(n) if n in SETTINGS else len(SETTINGS), rank.get(section[n], 3), order[n])


def varying_keys(runs: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """The short names of the config keys that separate cells. A model key (`model.*`) varies if it takes two values
    among the runs of one model, a task key likewise within one task, any other key anywhere: a key that only some
    models have (the Transformer's heads) is missing, not varying, for the others, and one that differs between models
    only (each model's default depth) is already told apart by the model. Missing counts as a value where the same
    model also has the key (an LSTM's forget_bias null vs 1.0). A key that repeats an earlier one wherever it is set
    (`embed` following `hidden`) is dropped."""
    owners = {"model": runs["config.model.name"], "task": runs["config.task.name"]}
    found = []
    for name in dict.fromkeys(names.values()):
        column = next(c for c, n in names.items() if n == name)
        owner = owners.get(column.split(".")[1]) if column.count(".") > 1 else None
        values = runs[name]
        if owner is None:
            varies = values.nunique() > 1
        else:
            present = values.notna().groupby(owner).any()
            varies = (values.groupby(owner).nunique(dropna=False)[present] > 1).any()
        if varies:
            found.append(name)
    kept = []
    for name in sorted(found, key=_priority(names)):
        values = runs[name]
        if not any(values.dropna().eq(runs.loc[values.notna(), other]).all() for other in kept):
            kept.append(name)
    return kept


def _text(value) -> str:
    """A key's value as text: 8, 0.001, adam; '' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def selection_runs(docs: list[dict]) -> set[str]:
    """The run_ids of the tuned sweeps' selection runs (every candidate of every point of their tuning.json)."""
    return {i for doc in docs for point in doc["points"] for c in point["candidates"] for i in c.get("run_ids") or []}


def tuned_keys(runs: pd.DataFrame, sweeps: list[dict], docs: list[dict]) -> pd.Series:
    """Per run, the config keys its sweep tuned (`train.lr`, comma-separated) where it is a final run of a tuned
    sweep (in that sweep's run_ids, not a selection run), else ''."""
    keys_of = {str(Path(doc["path"]).resolve()): ", ".join(doc["keys"]) for doc in docs}
    tuned = {}
    for sweep in sweeps:
        if not sweep.get("tuned") or not isinstance(sweep.get("tuning"), str):
            continue
        keys = keys_of.get(str((Path(sweep["path"]).parent / sweep["tuning"]).resolve()))
        selection = set(sweep.get("selection_run_ids") or [])
        tuned |= {i: keys for i in sweep.get("run_ids") or [] if keys and i not in selection}
    return pd.Series([tuned.get(i, "") for i in runs.run_id], index=runs.index, dtype=object)


def _untuned(keys: list[str], runs: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """`keys` without those that vary only because a sweep tuned them: a tuned cell's value (each model's chosen
    learning rate) is a setting of that cell, not a key that keeps two models from being compared. `tuned` joins the
    keys instead, so that tuned cells are compared with tuned cells only."""
    if not runs.tuned.astype(bool).any():
        return keys
    shorts = {names.get(f"config.{k}") for text in runs.tuned.unique() for k in text.split(", ") if k}
    plain = runs[runs.tuned == ""]
    return [k for k in keys if k not in shorts or plain[k].nunique() > 1] + ["tuned"]


def add_keys(runs: pd.DataFrame, tuned: pd.Series | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The runs table plus the cell keys: `label`, `length` (T), `backend` (what ran; the configured one stays in
    `config.model.backend`), a column per config key under its short name, `tuned` (the short names of the keys a
    tuned sweep chose for this run, `lr`, or ''), `variant` (the backend where several ran, and the varying keys, as
    text: `hidden=8, lr=0.001`) and `counted` (False for a record that repeats a seed of its cell); and the short
    names of the varying keys."""
    runs = runs.copy()
    config = [runs.get(f"config.model.{k}", pd.Series(None, index=runs.index)) for k in ("nonlinearity", "layers")]
    runs["label"] = [model_label(*row) for row in zip(runs["config.model.name"], *config)]
    runs["length"] = runs["config.task.length"].astype(int)
    runs["backend"] = _backends(runs)
    names = short_names(runs)
    for column, name in names.items():  # d_model fills the hidden column of the Transformer's runs
        values = runs[column].map(lambda v: tuple(v) if isinstance(v, list) else v)  # list values: hashable
        runs[name] = runs[name].fillna(values) if name in runs else values
    keys = varying_keys(runs, names)
    tuned = pd.Series("", index=runs.index) if tuned is None else tuned.reindex(runs.index).fillna("")
    runs["tuned"] = tuned.map(lambda text: ", ".join(names.get(f"config.{k}", k) for k in text.split(", ") if k))
    keys = _untuned(keys, runs.assign(tuned=tuned), names)
    # figures facet by task: a key that differs only between tasks (each task's step budget) needs no line style;
    # nor do the widths where every run has a budget: there they follow from the budget and the model
    by_budget = budgeted(runs, keys)
    styled = [k for k in keys if runs[k].map(_text).groupby(runs["config.task.name"]).nunique().max() > 1
              and not (by_budget and k in WIDTHS)]
    values = [[f"{k}={_text(v)}" for v in runs[k]] for k in styled]
    runs["setting"] = [", ".join(p for p in row if not p.endswith("=")) for row in zip(*values)] if styled else ""
    backend = [f"backend={b}" for b in runs.backend] if runs.backend.nunique() > 1 else [""] * len(runs)
    runs["variant"] = [", ".join(p for p in row if p) for row in zip(backend, runs.setting)]
    return mark_counted(runs, [*CELL, *keys]), keys


def pairing_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys two models must share to be compared: with budgets, the budget and not the widths it chose."""
    return [k for k in keys if not (budgeted(runs, keys) and k in WIDTHS)]


def budgeted(runs: pd.DataFrame, keys) -> bool:
    """Whether the runs compare parameter budgets: `budget` (model.params) separates cells and every run has one."""
    return "budget" in keys and runs["budget"].notna().all()


STATUS_RANK = {status: i for i, status in enumerate(STATUSES)}


def mark_counted(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`counted`: one run per seed of a cell. A seed recorded more than once (merged folders, duplicate records)
    counts once: its completed record with a final eval loss first, then the first by status and path."""
    seeds = [c for c in SEED if c in runs] or ["seed"]
    loss = pd.to_numeric(runs.get("final.eval_loss", pd.Series(np.nan, index=runs.index)), errors="coerce")
    order = runs.assign(_rank=runs.status.map(STATUS_RANK), _none=loss.isna(), _path=runs.get("path", ""))
    order = order.sort_values(["_rank", "_none", "_path"], kind="stable")
    first = ~order.duplicated(subset=[k for k in [*keys, *seeds] if k in runs])
    return runs.assign(counted=first.reindex(runs.index))


def cell_index(runs: pd.DataFrame, table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Each run's row in the cells table."""
    on = [*CELL, *keys]
    ids = table[on].reset_index().rename(columns={"index": "cell"})
    merged = runs[on].reset_index().merge(ids, on=on, how="left").set_index("index")  # NaN keys match each other
    return merged.cell.reindex(runs.index)


# --- aggregation ---------------------------------------------------------------------------------------------------
def _column(g: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(g.get(name, pd.Series(np.nan, index=g.index)), errors="coerce")


#: where a cell's final numbers come from: the held-out test set, scored once at the end of each run, or (records
#: made before it, or a cell whose runs do not all have it) the evaluation set, which early stopping also used
FINAL_SETS = {"test": "held-out test set", "eval": "evaluation set, also used for early stopping"}


def final_set(done: pd.DataFrame) -> str:
    """`test` where every run of `done` with a final eval loss also has a final test loss, else `eval`: one set for
    the whole cell (mixing them would average two different measurements)."""
    valued = _column(done, "final.eval_loss").notna()
    return "test" if valued.any() and _column(done, "final.test_loss")[valued].notna().all() else "eval"


def final_values(done: pd.DataFrame, which: str) -> pd.DataFrame:
    """The final `loss` and `accuracy` of completed runs from `which` set (`test` or `eval`)."""
    return pd.DataFrame({"loss": _column(done, f"final.{which}_loss"),
                         "accuracy": _column(done, f"final.{which}_accuracy")}, index=done.index)


def solve_times(finished: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(step, solved) per finished run, for Kaplan–Meier: a completed run that met the criterion is an event at its
    solved step; one that did not is censored at its budget (config.train.steps); a diverged run is never solved,
    and is censored where it diverged (else where it stopped)."""
    completed = finished.status == "completed"
    solved = completed & _column(finished, "solved_step").notna()
    budget = _column(finished, "config.train.steps").fillna(_column(finished, "steps_done"))
    stopped = _column(finished, "diverged_step").fillna(_column(finished, "steps_done")) \
        .fillna(_column(finished, "last_step"))
    steps = _column(finished, "solved_step").where(solved, budget.where(completed, stopped))
    return steps, solved


def summarise_cell(g: pd.DataFrame) -> dict:
    """One summary row from the runs of one cell (every status): statistics over its counted runs (one per seed),
    counts of every status over all its records. Final loss and accuracy come from the test set where every run
    has it (`final_set`)."""
    if "counted" not in g:
        g = mark_counted(g, [])
    one = g[g.counted]
    done = one[one.status == "completed"]
    which = final_set(done)
    final = final_values(done, which)
    gmean, factor, n = geo_ci(final.loss)
    acc, acc_lo, acc_hi, _ = proportion_ci(final.accuracy[final.loss.notna()])
    finished = one[one.status.isin(FINISHED_TRAINING)]
    # a diverged run is never solved, whatever it met before diverging; it stays in the denominator
    steps, solved = solve_times(finished)
    rate, rate_lo, rate_hi = clopper_pearson(int(solved.sum()), len(finished))
    tokens, tokens_ci, _ = mean_ci(_column(done, "tokens_per_s"))
    return {
        "loss_gmean": gmean, "loss_factor": factor,
        "loss_lo": gmean / factor if n > 1 else math.nan, "loss_hi": gmean * factor if n > 1 else math.nan,
        "accuracy_mean": acc, "accuracy_lo": acc_lo, "accuracy_hi": acc_hi, "n": n, "final_set": which,
        "no_final_value": len(done) - n, "solved": int(solved.sum()), "finished": len(finished),
        "solve_rate": rate, "solve_lo": rate_lo, "solve_hi": rate_hi,
        "steps_to_solve": km_median(steps, solved) if len(finished) else math.nan,
        "tokens_per_s": tokens, "tokens_per_s_ci": tokens_ci,
        "params": _column(done, "params").median(),
        "baseline_loss": _column(g, "baseline_loss").median(),
        "chance": _chance(g),
        # recall tasks: the level a model reaches without binding cue to answer (MQAR: 1/D, ln D), as recorded
        "no_binding": _column(g, "no_binding_accuracy").median() if "no_binding_accuracy" in g else math.nan,
        "no_binding_loss": _column(g, "no_binding_loss").median() if "no_binding_loss" in g else math.nan,
        **{status: int((g.status == status).sum()) for status in STATUSES},
        "repeated_seeds": len(g) - len(one),
    }


def _chance(g: pd.DataFrame) -> float:
    """The task's chance accuracy, as the runs recorded it (`chance_accuracy`); records from before that field: what
    the task (its registered class, with the runs' task keys) says."""
    if "chance_accuracy" in g and g.chance_accuracy.notna().any():
        return _column(g, "chance_accuracy").median()
    task = _task_of(g.iloc[0]) if len(g) else None
    chance = task.chance_accuracy if task is not None else None
    return math.nan if chance is None else chance


#: what a task says of its own numbers (tasks.base.Task), recorded in every summary: field -> what a report shows
#: where neither a record nor the task says
TASK_WORDS = {"loss_label": "eval loss", "accuracy_label": "eval accuracy", "accuracy_note": None}


def task_words(runs: pd.DataFrame, task: str) -> dict[str, str | None]:
    """A task's loss and accuracy labels and accuracy note, as its runs recorded them; records from before these
    fields: the registered task's own, and for a task not registered here the plain defaults."""
    rows = runs[runs.task == task] if "task" in runs else runs.iloc[:0]
    cls = TASKS.get(task)
    words = {}
    for field, default in TASK_WORDS.items():
        recorded = rows[field].dropna() if field in rows else ()
        words[field] = recorded.iloc[0] if len(recorded) else getattr(cls, field, default)
    return words


def _task_of(row: pd.Series):
    """The task a run's record describes, built from its config's task keys (`config.task.*`); None for a task this
    installation does not have, or keys it does not take."""
    params = {k.removeprefix("config.task."): v for k, v in row.items()
              if k.startswith("config.task.") and k != "config.task.name" and not _missing(v)}
    if row.get("task") not in TASKS:
        return None
    try:
        return get_task(row["task"], **params)
    except (ValueError, TypeError):
        return None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


#: column names of the cells table and runs: config keys are never shown under them
RESERVED = frozenset({*CELL, "cell", "variant", "setting", "counted", "tuned", "model", "T", "n", "seed", "status",
                      "run_id", "path", "chance", "no_binding", "no_binding_loss", "params", "solved", "finished", "no_final_value", "repeated_seeds",
                      "final_set"})


def _first(values: pd.Series):
    values = values.dropna()
    return values.iloc[0] if len(values) else math.nan


def _settings(g: pd.DataFrame) -> dict:
    """The settings every table shows (a cell's runs share them; missing where no run has them)."""
    return {name: _first(pd.concat([g[c] for c in columns if c in g] or [pd.Series(dtype=object)]))
            for name, columns in SETTINGS.items()}


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name == "label":
        return column.map(label_order)
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().sum() == column.notna().sum() else column.astype(str)


def sort_cells(frame: pd.DataFrame, keys: list[str] = ()) -> pd.DataFrame:
    """Rows by task, length, label in the fixed model order, backend, then the varying keys; a parameter budget comes
    before the model (the models side by side at each budget)."""
    first = ["task", "length", "budget"] if "budget" in keys else ["task", "length"]
    by = [c for c in dict.fromkeys([*first, *CELL, *keys]) if c in frame]
    return frame.sort_values(by, key=_sort_key, kind="stable", na_position="last").reset_index(drop=True)


def cells(runs: pd.DataFrame, keys: list[str] = ()) -> pd.DataFrame:
    """One row per cell (CELL + `keys`): statistics over seeds, settings, counts of every status."""
    on = [*CELL, *keys]
    rows = []
    for key, g in runs.groupby(on, sort=False, dropna=False):
        row = {**dict(zip(on, key)), **_settings(g), **summarise_cell(g)}
        rows.append({**row, "variant": g.variant.iloc[0] if "variant" in g else "",
                     "setting": g.setting.iloc[0] if "setting" in g else ""})
    return sort_cells(pd.DataFrame(rows), keys)


def duplicate_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per seed recorded by more than one run of a cell: cell, seed, the run_ids and their folders (the
    counted one first)."""
    seeds = [c for c in SEED if c in runs]
    repeated = runs[runs.duplicated(["cell", *seeds], keep=False)].sort_values("counted", ascending=False, kind="stable")
    rows = [{"cell": cell, "seed": int(seed[0]), "run_ids": list(g.run_id), "paths": list(g.path)}
            for (cell, *seed), g in repeated.groupby(["cell", *seeds], sort=True)]
    return pd.DataFrame(rows, columns=["cell", "seed", "run_ids", "paths"])


def comparable(a: pd.Series, b: pd.Series, keys: list[str]) -> bool:
    """Two cells of different models in the same task, length and settings: every varying key equal where both
    models have it, and the same backend where both have a choice of backend (the Transformer has none)."""
    same = (a.task, a.length) == (b.task, b.length) and a.label != b.label
    return same and all(pd.isna(a[k]) or pd.isna(b[k]) or a[k] == b[k] for k in [*keys, "backend_choice"])


COMPARISON = ["task", "length", "label_a", "label_b", "backend_a", "backend_b", "cell_a", "cell_b"]
#: a comparison's columns after the cell keys: what is compared, on which set, over how many seeds, each cell's value,
#: the effect A vs B with its 95% interval, the exact test, its p-value, the smallest p-value that test can reach with
#: these seeds, the p-value adjusted (Holm) over every comparison of the report, and the verdict
COMPARED = ["metric", "set", "n_a", "n_b", "pairs", "value_a", "value_b", "estimate", "lo", "hi", "test", "p",
            "smallest_p", "p_adjusted", "verdict"]
#: the test behind each compared metric
TESTS = {"final loss": "sign-flip (log loss)", "final accuracy": "sign-flip", "solve rate": "Fisher exact",
         "steps to solve": "log-rank (permutation)"}
#: what the verdict says for the model with the better value of each metric
BETTER = {"final loss": "lower", "final accuracy": "higher", "solve rate": "solves more often",
          "steps to solve": "solves sooner"}


def early_stopped(runs: pd.DataFrame) -> bool:
    """Whether these runs were configured to stop at the solved criterion (`train.early_stop`): their final values
    were measured at different steps."""
    stop = runs.get("config.train.early_stop", pd.Series(False, index=runs.index))
    return bool(stop.fillna(False).astype(bool).any())


def _finals(a: pd.DataFrame, b: pd.DataFrame) -> list[dict]:
    """The final loss and accuracy of two cells over the seeds both completed (`a`, `b`: seeds, loss, accuracy)."""
    pairs = a.merge(b, on=SEED, suffixes=("_a", "_b")).dropna(subset=["loss_a", "loss_b"])
    positive = bool(len(pairs)) and bool((pairs[["loss_a", "loss_b"]] > 0).all().all())
    ratio, factor, n = paired_ratio(pairs.loss_a, pairs.loss_b) if positive else (math.nan, math.nan, len(pairs))
    loss = {"metric": "final loss", "pairs": n, "value_a": geo_ci(pairs.loss_a)[0], "value_b": geo_ci(pairs.loss_b)[0],
            "estimate": ratio, "lo": ratio / factor, "hi": ratio * factor,
            "p": sign_flip_p(np.log(pairs.loss_a) - np.log(pairs.loss_b)) if positive else math.nan,
            "smallest_p": smallest_sign_flip_p(n), "a_better": ratio < 1}
    both = pairs.dropna(subset=["accuracy_a", "accuracy_b"])
    if both.empty:
        return [loss]
    diff, lo, hi, m = paired_difference(both.accuracy_a, both.accuracy_b)
    accuracy = {"metric": "final accuracy", "pairs": m, "value_a": both.accuracy_a.mean(),
                "value_b": both.accuracy_b.mean(), "estimate": diff, "lo": lo, "hi": hi,
                "p": sign_flip_p(both.accuracy_a - both.accuracy_b), "smallest_p": smallest_sign_flip_p(m),
                "a_better": diff > 0}
    return [loss, accuracy]


def _solving(a: pd.DataFrame, b: pd.DataFrame) -> list[dict]:
    """Solve rate (Fisher's exact test) and censored steps to solve (log-rank) of two cells' finished runs."""
    (steps_a, solved_a), (steps_b, solved_b) = solve_times(a), solve_times(b)
    k_a, k_b, n_a, n_b = int(solved_a.sum()), int(solved_b.sum()), len(a), len(b)
    rate_a, rate_b = (k_a / n_a if n_a else math.nan), (k_b / n_b if n_b else math.nan)
    rate = {"metric": "solve rate", "value_a": rate_a, "value_b": rate_b, "estimate": rate_a - rate_b,
            "p": fisher_p(k_a, n_a, k_b, n_b), "smallest_p": smallest_fisher_p(n_a, n_b), "a_better": rate_a > rate_b}
    p, z = logrank_p(steps_a, solved_a, steps_b, solved_b)
    median_a = km_median(steps_a, solved_a) if n_a else math.nan
    median_b = km_median(steps_b, solved_b) if n_b else math.nan
    time = {"metric": "steps to solve", "value_a": median_a, "value_b": median_b,
            "estimate": median_a - median_b if math.isfinite(median_a) and math.isfinite(median_b) else math.nan,
            "p": p, "smallest_p": smallest_logrank_p(n_a, n_b), "a_better": z > 0}
    return [{**row, "n_a": n_a, "n_b": n_b, "set": "", "test": TESTS[row["metric"]]} for row in (rate, time)]


def verdict(label_a: str, label_b: str, metric: str, p_adjusted: float, smallest_p: float, a_better: bool) -> str:
    """'lstm lower' where the Holm-adjusted p is below 0.05; 'n too small' where even the most extreme outcome
    could not reach p < 0.05 with these seeds; else 'no clear difference' (or 'no test' without a p-value)."""
    if smallest_p > ALPHA:
        return "n too small"
    if pd.isna(p_adjusted):
        return "no test"
    if p_adjusted < ALPHA:
        return f"{label_a if a_better else label_b} {BETTER[metric]}"
    return "no clear difference"


def comparisons(runs: pd.DataFrame, table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per pair of comparable cells (see `comparable`; A is the first in model order) and compared metric.
    Cells that trained a fixed number of steps compare their final loss (ratio A / B of geometric means) and
    accuracy (difference A − B) over the seeds both completed, each with a sign-flip test; the final values come
    from the test set where both cells have it. Where either cell was configured to stop early, final values were
    measured at different steps, so the pair compares solve rate (Fisher) and censored steps to solve (log-rank)
    over every finished seed instead. p_adjusted: Holm over every row of the report. `runs` carry their `cell`."""
    one = runs[runs.counted]
    sets = {cell: final_set(g[g.status == "completed"]) for cell, g in one.groupby("cell")}
    configurable = runs.get("config.model.backend", pd.Series(None, index=runs.index)).notna().groupby(runs.cell).any()
    table = table.assign(backend_choice=table.backend.where(configurable.reindex(table.index, fill_value=False)))
    by_cell = dict(tuple(one.groupby("cell")))
    empty = one.iloc[:0]
    rows = []
    for _, group in table.groupby(["task", "length"], sort=False):
        for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2):
            if not comparable(a, b, keys):
                continue
            if label_order(a.label) > label_order(b.label):
                a, b = b, a
            runs_a, runs_b = by_cell.get(a.name, empty), by_cell.get(b.name, empty)
            identity = {"task": a.task, "length": a.length, "label_a": a.label, "label_b": b.label,
                        "backend_a": a.backend, "backend_b": b.backend, "cell_a": a.name, "cell_b": b.name,
                        **{k: a[k] if not pd.isna(a[k]) else b[k] for k in keys}}
            if early_stopped(runs_a) or early_stopped(runs_b):
                finished = [r[r.status.isin(FINISHED_TRAINING)] for r in (runs_a, runs_b)]
                rows += [identity | row for row in _solving(*finished)]
                continue
            which = "test" if sets.get(a.name) == sets.get(b.name) == "test" else "eval"
            done = [r[r.status == "completed"] for r in (runs_a, runs_b)]
            finals = [pd.concat([r[SEED], final_values(r, which)], axis=1) for r in done]
            counts = {"n_a": int(finals[0].loss.notna().sum()), "n_b": int(finals[1].loss.notna().sum())}
            rows += [identity | row | counts | {"set": which, "test": TESTS[row["metric"]]} for row in _finals(*finals)]
    frame = pd.DataFrame(rows, columns=[*COMPARISON, *keys, *COMPARED, "a_better"])
    frame["p_adjusted"] = holm(frame.p.astype("float64"))
    frame["verdict"] = [verdict(r.label_a, r.label_b, r.metric, r.p_adjusted, r.smallest_p, r.a_better)
                        for r in frame.itertuples()] if len(frame) else []
    return frame.drop(columns="a_better").astype({"pairs": "Int64"})


def seed_bands(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Median, min and max over seeds of `metric` per cell and step (columns median, lo, hi, n)."""
    m = metrics[metrics.metric == metric]
    by = ["task", "length", "label", "variant", "cell", "step"] if "cell" in m else ["task", "length", "label", "step"]
    stats_ = m.groupby(by, sort=False).value.agg(median="median", lo="min", hi="max", n="count")
    return stats_.reset_index()


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
    by = ["task", "length", "label", *(["variant", "cell"] if "cell" in p else []), "phase", "distance"]
    return p.groupby(by, sort=False).norm.median().reset_index()


# --- other files ---------------------------------------------------------------------------------------------------
# --- length generalisation ------------------------------------------------------------------------------------------
AT_LENGTH = re.compile(r"^final\.eval_(accuracy|loss)@(\d+)$")
LENGTH_RESULTS = ["run_id", "cell", *CELL, "variant", "eval_length", "ratio", "accuracy", "loss", "set"]


def length_results(runs: pd.DataFrame) -> pd.DataFrame:
    """Final accuracy and loss of each run at every length it was evaluated at: its training length (`length`: the
    test set where every run of its cell has one, see `final_set`, else the ordinary `final.eval_*`) and each of its
    `eval.lengths` (`final.eval_*@<n>`), tidy: one row per run and `eval_length`, `ratio` = eval_length / length,
    `set` the set scored. Runs evaluated at their training length only are left out."""
    at = [(column, m.group(1), int(m.group(2))) for column in runs.columns if (m := AT_LENGTH.match(column))]
    if not at:
        return pd.DataFrame(columns=LENGTH_RESULTS)
    frames = []
    for n in sorted({n for _, _, n in at}):
        stats = {stat: pd.to_numeric(runs[column], errors="coerce") for column, stat, m in at if m == n}
        frames.append(runs.assign(eval_length=n, set="eval", **stats))
    extra = pd.concat(frames, ignore_index=True).dropna(subset=["accuracy"], how="all")
    base = runs[runs.run_id.isin(extra.run_id)]
    which = base.cell.map({cell: final_set(g) for cell, g in base.groupby("cell")})
    finals = final_values(base, "test").where(which.eq("test"), final_values(base, "eval"))
    base = base.assign(eval_length=base.length, set=which, **finals)
    out = pd.concat([base, extra], ignore_index=True).reindex(columns=LENGTH_RESULTS)
    out = out.astype({"eval_length": "int64"}).drop_duplicates(["run_id", "eval_length"])
    out["ratio"] = out.eval_length / out.length.astype("float64")
    return out.sort_values(["cell", "eval_length", "run_id"], kind="stable").reset_index(drop=True)[LENGTH_RESULTS]


def length_cells(lengths: pd.DataFrame) -> pd.DataFrame:
    """Per cell and evaluation length: mean accuracy over seeds with its 95% interval (`stats.proportion_ci`), n."""
    rows = []
    for (cell, n), g in lengths.groupby(["cell", "eval_length"], sort=True):
        mean, lo, hi, count = proportion_ci(g.accuracy)
        first = g.iloc[0]
        rows.append({"cell": cell, **{k: first[k] for k in (*CELL, "variant")}, "eval_length": n,
                     "ratio": first.ratio, "mean": mean, "lo": lo, "hi": hi, "n": count})
    return pd.DataFrame(rows)


def beyond_training(lengths: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per cell: each seed's mean accuracy over the lengths above its training length, summarised over seeds as mean
    (95% interval, `stats.proportion_ci`'s) and best seed, with the number of seeds and of lengths averaged.
    `deletang`: whether this is the score of Delétang et al. (2023), i.e. whether the cell followed their protocol:
    every run trained at lengths drawn per batch up to T (task.length_dist=uniform, read from `runs`) and evaluated
    at every length from T + 1 to its longest."""
    above = lengths[lengths.eval_length > lengths.length].dropna(subset=["accuracy"])
    uniform = set()
    if runs is not None and "config.task.length_dist" in runs:
        dist = runs.groupby("cell")["config.task.length_dist"].agg(lambda v: set(v.fillna("fixed")))
        uniform = {cell for cell, values in dist.items() if values == {"uniform"}}
    rows = []
    for cell, g in above.groupby("cell", sort=True):
        per_seed = g.groupby("run_id").accuracy.mean()
        mean, lo, hi, n = proportion_ci(per_seed)
        evaluated, T = set(g.eval_length), int(g.length.iloc[0])
        every = evaluated == set(range(T + 1, max(evaluated) + 1))
        rows.append({"cell": cell, "mean": mean, "lo": lo, "hi": hi, "best": per_seed.max(), "n": n,
                     "lengths": len(evaluated), "deletang": cell in uniform and every})
    columns = ["cell", "mean", "lo", "hi", "best", "n", "lengths", "deletang"]
    return pd.DataFrame(rows, columns=columns).set_index("cell")


def load_bench(root: Path) -> pd.DataFrame:
    """Kernel benchmark results from `root/bench/**/*.json` (`{"machine": {...}, "results": [...]}`); empty if none."""
    frames = []
    for path in sorted((Path(root) / "bench").rglob("*.json")):
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("results", []), list) \
                or not all(isinstance(r, dict) for r in doc.get("results", [])):
            raise RecordError(f"{path}:1: not kernel benchmark results: expected an object whose results are objects")
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
    sweeps = []
    for path in sorted(Path(root).rglob("sweep.json")):
        doc = read_json(path)
        if not isinstance(doc, dict):
            raise RecordError(f"{path}:1: not a sweep record: expected a JSON object, got a JSON {json_kind(doc)}")
        sweeps.append({**doc, "path": str(path)})
    return sweeps
