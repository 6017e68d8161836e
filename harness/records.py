"""The one place run records are written: `config.json`, `metrics.jsonl`, `grad_profile.jsonl`, `summary.json`.

JSON files are replaced atomically (temp file + fsync + rename), so a crash leaves either the old or the new file.
`metrics.jsonl` is append-only, one flushed line per logged step: a crash can at worst truncate its last line.
Non-finite floats are written as null (strict JSON); a diverged run's summary says where it diverged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

FINISHED = ("completed", "diverged", "failed")


def strict(obj):
    """Replace NaN/inf (which strict JSON cannot hold) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    return json.dumps(strict(obj), allow_nan=False, **kw)


def atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write(path, dumps(obj, indent=2) + "\n")


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary, or None when it has none (never started, running, or killed)."""
    try:
        return read_json(Path(run_dir) / "summary.json")
    except FileNotFoundError:
        return None


def is_finished(run_dir: Path) -> bool:
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in FINISHED


class RunWriter:
    """Writes one run's folder. Starting a writer clears an unfinished run's partial files."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "grad_profile.jsonl", "summary.json"):
            (self.dir / name).unlink(missing_ok=True)
        self._profiles: list[dict] = []

    def config(self, config: dict) -> None:
        write_json(self.dir / "config.json", config)

    def metrics(self, row: dict) -> None:
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(dumps(row) + "\n")
            f.flush()

    def profiles(self, rows: list[dict]) -> None:
        self._profiles += rows
        atomic_write(self.dir / "grad_profile.jsonl", "".join(dumps(r) + "\n" for r in self._profiles))

    def summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)


def replace_dir(staged: Path, target: Path) -> None:
    """Move a finished staged run folder over `target`, keeping the old one until the new one is in place."""
    trash = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, trash)
    os.replace(staged, target)
    shutil.rmtree(trash, ignore_errors=True)
