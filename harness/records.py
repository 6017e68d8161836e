"""The one place run records are written: `config.json`, `metrics.jsonl`, `grad_profile.jsonl`, `summary.json`.

JSON files are replaced atomically (temp file + fsync + rename), so a crash leaves either the old or the new file.
`metrics.jsonl` is append-only, one flushed line per logged step: a crash can at worst truncate its last line.
Non-finite floats are written as null (strict JSON); a diverged run's summary says where it diverged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
from pathlib import Path
from typing import TypedDict

from .errors import RecordError
from .status import FINISHED

CHECKPOINT = "checkpoint.pt"


class Summary(TypedDict, total=False):
    """A run's summary.json: the schema of a finished record, in one place. The first six fields identify the run
    whatever its status. A failed run has `error` (and `traceback` when its own code raised) and lacks the training
    fields that its failure left unknown; a diverged run's `final` values are all None."""

    run_id: str
    task: str
    model: str
    backend: str  # the cells' implementation: torch, reference, triton; a plugin's is its own
    seed: int
    data_seed: int
    status: str  # one of FINISHED
    error: str
    traceback: str
    params: int  # trainable parameters
    baseline_loss: float | None  # the task's loss of a model that ignores its inputs
    chance_accuracy: float | None  # the task's accuracy by guessing; None where the task has none
    no_binding_accuracy: float | None  # recall tasks: the level without cue-answer binding (MQAR: 1/D); else None
    no_binding_loss: float | None  # and its loss (MQAR: ln D)
    loss_label: str  # the task's words for its loss and accuracy (tasks.base.Task), for figures and tables
    accuracy_label: str
    accuracy_note: str | None  # where or how the accuracy is scored
    kernel_path: str  # the code that computed the model and the path it took (after training), in words
    kernel: dict | None  # the same, structured: {"backend": torch/reference/triton, "fallback": why, or None}
    resumed_from_step: int | None
    steps_done: int
    diverged_step: int | None
    final: dict  # eval_* at the end of training and test_* on the held-out test set (None when diverged)
    last_eval: dict
    solved_step: int | None
    solved_criterion: str
    tokens_per_s: float | None
    peak_mem_bytes: int
    peak_mem_kind: str  # cuda_max_allocated or process_peak_rss
    train_wall_s: float
    wall_s: float
    grad_profile_note: str | None
    config: dict  # the run's config, as config.json holds it
    provenance: dict  # code, machine, library versions, threads, command


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


def alive(pid: int) -> bool:
    """Whether process `pid` is running (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no /proc (macOS): the signal test alone
        return True


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files (`.NAME.tmp-PID`) that a killed writer left behind; a live writer's are kept."""
    for tmp in Path(folder).glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)


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
    """A record's JSON file. FileNotFoundError when it is missing; RecordError naming the file and line when it is
    not JSON (a hand-edited or damaged record)."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not a text file") from None
    except (IsADirectoryError, PermissionError) as e:
        raise RecordError(f"{path}: cannot read: {e.strerror}") from None


def json_kind(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary, or None when it has none (never started, running, or killed). RecordError when the file
    is not a summary: not JSON, or not an object with a `status`."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = read_json(path)
    except FileNotFoundError:
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        got = f"a JSON {json_kind(summary)}" if not isinstance(summary, dict) else "an object without a status"
        raise RecordError(f"{path}:1: not a run summary: expected an object with a status, got {got}")
    return summary


def is_finished(run_dir: Path) -> bool:
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in FINISHED


class MemoryWriter:
    """Collects a run's record in memory (on a Ray worker, so the driver writes the files)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.profile_rows: list[dict] = []

    def metrics(self, row: dict) -> None:
        self.rows.append(strict(row))

    def profiles(self, rows: list[dict]) -> None:
        self.profile_rows += strict(rows)

    def checkpoint(self, state: dict) -> None:
        pass  # kept nowhere; RunWriter keeps them in the run's folder, a Ray task ships them to its driver


class RunWriter(MemoryWriter):
    """Writes one run's folder. A fresh writer clears an unfinished run's partial files; one given a checkpoint
    rewrites the metrics and profiles recorded up to it, and the run continues from there."""

    def __init__(self, run_dir: Path, resume: dict | None = None):
        super().__init__()
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.dir)
        (self.dir / "summary.json").unlink(missing_ok=True)
        if resume is None:
            self.drop_checkpoint()
        self.rows, self.profile_rows = (resume["metrics"], resume["profiles"]) if resume else ([], [])
        atomic_write(self.dir / "metrics.jsonl", "".join(dumps(r) + "\n" for r in self.rows))
        self.profiles([])

    def config(self, config: dict) -> None:
        write_json(self.dir / "config.json", config)

    def started(self, provenance: dict) -> None:
        write_started(self.dir, provenance)

    def metrics(self, row: dict) -> None:
        super().metrics(row)
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(dumps(row) + "\n")
            f.flush()

    def profiles(self, rows: list[dict]) -> None:
        super().profiles(rows)
        atomic_write(self.dir / "grad_profile.jsonl", "".join(dumps(r) + "\n" for r in self.profile_rows))

    def checkpoint(self, state: dict) -> None:
        write_checkpoint(self.dir, checkpoint_bytes(state, self.rows, self.profile_rows))

    def drop_checkpoint(self) -> None:
        (self.dir / CHECKPOINT).unlink(missing_ok=True)

    def summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)
        if (summary.get("config") or {}).get("tracker"):  # mirrored once the local record is complete
            from .trackers import mirror_run

            if mirror_run(self.dir, self.rows, summary):  # a tracker failed: its warning joins the record
                write_json(self.dir / "summary.json", summary)


def record_head(cfg) -> dict:
    """The fields that identify a run in its summary, whatever its status."""
    from .models.plugins import backend_of

    return {"run_id": cfg.run_id, "task": cfg.task.name, "model": cfg.model.name,
            "backend": backend_of(cfg.model), "seed": cfg.seed, "data_seed": cfg.data_seed}


def write_failure(cfg, run_dir: Path, error: str) -> dict:
    """A `failed` record for a run that never reached its own code's end (e.g. its worker process kept dying)."""
    from .provenance import provenance

    summary = {**record_head(cfg), "status": "failed", "error": error, "config": cfg.canonical(),
               "provenance": provenance(cfg.device)}
    write_json(Path(run_dir) / "config.json", cfg.canonical())
    write_json(Path(run_dir) / "summary.json", summary)
    return summary


def wait_for_claim(run_dir: Path) -> None:
    """Block until no process holds the run's lock."""
    with open(Path(run_dir) / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        fcntl.flock(f, fcntl.LOCK_UN)


def write_started(run_dir: Path, provenance: dict) -> None:
    """Where and with what the run was started, so an unfinished run can still be traced to its commit."""
    write_json(Path(run_dir) / "started.json", {"provenance": provenance})


def checkpoint_bytes(state: dict, rows: list[dict], profiles: list[dict]) -> bytes:
    """A checkpoint as its file holds it: the trainer's state and the record so far (metrics and profiles)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({**state, "metrics": rows, "profiles": profiles}, buffer)
    return buffer.getvalue()


def read_checkpoint(data: bytes) -> dict:
    import io

    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def write_checkpoint(run_dir: Path, data: bytes) -> None:
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict | None:
    import torch  # here: reading records (reports, sweeps' bookkeeping) needs no torch

    path = Path(run_dir) / CHECKPOINT
    return torch.load(path, weights_only=True) if path.exists() else None


@contextlib.contextmanager
def claim(run_dir: Path):
    """Hold the run's lock (an flock, which the kernel releases when its holder dies, even by kill -9).
    Yields False, holding nothing, when another process has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def replace_dir(staged: Path, target: Path) -> None:
    """Move a finished staged run folder over `target`, keeping the old one until the new one is in place."""
    trash = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, trash)
    os.replace(staged, target)
    shutil.rmtree(trash, ignore_errors=True)
