"""Read run records into pandas DataFrames: runs (one row each), metrics and gradient profiles in long format.

Every loader walks a folder recursively, so it reads single runs, sweeps and nested sweeps alike. A run folder is any
folder with a `config.json`; one without a finished `summary.json` is reported with status `incomplete`.
"""

from __future__ import annotations

import json
from pathlib import Path

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
            summary = {"run_id": d.name, "status": "incomplete", "task": config["task"]["name"],
                       "model": config["model"]["name"], "seed": config["seed"], "config": config}
        summary = {k: v for k, v in summary.items() if k != "traceback"}
        records.append({**summary, "path": str(d)})
    if not records:
        return pd.DataFrame(columns=["run_id", "status", "task", "model", "path"])
    return pd.json_normalize(records, sep=".")


def load_metrics(root: Path) -> pd.DataFrame:
    """Long format: run_id, step, metric, value (one row per recorded number)."""
    frames = []
    for d in run_dirs(root):
        rows = read_jsonl(d / "metrics.jsonl")
        if rows:
            wide = pd.DataFrame(rows)
            long = wide.melt(id_vars="step", var_name="metric", value_name="value").dropna(subset=["value"])
            frames.append(long.assign(run_id=d.name))
    if not frames:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"])
    return pd.concat(frames, ignore_index=True)[["run_id", "step", "metric", "value"]]


def load_grad_profiles(root: Path) -> pd.DataFrame:
    """Long format: run_id, step, quantity (h|x), layer, t, distance (from the last position), norm, underflow."""
    frames = []
    for d in run_dirs(root):
        for row in read_jsonl(d / "grad_profile.jsonl"):
            norm = pd.Series(row["norm"], dtype="float64")
            n = len(norm)
            frames.append(pd.DataFrame({
                "run_id": d.name, "step": row["step"], "quantity": row["quantity"], "layer": row["layer"],
                "dtype": row["dtype"], "t": range(n), "distance": range(n - 1, -1, -1), "norm": norm,
                "underflow": norm == 0,
            }))
    if not frames:
        return pd.DataFrame(columns=["run_id", "step", "quantity", "layer", "dtype", "t", "distance", "norm",
                                     "underflow"])
    return pd.concat(frames, ignore_index=True)
