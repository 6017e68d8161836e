"""The run folder: the one place that knows how a run's record is claimed, skipped, resumed, committed and failed, and
the types a run comes back as. `seqbench run` and every executor go through it.

A run's folder is `<sweep>/<run_id>/`. A process holds a run by its lock (`records.claim`: an flock the kernel drops
when the holder dies). A record is finished once `summary.json` is in it (`records.is_finished`); until then the
folder may hold a checkpoint to resume from. A finished record that is run again (`--force`, `--retry-failed`) is
written into a staging folder beside it and moved over it only once the new one is finished, so a crash never loses a
finished result.

    opened = open_run(sweep_dir, cfg, rerun=False)
    if not isinstance(opened, Todo):       # Skipped (recorded earlier) or Busy (another process holds it)
        return opened.outcome
    with opened:                           # the claim is held until the block ends
        writer = RunWriter(opened.target, resume=opened.checkpoint())
        ...                                # train, writing through `writer`
        opened.commit(writer)              # the staging folder replaces the old record, the checkpoint goes
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from .records import (CHECKPOINT, RunWriter, Summary, claim, is_finished, load_checkpoint, read_summary, replace_dir,
                      write_checkpoint, write_failure, write_json, write_started)
from .status import Status


class Outcome(TypedDict, total=False):
    """What an executor hands back for one run: a finished record's Summary without its `traceback` and `config`
    (`skipped` when it was recorded earlier), or for a run that did not finish here, its run_id and status
    (`busy`: with task and model; `interrupted`: with the step it checkpointed at, None when it had not started)."""

    run_id: str
    status: str  # a Status value
    skipped: bool
    step: int | None
    task: str
    model: str


class ProgressEvent(NamedTuple):
    """A run's progress, from an executor to the sweep's progress bar: how far it is and its latest numbers (None
    where the executor does not see them)."""

    run_id: str
    step: int
    total: int
    train_loss: float | None = None
    eval_accuracy: float | None = None


def busy(cfg) -> Outcome:
    """The outcome of a run another process holds."""
    return {"run_id": cfg.run_id, "status": Status.BUSY.value, "task": cfg.task.name, "model": cfg.model.name}


def interrupted(cfg, step: int | None) -> Outcome:
    """The outcome of a run a signal stopped: checkpointed at `step`, or None when it had not started."""
    return {"run_id": cfg.run_id, "status": Status.INTERRUPTED.value, "step": step}


def as_outcome(summary: Summary) -> Outcome:
    """A finished record's summary as an executor hands it back: without the traceback and the config, which stay in
    the record's files."""
    return {k: v for k, v in summary.items() if k not in ("traceback", "config")}


# --- opening a run's folder ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Skipped:
    """A run recorded earlier and not to run again."""

    summary: Summary

    @property
    def outcome(self) -> Outcome:
        return {**as_outcome(self.summary), "skipped": True}


@dataclasses.dataclass(frozen=True)
class Busy:
    """A run another process holds: not touched."""

    outcome: Outcome


@dataclasses.dataclass
class Todo:
    """A run this process has claimed, to run now. Use it as a context manager, or `release()` it: the claim is held
    until then."""

    cfg: Any  # RunConfig
    run_dir: Path
    rerun: bool  # run again from the start (--force, --retry-failed): no checkpoint is resumed
    replaces: bool  # a finished record is there: the new one is staged and moved over it once finished
    _hold: contextlib.ExitStack
    _wrote_config: bool = False

    @property
    def target(self) -> Path:
        """Where the record is written: the run folder, or a staging folder beside the finished record it replaces."""
        return self.run_dir.with_name(f".{self.run_dir.name}.staging") if self.replaces else self.run_dir

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint to resume from, if any (never for a rerun: it starts again)."""
        path = self.run_dir / CHECKPOINT
        return None if self.rerun or not path.exists() else path

    def checkpoint(self) -> dict | None:
        """The checkpoint to resume from, loaded (see `checkpoint_path`)."""
        return None if self.checkpoint_path is None else load_checkpoint(self.run_dir)

    def commit(self, writer) -> None:
        """The record is complete in `target` (its summary written through `writer`): drop the checkpoint and, for a
        rerun, move the new record over the old one."""
        writer.drop_checkpoint()
        if self.target != self.run_dir:
            replace_dir(self.target, self.run_dir)

    # A run trained elsewhere (a Ray task, in memory) is written here by its driver from what it sends back.
    def write_start(self, config: dict, started: dict) -> None:
        """The run has started elsewhere: its config.json (once) and started.json. Not for a rerun: the old record
        stays as it is until the new one is complete."""
        if not self.rerun:
            self._write_config(config)
            write_started(self.run_dir, started)

    def write_checkpoint(self, config: dict, data: bytes) -> bool:
        """A checkpoint sent from elsewhere; whether it was written (not for a rerun, which starts again if it is
        stopped: the old record stays as it is until the new one is complete)."""
        if self.rerun:
            return False
        self._write_config(config)  # a checkpoint's threads come from here when the run resumes
        write_checkpoint(self.run_dir, data)
        return True

    def write_record(self, config: dict, result: dict) -> Summary:
        """The whole record from what a task that trained in memory returned (its start notice, metrics and profile
        rows, summary), summary.json last (it marks the record finished; trackers mirror it then); returns the
        summary."""
        writer = RunWriter(self.target, resume={"metrics": result["rows"], "profiles": result["profiles"]})
        writer.config(config)
        writer.started(result["started"])
        writer.summary(result["summary"])
        self.commit(writer)
        return result["summary"]

    def _write_config(self, config: dict) -> None:
        if not self._wrote_config:
            write_json(self.run_dir / "config.json", config)
            self._wrote_config = True

    def fail(self, error: str) -> Summary:
        """Record the run `failed` with `error` (it could not finish through no error of its own code, e.g. its worker
        kept dying), unless a finished record is there: a rerun that could not run keeps the old one."""
        if is_finished(self.run_dir):
            return read_summary(self.run_dir)
        return write_failure(self.cfg, self.run_dir, error)

    def release(self) -> None:
        self._hold.close()

    def __enter__(self) -> Todo:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def open_run(sweep_dir: Path, cfg, rerun: bool = False) -> Skipped | Busy | Todo:
    """Open `cfg`'s run folder under `sweep_dir`: Busy when another process holds it, Skipped when it is finished and
    not to be `rerun`, else Todo, holding its claim."""
    run_dir = Path(sweep_dir) / cfg.run_id
    hold = contextlib.ExitStack()
    if not hold.enter_context(claim(run_dir)):
        hold.close()
        return Busy(busy(cfg))
    finished = is_finished(run_dir)
    if finished and not rerun:
        hold.close()
        return Skipped(read_summary(run_dir))
    return Todo(cfg, run_dir, rerun, finished, hold)


def look(sweep_dir: Path, cfg, rerun: bool = False) -> Skipped | Busy | None:
    """What `open_run` would say now, without keeping the claim: None when the run is to run (by another process that
    claims it itself, e.g. a SLURM task)."""
    opened = open_run(sweep_dir, cfg, rerun)
    if isinstance(opened, Todo):
        opened.release()
        return None
    return opened


def record_failure(sweep_dir: Path, cfg, error: str) -> Summary | Outcome:
    """Record a run that could not finish through no error of its own code (its worker or task kept dying) as
    `failed`; a run finished meanwhile keeps its record (returned), a run held by another process is `busy`."""
    opened = open_run(sweep_dir, cfg, rerun=True)
    if isinstance(opened, Busy):
        return opened.outcome
    with opened:
        return opened.fail(error)
