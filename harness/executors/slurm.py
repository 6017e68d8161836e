"""The `slurm` executor: one SLURM array job per sweep through submitit, one array task per run.

Tasks write their own records into the sweep folder exactly as local workers do (claim, checkpoints, resume), so the
sweep folder must be on a filesystem that the submitting machine and every compute node share, with `flock` working
across nodes (NFSv4, GPFS, Lustre mounted with `-o flock`). A task sent submitit's signal (USR2, `signal_delay_s`
before the time limit, or at preemption) checkpoints its run and requeues itself; the requeued task resumes from the
checkpoint. SIGTERM (scancel) checkpoints the run and stops it: run the sweep again to resume.
"""

from __future__ import annotations

import collections.abc
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..records import read_summary
from ..resources import Resources, SlurmSettings, resolve_slurm
from ..runs import Outcome, ProgressEvent, as_outcome, interrupted, look, record_failure
from .base import Plan

#: Which submitit executor runs the array: `slurm` (sbatch), or `local` (submitit's local executor: the same tasks,
#: requeue and records, minus sbatch; for tests and for trying the executor on one machine).
CLUSTER_ENV = "SEQBENCH_SLURM_CLUSTER"
RESUBMITS = 2  # a task that ends without a result (node failure, OOM kill): resubmit its run this often
MAX_TIMEOUTS = 10  # requeues at the time limit per task; each resumes from a checkpoint, so a run always advances
POLL_S = 1.0

_SET_ELSEWHERE = {  # sbatch parameters the sweep sets itself: where to set them instead
    "partition": "--slurm-partition (or slurm.partition)", "time": "--slurm-time (or slurm.time)",
    "array_parallelism": "--slurm-array-parallelism (or slurm.array_parallelism)",
    "cpus_per_task": "--cpus-per-run (or resources.cpus)", "gpus_per_node": "--gpus-per-run (or resources.gpus)",
    "gpus_per_task": "--gpus-per-run (or resources.gpus)", "num_gpus": "--gpus-per-run (or resources.gpus)",
    "nodes": "nothing: a run is one process on one node", "ntasks_per_node": "nothing: a run is one process",
    "map_count": "nothing: the array has one task per run",
}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm: submitit is not installed; pip install 'seqbench[slurm]'") from None
    return submitit


def _cluster() -> str:
    cluster = os.environ.get(CLUSTER_ENV, "slurm")
    if cluster not in ("slurm", "local"):
        raise ConfigError(f"{CLUSTER_ENV}={cluster!r}: expected slurm (the default) or local (submitit's local "
                          "executor, for tests)")
    return cluster


# --- settings --------------------------------------------------------------------------------------------------------
def slurm_settings(args, spec, resources: Resources) -> tuple[Resources, SlurmSettings]:
    """The resources (resolved from the spec and the flags) and the SLURM settings (the spec's `slurm:`, then the
    flags) of a `--executor slurm` sweep, checked for SLURM before anything is written."""
    _submitit()
    cluster = _cluster()
    settings = resolve_slurm(spec.slurm, args)
    if resources.custom:
        where = "--resource" if getattr(args, "resource", None) else "resources.custom"
        raise ConfigError(f"{where} {resources.custom}: custom resources are Ray's; on SLURM ask with --slurm-param "
                          "(gres=..., constraint=...)")
    if resources.gpus is not None and resources.gpus != int(resources.gpus):
        where = "--gpus-per-run" if getattr(args, "gpus_per_run", None) is not None else "resources.gpus"
        raise ConfigError(f"{where} {resources.gpus:g}: SLURM allocates whole GPUs; give an integer")
    if settings.time is None:
        raise ConfigError("--executor slurm needs a time limit per run: --slurm-time MINUTES (or slurm.time in the "
                          "spec); a run that reaches it checkpoints and is requeued")
    flagged = {text.partition("=")[0].replace("-", "_") for text in getattr(args, "slurm_param", None) or []}
    _sbatch_params(settings, flagged)
    if cluster == "slurm" and not args.dry_run:
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ConfigError(f"--executor slurm: no {' or '.join(missing)} on PATH; submit from a SLURM login node")
    return resources, settings


def _sbatch_params(settings: SlurmSettings, flagged: set[str] = frozenset()) -> dict:
    """`settings.params` checked against submitit's SlurmExecutor parameters and converted to their types
    (values from flags are strings)."""
    from pydantic import TypeAdapter, ValidationError
    from submitit.slurm.slurm import _get_default_parameters, _make_sbatch_string

    hints = typing.get_type_hints(_make_sbatch_string)
    known = set(_get_default_parameters())
    params = {}
    for raw_key, value in settings.params.items():
        key = raw_key.replace("-", "_")
        where = f"--slurm-param {raw_key}={value}" if key in flagged else f"slurm.params.{raw_key}: {value!r}"
        if key in _SET_ELSEWHERE:
            raise ConfigError(f"{where}: the sweep sets {key}; set it with {_SET_ELSEWHERE[key]}")
        if key not in known:
            raise ConfigError(f"{where}: not an sbatch parameter submitit knows (e.g. account, qos, constraint, mem, "
                              "gres, exclude, setup); any other goes in the spec's slurm.params.additional_parameters")
        hint = hints[key]
        if any(typing.get_origin(a) in (list, collections.abc.Iterable) for a in typing.get_args(hint)):
            hint, value = list[str], [value] if isinstance(value, str) else value  # e.g. setup="module load cuda"
        try:
            params[key] = TypeAdapter(hint).validate_python(value)
        except ValidationError:
            raise ConfigError(f"{where}: expected {_type_name(hint)}") from None
    return params


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def job_parameters(resources: Resources, settings: SlurmSettings, configs: list[RunConfig], name: str) -> dict:
    """The array job's parameters by submitit's SlurmExecutor names: one task per run, each with the run's CPUs
    (default: its thread count) and GPUs (default: 1 on cuda)."""
    gpus = int(resources.gpus_for(configs[0].device))
    params = {"job_name": f"seqbench-{name}", "time": settings.time,
              "cpus_per_task": resources.cpus_for(max(c.threads or 1 for c in configs))}
    if settings.partition:
        params["partition"] = settings.partition
    if gpus:
        params["gpus_per_node"] = gpus
    if settings.array_parallelism:
        params["array_parallelism"] = settings.array_parallelism
    return {**params, **_sbatch_params(settings)}


def _executor(folder: Path, params: dict):
    submitit = _submitit()
    python = f"{shlex.quote(sys.executable)} -u -m seqbench.harness._slurm_task"  # see _slurm_task
    if _cluster() == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIMEOUTS, python=python)
        executor.update_parameters(timeout_min=params["time"], gpus_per_node=params.get("gpus_per_node", 0))
    else:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIMEOUTS, python=python)
        executor.update_parameters(**params)
    return executor


# --- one array task ----------------------------------------------------------------------------------------------
class ArrayTask:
    """One array task: train a run into the sweep folder (resuming from its checkpoint) and return its status.

    submitit's requeue signal (USR2) becomes the run's stop request; once the run has checkpointed, the signal goes
    on to submitit's handler, which requeues the task with the same arguments (`checkpoint`)."""

    def __call__(self, config: dict, sweep_dir: str, force: bool) -> dict:
        from ..train import RunInterrupted, execute
        from .base import limit_threads

        cfg = RunConfig.model_validate(config)
        limit_threads(cfg.threads)
        with _requeue_signal() as requeue:
            try:
                summary, _ = execute(cfg, Path(sweep_dir), progress=False, force=force)
            except RunInterrupted as e:
                requeue()  # returns only when no requeue was asked for (SIGTERM, scancel)
                return interrupted(cfg, e.step)
        return {"run_id": cfg.run_id, "status": summary["status"], "skipped": bool(summary.get("skipped"))}

    def checkpoint(self, *args, **kwargs):  # submitit's name: it requeues only callables with a `checkpoint`
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)  # the run's own checkpoint holds its state


@contextlib.contextmanager
def _requeue_signal():
    """While the block runs, submitit's requeue signal asks the run to stop (through the SIGTERM handler that
    `train.execute` installs). Yields a function that hands a received signal on to submitit, which requeues the
    task and exits; it returns if no signal came."""
    from submitit import JobEnvironment

    sig = JobEnvironment._usr_sig()
    submitit_handler, received = signal.getsignal(sig), []

    def stop(signum, frame):
        received.append((signum, frame))
        run_stop = signal.getsignal(signal.SIGTERM)
        if callable(run_stop):
            run_stop(signum, frame)

    def requeue():
        if received and callable(submitit_handler):
            signal.signal(sig, submitit_handler)
            submitit_handler(*received[0])

    signal.signal(sig, stop)
    try:
        yield requeue
    finally:
        signal.signal(sig, submitit_handler)


# --- the driver ------------------------------------------------------------------------------------------------------
def run_slurm(configs: list[RunConfig], sweep_dir: Path, threads: int, resources: Resources, settings: SlurmSettings,
              on_progress: Callable[[tuple], None], rerun: frozenset[str] = frozenset()) -> Iterator[dict]:
    """Submit `configs` as one array job and yield each run's summary (read from its record) as its task ends.
    Runs compute with `resources.cpus` threads, else `threads`, unless they recorded their own (`settle_threads`).
    Finished runs are skipped unless in `rerun`; runs held by another process are yielded `busy`. A task that ends
    without a result is resubmitted (resuming from the run's checkpoint) up to RESUBMITS times, then recorded failed.
    Stopping the generator (Ctrl-C, SIGTERM) cancels the tasks still running; each checkpoints its run."""
    from ..train import settle_threads

    sweep_dir = Path(sweep_dir).absolute()
    todo = []
    for cfg in configs:
        seen = look(sweep_dir, cfg, rerun=cfg.run_id in rerun)  # only a look: the task claims the run itself
        if seen is None:
            todo.append(settle_threads(cfg, sweep_dir / cfg.run_id, resources.cpus or threads))
        else:
            yield seen.outcome
    if not todo:
        return
    executor = _executor(sweep_dir / ".slurm", job_parameters(resources, settings, todo, sweep_dir.name))
    for _ in range(RESUBMITS + 1):
        jobs = _submit(executor, todo, sweep_dir, rerun)
        ended = []
        with contextlib.closing(_as_they_end(jobs, todo, sweep_dir, on_progress)) as tasks:
            for cfg, job in tasks:
                summary = _outcome(cfg, job, sweep_dir)
                if summary is None:
                    ended.append((cfg, job))
                else:
                    yield summary
        todo = [cfg for cfg, _ in ended]
        if not todo:
            return
    for cfg, job in ended:
        error = (f"its SLURM task ended without a result {RESUBMITS + 1} times (last: job {job.job_id}, state "
                 f"{job.state}); log: {job.paths.stderr}")
        yield as_outcome(record_failure(sweep_dir, cfg, error))


def _submit(executor, configs: list[RunConfig], sweep_dir: Path, rerun: frozenset[str]) -> list:
    from submitit.core.utils import FailedJobError

    try:
        return executor.map_array(ArrayTask(), [c.canonical() for c in configs], [str(sweep_dir)] * len(configs),
                                  [c.run_id in rerun for c in configs])
    except (FailedJobError, OSError) as e:  # sbatch refused the job (bad account, partition, ...)
        message = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"--executor slurm: sbatch refused the array job: {message}") from None


def _as_they_end(jobs: list, configs: list[RunConfig], sweep_dir: Path, on_progress) -> Iterator[tuple]:
    """(config, job) as each task ends; meanwhile each running run's latest metrics row goes to `on_progress`.
    Closed early (Ctrl-C, SIGTERM, an error), it cancels the tasks still pending."""
    pending, steps = dict(zip(jobs, configs)), {}
    try:
        while pending:
            for job, cfg in list(pending.items()):
                if job.done():
                    del pending[job]
                    yield cfg, job
            for cfg in pending.values():
                row = _latest_row(sweep_dir / cfg.run_id)
                if row is not None and row.get("step") != steps.get(cfg.run_id):
                    steps[cfg.run_id] = row.get("step")
                    on_progress(ProgressEvent(cfg.run_id, row.get("step", 0), cfg.train.steps,
                                              row.get("train_loss"), row.get("eval_accuracy")))
            if pending:
                time.sleep(POLL_S)
    finally:
        if pending:
            _cancel(list(pending))


def _cancel(jobs: list) -> None:
    if _cluster() == "slurm":  # one scancel per array, not per task
        subprocess.call(["scancel", *sorted({job.job_id.split("_")[0] for job in jobs})])
    else:
        for job in jobs:
            job.cancel(check=False)


def _outcome(cfg: RunConfig, job, sweep_dir: Path) -> dict | None:
    """What an ended task leaves: the run's summary from its record, `interrupted`/`busy`, a `failed` record if the
    task raised (e.g. seqbench cannot be imported on the node), or None when it left no result (it was killed)."""
    from submitit.core.utils import pickle_load

    if not job.paths.result_pickle.exists():
        return None
    outcome, result = pickle_load(job.paths.result_pickle)
    if outcome != "success":
        lines = [line for line in str(result).splitlines() if line.strip()]
        return as_outcome(record_failure(sweep_dir, cfg, f"SLURM task failed: {lines[-1] if lines else 'no traceback'}; "
                                                         f"log: {job.paths.stderr}"))
    if result["status"] in ("interrupted", "busy"):
        return result
    summary = _summary(sweep_dir / cfg.run_id)  # the record, not the task's word, says how the run ended
    if not summary:  # not visible here yet (a lagging shared filesystem): resubmitted, its task will find it
        return None
    return {**summary, "skipped": True} if result.get("skipped") else summary


def _summary(run_dir: Path) -> dict:
    return as_outcome(read_summary(run_dir) or {})


def _latest_row(run_dir: Path) -> dict | None:
    """The last complete row of a run's metrics.jsonl (read from its end), or None."""
    try:
        with open(run_dir / "metrics.jsonl", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


class SlurmExecutor:
    """One SLURM array job per sweep (submitit), its tasks writing their records into a shared sweep folder."""

    name = "slurm"
    help = "a SLURM array job"
    here = False
    flags = {"slurm_partition": "", "slurm_time": "", "slurm_array_parallelism": "", "slurm_param": "",
             "cpus_per_run": "", "gpus_per_run": "", "resource": ""}

    def add_arguments(self, parser) -> None:
        s = parser.add_argument_group("SLURM (--executor slurm; override the spec's `slurm:`)")
        s.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
        s.add_argument("--slurm-time", type=int, metavar="MINUTES",
                       help="time limit per run in minutes (required: here or as slurm.time in the spec); a run that "
                            "reaches it checkpoints and is requeued")
        s.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                       help="runs of the array at once (default: all)")
        s.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                       help="a further sbatch parameter by submitit's name (account=proj, qos=high); repeatable")

    def prepare(self, args, spec, resources: Resources) -> tuple[Resources, SlurmSettings]:
        return slurm_settings(args, spec, resources)

    def preflight(self, settings, plan: Plan, todo: list[RunConfig]) -> None:
        pass  # the nodes' memory and devices are not known here; sbatch refuses what the cluster cannot hold

    def run(self, settings: tuple[Resources, SlurmSettings], plan: Plan, configs: list[RunConfig],
            rerun: frozenset[str]) -> Iterator[Outcome]:
        return run_slurm(configs, plan.sweep_dir, plan.threads, *settings, plan.on_progress, rerun)
