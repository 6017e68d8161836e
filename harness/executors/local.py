"""The `local` executor: the sweep's runs in worker processes on this machine, each writing its own record.

Workers fork from a server process that has imported torch and the harness once. Each run claims its folder, resumes
from its checkpoint and commits its record through harness/runs.py (train.execute), exactly as `seqbench run` does.
A worker that dies (OOM, segfault) takes the pool down; the unfinished runs are run again in a new pool, up to
POOL_RESTARTS times, then recorded failed. One Ctrl-C or SIGTERM stops the sweep: runs in flight checkpoint, no
queued run starts.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..records import alive, is_finished
from ..runs import Outcome, ProgressEvent, as_outcome, interrupted, record_failure
from .base import Plan, limit_threads

POOL_RESTARTS = 2  # a worker that dies (OOM, segfault) takes its pool down; retry the unfinished runs this often


_progress: mp.Queue | None = None


#: set in a local worker once a stop reached it (the driver's SIGTERM): the runs already queued to it return at once
#: instead of starting (a pool hands each worker its next call before the current one ends)
_stopping = threading.Event()


def _init_worker(threads: int, driver: int, progress: mp.Queue, gpu_counter) -> None:
    global _progress
    _progress = progress
    limit_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it sends SIGTERM to workers
    # between runs; during one, the run's own handler checkpoints it (train.stop_on_signals) and `_local_run` sets it
    signal.signal(signal.SIGTERM, lambda *_: _stopping.set())
    if gpu_counter is not None:
        with gpu_counter.get_lock():
            import torch

            torch.cuda.set_device(gpu_counter.value % torch.cuda.device_count())
            gpu_counter.value += 1

    def watchdog():  # a worker outliving a killed driver would hold its run's lock and keep writing
        while alive(driver):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()


def _local_run(config: dict, out_dir: str, threads: int, force: bool) -> dict:
    from ..train import RunInterrupted, execute

    cfg = RunConfig.model_validate(config)

    def report(step: int, total: int, row: dict) -> None:
        with contextlib.suppress(Exception):
            _progress.put_nowait(ProgressEvent(cfg.run_id, step, total, row.get("train_loss"),
                                               row.get("eval_accuracy")))

    if _stopping.is_set():  # queued before the stop: not started, so nothing to checkpoint
        return interrupted(cfg, None)
    try:
        summary, _ = execute(cfg, Path(out_dir), progress=False, sink=report, force=force, threads=threads)
    except RunInterrupted as e:
        _stopping.set()
        return interrupted(cfg, e.step)
    return as_outcome(summary)


def _context() -> mp.context.BaseContext:
    """Workers fork from a clean server process that imported torch and the harness once (the first optimiser
    alone imports torch._dynamo, ~3 s here): no per-worker start-up, and no fork of a process with threads."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["seqbench.harness._worker_preload"])
    return ctx


def run_local(configs: list[RunConfig], sweep_dir: Path, workers: int, threads: int,
              on_progress: Callable[[tuple], None], rerun: frozenset[str] = frozenset()) -> Iterator[dict]:
    """Run `configs` in `workers` processes, each run with `threads` CPU threads unless it recorded its own (see
    `train.settle_threads`); yields each run's summary as it finishes. Finished runs in `rerun` are run again, their
    old record replaced once the new one is finished."""
    ctx = _context()
    progress = ctx.Queue()
    gpu_counter = ctx.Value("i", 0) if configs and configs[0].device == "cuda" else None
    pending = list(configs)
    for attempt in range(POOL_RESTARTS + 1):
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(threads, os.getpid(), progress, gpu_counter))
        stop = threading.Event()
        pump = threading.Thread(target=_pump, args=(progress, on_progress, stop), daemon=True)
        pump.start()
        futures = {pool.submit(_local_run, c.canonical(), str(sweep_dir), threads, c.run_id in rerun): c
                   for c in pending}
        broken: list[RunConfig] = []
        try:
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    broken.append(futures[fut])
        except BaseException:  # Ctrl-C or SIGTERM: workers checkpoint their runs and stop
            _terminate_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        pending = [c for c in broken if not is_finished(sweep_dir / c.run_id) or c.run_id in rerun]
        if not pending:
            return
    for cfg in pending:
        yield as_outcome(record_failure(sweep_dir, cfg, "worker process died (killed or crashed) on every attempt"))


def _pump(progress: mp.Queue, on_progress, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            on_progress(progress.get(timeout=0.2))
        except queue.Empty:
            continue
        except (EOFError, OSError):
            return


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    for proc in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)


class LocalExecutor:
    """Worker processes on this machine (--workers of them), sharing its cores."""

    name = "local"
    help = "local worker processes"
    here = True
    flags = {"workers_per_gpu": "{flag} is for --executor {owners} (with {executor}, each run asks for its share of a "
                                "GPU: --gpus-per-run 0.25 runs four to a GPU)"}

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workers-per-gpu", type=int, metavar="N",
                            help="device=cuda: N runs at a time on each GPU (small models leave a GPU mostly idle; "
                                 "workers are given GPUs in turn)")

    def prepare(self, args, spec, resources) -> None:
        return None

    def preflight(self, settings, plan: Plan, todo: list[RunConfig]) -> None:
        """Refuse runs that would not fit this machine's memory, `plan.workers` of them at once."""
        if not todo:
            return
        from ..memory import available, check

        free = available(todo[0].device)
        at_once = min(plan.workers, len(todo))
        if todo[0].device == "cuda":  # the workers are spread over the GPUs; `free` is one GPU's
            import torch

            at_once = min(-(-plan.workers // max(1, torch.cuda.device_count())), len(todo))
        for cfg in todo:
            try:
                check(cfg, at_once, free)
            except ConfigError as e:
                raise ConfigError(f"{plan.describe(cfg)}: {e}") from None

    def run(self, settings, plan: Plan, configs: list[RunConfig], rerun: frozenset[str]) -> Iterator[Outcome]:
        return run_local(configs, plan.sweep_dir, plan.workers, plan.threads, plan.on_progress, rerun)
