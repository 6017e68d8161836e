"""`seqbench reproduce RUN_DIR`: rerun a recorded run from its config.json and compare the new record with the old.

On CPU the comparison is bitwise (the harness is deterministic there); on CUDA, where cuDNN and atomics reorder float
sums, values must agree within a relative tolerance (`--rtol`, default 1e-3). Timing fields are never compared.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from .config import ConfigError, resolve
from .loaders import read_jsonl
from .records import read_json, read_summary

TIMING = {"tokens_per_s", "elapsed_s"}
SUMMARY_FIELDS = ("status", "steps_done", "diverged_step", "solved_step", "params", "final")
GPU_RTOL = 1e-3


def _close(a, b, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (rtol > 0 and math.isclose(a, b, rel_tol=rtol, abs_tol=0.0))
    return a == b


def compare(old, new, rtol: float, path: str = "") -> list[str]:
    """Differences between two JSON-like values, as `path: old -> new` lines (timing fields ignored)."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            if key in TIMING:
                continue
            diffs += compare(old.get(key), new.get(key), rtol, f"{path}.{key}" if path else str(key))
        return diffs
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} entries -> {len(new)}"]
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in compare(a, b, rtol, f"{path}[{i}]")]
    return [] if _close(old, new, rtol) else [f"{path}: {old!r} -> {new!r}"]


def record_of(run_dir: Path) -> dict:
    summary = read_summary(run_dir) or {}
    return {
        "summary": {k: summary.get(k) for k in SUMMARY_FIELDS},
        "metrics": {f"step {row['step']}": row for row in read_jsonl(run_dir / "metrics.jsonl")},
        "grad_profile": {f"step {r['step']} {r['quantity']}{r['layer']}": r["norm"]
                         for r in read_jsonl(run_dir / "grad_profile.jsonl")},
    }


def reproduce(run_dir: Path, rtol: float | None = None, keep: Path | None = None, progress: bool = True):
    """Rerun the run recorded in `run_dir`; returns (differences, rtol used, summary of the rerun)."""
    from .train import execute

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir}: no config.json here; expected a run folder (results/.../<run_id>)")
    if read_summary(run_dir) is None:
        raise ConfigError(f"{run_dir}: the run has no summary.json (unfinished); nothing to compare with")
    cfg = resolve(read_json(run_dir / "config.json"))
    if rtol is None:
        rtol = GPU_RTOL if cfg.device == "cuda" else 0.0
    with tempfile.TemporaryDirectory(prefix="seqbench-reproduce-") as tmp:
        out = Path(keep) if keep else Path(tmp)
        summary, new_dir = execute(cfg, out, progress=progress, force=True)
        diffs = compare(record_of(run_dir), record_of(new_dir), rtol)
    return diffs, rtol, summary


def provenance_notes(run_dir: Path, new: dict) -> list[str]:
    """Where the rerun's environment differs from the record's (a likely cause of a mismatch)."""
    old = (read_summary(run_dir) or {}).get("provenance", {})
    notes = []
    for key in ("commit", "dirty", "torch", "python", "device_name", "torch_threads"):
        if old.get(key) != new.get("provenance", {}).get(key):
            notes.append(f"  note: {key} was {old.get(key)!r}, now {new['provenance'].get(key)!r}")
    return notes
