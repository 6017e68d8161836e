"""Read run records into pandas DataFrames: runs (one row each), metrics and gradient profiles in long format.

Every loader walks a folder recursively, so it reads single runs, sweeps and nested sweeps alike. A run folder is any
folder with a `config.json` or a `summary.json`; one without a finished `summary.json` is reported with status
`incomplete`. A record that can still be read but has lost a part (a finished run without its `config.json`, a completed
run whose `metrics.jsonl` is empty) is not left out: each such run gets one `seqbench: warning:` line on stderr and its
`record_warnings`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import RecordError
from .records import json_kind, read_json, read_summary


def run_dirs(root: Path) -> list[Path]:
    """Every run folder under `root`: a folder holding a `config.json` or a `summary.json` (a finished run whose
    config.json is gone is still a run: its summary keeps a copy of the config). Hidden folders (a run being staged)
    are not runs."""
    root = Path(root)
    found = {p.parent for name in ("config.json", "summary.json") for p in root.rglob(name)}
    return sorted(d for d in found if not d.name.startswith("."))


def run_config(run_dir: Path, summary: dict | None) -> tuple[dict, str | None]:
    """A run's config and, when it does not come from the run's `config.json`, a warning saying where it came from:
    a finished run whose config.json is missing is described by the copy its `summary.json` keeps (the same resolved
    config, written when the run finished). RecordError when neither file has it."""
    path = Path(run_dir) / "config.json"
    if path.exists() or summary is None:
        return read_json(path), None
    config = summary.get("config")
    if not isinstance(config, dict):
        raise RecordError(f"{path}: missing, and {path.with_name('summary.json')} holds no config either: the run "
                          "cannot be described; restore its config.json or move the folder out of the results")
    return config, f"{path}: missing, so the run's config is taken from its summary.json (the copy kept at its end)"


def metrics_lost(run_dir: Path, summary: dict | None) -> str | None:
    """What is wrong when a run whose summary says `completed` has no metrics rows (every completed run logs at least
    its step-0 evaluation), else None."""
    if not summary or summary.get("status") != "completed":
        return None
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            if any(line.strip() for line in f):  # stops at the first row
                return None
        what = "empty"
    except FileNotFoundError:
        what = "missing"
    except OSError:  # a folder in its place, or unreadable: read_jsonl names it when the rows are read
        return None
    return f"{path}: {what}, though the run's summary says completed: its per-step metrics are lost"


def record_warnings(run_dir: Path, summary: dict | None) -> list[str]:
    """What is wrong with a finished run's record that can still be read (see `run_config`, `metrics_lost`)."""
    lost_config = summary is not None and not (Path(run_dir) / "config.json").exists()
    return [w for w in (lost_config and run_config(run_dir, summary)[1], metrics_lost(run_dir, summary)) if w]


def warn(message: str) -> None:
    """One warning line on stderr, in the form of the command line's errors."""
    print(f"seqbench: warning: {message}", file=sys.stderr)


def read_jsonl(path: Path, required: tuple[str, ...] = ("step",)) -> list[dict]:
    """Rows of a JSON-lines record file, each an object with the `required` keys and an integer `step`. A truncated
    last line (a run killed mid-write) is skipped; any other bad line is a RecordError naming the file and line."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return rows
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
        raise RecordError(f"{path}: cannot read: {getattr(e, 'strerror', None) or 'not a text file'}") from None
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                continue
            raise RecordError(f"{path}:{i + 1}: corrupt line ({e.msg}); only a truncated last line is tolerated") \
                from None
        missing = [k for k in required if k not in row] if isinstance(row, dict) else list(required)
        if missing or not _is_int(row.get("step", 0)):
            what = f"lacks {', '.join(missing)}" if isinstance(row, dict) and missing else \
                ("has a step that is not an integer" if isinstance(row, dict) else f"is a JSON {json_kind(row)}")
            raise RecordError(f"{path}:{i + 1}: not a record row: it {what} (expected an object with "
                              f"{', '.join(required)})")
        rows.append(row)
    return rows


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_record(path: Path, record, keys: tuple[str, ...], what: str) -> None:
    """RecordError unless `record` is an object whose `keys` (dotted: into a section) hold a name or a number."""
    if not isinstance(record, dict):
        raise RecordError(f"{path}:1: not {what}: expected a JSON object, got a JSON {json_kind(record)}")
    for key in keys:
        node = record
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, (str, int)) or isinstance(node, bool):
            raise RecordError(f"{path}:1: not {what}: {key} is missing or not a name or number")


def load_runs(root: Path) -> pd.DataFrame:
    """One row per run: summary fields (`final.eval_loss`, ...), the flattened config (`config.task.length`, ...),
    `path` and `record_warnings` (what the record has lost, `; `-separated, e.g. a completed run's empty metrics.jsonl;
    None for a whole record), each of which is also printed as one `seqbench: warning:` line on stderr.

    `root` is a results folder, or a sweep's consolidated `runs.parquet`.
    """
    if Path(root).suffix == ".parquet":
        return pd.read_parquet(root)
    records = []
    for d in run_dirs(root):
        summary = read_summary(d)
        notes = []
        if summary is None:  # only a folder with a config.json gets here
            config = read_json(d / "config.json")
            _check_record(d / "config.json", config, ("task.name", "model.name", "seed"), "a run config")
            started = read_json(d / "started.json") if (d / "started.json").exists() else {}
            summary = {"run_id": d.name, "status": "incomplete", "task": config["task"]["name"],
                       "model": config["model"]["name"], "seed": config["seed"], "config": config, **started}
        else:
            notes = record_warnings(d, summary)
            if "config" not in summary:  # a summary without its copy of the config: the config.json's
                summary = {**summary, "config": run_config(d, summary)[0]}
        _check_record(d / "summary.json", summary, ("run_id", "task", "model"), "a run summary")
        summary = {k: v for k, v in summary.items() if k != "traceback"}
        for note in notes:
            warn(note)
        records.append({**summary, "path": str(d), "record_warnings": "; ".join(notes) or None})
    if not records:
        return pd.DataFrame(columns=["run_id", "status", "task", "model", "path", "record_warnings"])
    return pd.json_normalize(records, sep=".")


def load_metrics(root: Path) -> pd.DataFrame:
    """Long format: run_id, step, metric, value (one row per recorded number)."""
    rows = [{**row, "run_id": d.name} for d in run_dirs(root) for row in read_jsonl(d / "metrics.jsonl")]
    if not rows:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"])
    # one frame for every run, melted once: per-run frames cost ~10 ms each, far too slow for 1,000-run reports
    long = pd.DataFrame(rows).melt(id_vars=["run_id", "step"], var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)[["run_id", "step", "metric", "value"]]


LENGTH_COLUMNS = ["run_id", "step", "length", "train_length", "extrapolated", "final"]


def load_lengths(root: Path) -> pd.DataFrame:
    """Evaluation by length (length generalisation), tidy: one row per run, evaluation step and evaluated length.

    Columns: run_id, step, length (the task length evaluated at), train_length (the run's `task.length`),
    extrapolated (length > train_length), final (the run's last evaluation), and one column per evaluation statistic
    without its prefix (loss, accuracy, exact). A metrics row's `eval_<stat>` is the training length's value and
    `eval_<stat>@<length>` another length's (`eval.lengths`); a run without `eval.lengths` gives one row per evaluation.
    """
    rows = []
    for d in run_dirs(root):
        metrics = [r for r in read_jsonl(d / "metrics.jsonl") if any(k.startswith("eval_") for k in r)]
        if not metrics:
            continue
        config, _ = run_config(d, read_summary(d))  # a lost config.json: load_runs warns about it
        _check_record(d / "config.json", config, ("task.length",), "a run config")
        train = config["task"]["length"]
        last = max(r["step"] for r in metrics)
        for r in metrics:
            by_length: dict[int, dict] = {}
            for key, value in r.items():
                if not key.startswith("eval_"):
                    continue
                stat, _, length = key.removeprefix("eval_").partition("@")
                by_length.setdefault(int(length) if length else train, {})[stat] = value
            rows += [{"run_id": d.name, "step": r["step"], "length": n, "train_length": train,
                      "extrapolated": n > train, "final": r["step"] == last, **stats}
                     for n, stats in sorted(by_length.items())]
    if not rows:
        return pd.DataFrame(columns=LENGTH_COLUMNS + ["loss", "accuracy", "exact"])
    return pd.DataFrame(rows).astype({"step": "int64", "length": "int64", "train_length": "int64"})


PROFILE_ROW = ("step", "quantity", "layer", "dtype", "norm")  # the keys a gradient-profile line must have
PROFILE_COLUMNS = ["run_id", "step", "quantity", "layer", "dtype", "t", "distance", "norm", "underflow"]


def load_grad_profiles(root: Path) -> pd.DataFrame:
    """Long format: run_id, step, quantity (h|x), layer, t, distance (from the last position), norm, underflow."""
    profiles = [(d.name, row) for d in run_dirs(root) for row in read_jsonl(d / "grad_profile.jsonl", PROFILE_ROW)]
    if not profiles:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    lengths = np.array([len(row["norm"]) for _, row in profiles])
    norm = np.array([np.nan if v is None else v for _, row in profiles for v in row["norm"]], dtype="float64")
    t = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # position within each profile

    def repeat(values):
        return np.repeat(np.asarray(values, dtype=object), lengths)

    return pd.DataFrame({
        "run_id": repeat([run_id for run_id, _ in profiles]),
        **{key: repeat([row[key] for _, row in profiles]) for key in ("step", "quantity", "layer", "dtype")},
        "t": t, "distance": np.repeat(lengths, lengths) - 1 - t, "norm": norm, "underflow": norm == 0,
    }).astype({"step": "int64", "layer": "int64", "quantity": str, "dtype": str, "run_id": str})
