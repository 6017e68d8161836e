"""Read run records into pandas DataFrames: runs (one row each), metrics and gradient profiles in long format.

Every loader walks a folder recursively, so it reads single runs, sweeps and nested sweeps alike. A run folder is any
folder with a `config.json`; one without a finished `summary.json` is reported with status `incomplete`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .records import read_json, read_summary


def run_dirs(root: Path) -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.rglob("config.json") if not p.parent.name.startswith("."))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a truncated last line (a run killed mid-write) is skipped."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return rows
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}:{i + 1}: corrupt line (only a truncated last line is tolerated)")
    return rows


def load_runs(root: Path) -> pd.DataFrame:
    """One row per run: summary fields (`final.eval_loss`, ...) and the flattened config (`config.task.length`, ...).

    `root` is a results folder, or a sweep's consolidated `runs.parquet`.
    """
    if Path(root).suffix == ".parquet":
        return pd.read_parquet(root)
    records = []
    for d in run_dirs(root):
        summary = read_summary(d)
        if summary is None:
            config = read_json(d / "config.json")
            started = read_json(d / "started.json") if (d / "started.json").exists() else {}
            summary = {"run_id": d.name, "status": "incomplete", "task": config["task"]["name"],
                       "model": config["model"]["name"], "seed": config["seed"], "config": config, **started}
        summary = {k: v for k, v in summary.items() if k != "traceback"}
        records.append({**summary, "path": str(d)})
    if not records:
        return pd.DataFrame(columns=["run_id", "status", "task", "model", "path"])
    return pd.json_normalize(records, sep=".")


def load_metrics(root: Path) -> pd.DataFrame:
    """Long format: run_id, step, metric, value (one row per recorded number)."""
    rows = [{**row, "run_id": d.name} for d in run_dirs(root) for row in read_jsonl(d / "metrics.jsonl")]
    if not rows:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"])
    # one frame for every run, melted once: per-run frames cost ~10 ms each, far too slow for 1,000-run reports
    long = pd.DataFrame(rows).melt(id_vars=["run_id", "step"], var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)[["run_id", "step", "metric", "value"]]


PROFILE_COLUMNS = ["run_id", "step", "quantity", "layer", "dtype", "t", "distance", "norm", "underflow"]


def load_grad_profiles(root: Path) -> pd.DataFrame:
    """Long format: run_id, step, quantity (h|x), layer, t, distance (from the last position), norm, underflow."""
    profiles = [(d.name, row) for d in run_dirs(root) for row in read_jsonl(d / "grad_profile.jsonl")]
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
