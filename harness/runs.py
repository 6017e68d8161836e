"""What a run comes back as, from `seqbench run` and from every executor: its status, and the outcomes that need no
training. (The first part of one home for the run-folder protocol; claiming, resuming and committing a record still
live in train.py, executors.py and slurm.py.)"""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """Every status a run can come back with. The record's own (summary.json) are the first three."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite loss stopped it
    FAILED = "failed"  # its code raised, or its worker kept dying
    #: stopped by a signal to its worker alone (e.g. a SLURM task cancelled with scancel) and checkpointed: the next
    #: run of the sweep resumes it
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"  # recorded earlier: not run again
    BUSY = "busy"  # held by another process (another sweep on the same folder): not touched

    def __str__(self) -> str:
        return self.value


def busy(cfg) -> dict:
    """The outcome of a run another process holds."""
    return {"run_id": cfg.run_id, "status": Status.BUSY.value, "task": cfg.task.name, "model": cfg.model.name}


def interrupted(cfg, step: int | None) -> dict:
    """The outcome of a run a signal stopped: checkpointed at `step`, or None when it had not started."""
    return {"run_id": cfg.run_id, "status": Status.INTERRUPTED.value, "step": step}


def as_outcome(summary: dict) -> dict:
    """A finished record's summary as an executor hands it back: without the traceback and the config, which stay in
    the record's files."""
    return {k: v for k, v in summary.items() if k not in ("traceback", "config")}
