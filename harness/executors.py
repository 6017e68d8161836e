"""Executors carry out a sweep's runs: `local` (worker processes on this machine) or `ray` (tasks on a Ray cluster).

Both hand back one summary per run as runs finish. Local workers write their own records (with checkpoints and resume);
Ray workers return their record to the driver, which writes it, so a cluster needs no shared filesystem.
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

import torch

from .config import RunConfig
from .records import RunWriter, alive, claim, is_finished, read_summary, replace_dir, write_failure

POOL_RESTARTS = 2  # a worker that dies (OOM, segfault) takes its pool down; retry the unfinished runs this often


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(device: str) -> int:
    if device == "cuda":
        return max(1, torch.cuda.device_count())
    return max(1, min(cpu_count(), 8))


def threads_per_worker(workers: int) -> int:
    """Split the cores so workers do not oversubscribe the CPU (intra-op threads per worker)."""
    return max(1, cpu_count() // workers)


def limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # can only be set before the first parallel region
        torch.set_num_interop_threads(1)


# --- local ---------------------------------------------------------------------------------------------------------
_progress: mp.Queue | None = None


def _init_worker(threads: int, driver: int, progress: mp.Queue, gpu_counter) -> None:
    global _progress
    _progress = progress
    limit_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it sends SIGTERM to workers
    if gpu_counter is not None:
        with gpu_counter.get_lock():
            torch.cuda.set_device(gpu_counter.value % torch.cuda.device_count())
            gpu_counter.value += 1

    def watchdog():  # a worker outliving a killed driver would hold its run's lock and keep writing
        while alive(driver):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()


def _local_run(config: dict, out_dir: str, threads: int, force: bool) -> dict:
    from .train import RunInterrupted, execute

    cfg = RunConfig.model_validate(config)

    def report(step: int, total: int, row: dict) -> None:
        with contextlib.suppress(Exception):
            _progress.put_nowait((cfg.run_id, step, total, row.get("train_loss"), row.get("eval_accuracy")))

    try:
        summary, _ = execute(cfg, Path(out_dir), progress=False, sink=report, force=force, threads=threads)
    except RunInterrupted as e:
        return {"run_id": cfg.run_id, "status": "interrupted", "step": e.step}
    return {k: v for k, v in summary.items() if k not in ("traceback", "config")}


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
        yield _record_failure(cfg, sweep_dir, "worker process died (killed or crashed) on every attempt")


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


def _record_failure(cfg: RunConfig, sweep_dir: Path, error: str, claimed: bool = False) -> dict:
    """Record a run that could not finish through no error of its own code (its worker kept dying)."""
    run_dir = sweep_dir / cfg.run_id
    with contextlib.nullcontext(True) if claimed else claim(run_dir) as mine:
        if not mine or is_finished(run_dir):
            return read_summary(run_dir) or {"run_id": cfg.run_id, "status": "busy"}
        return write_failure(cfg, run_dir, error)


# --- ray -----------------------------------------------------------------------------------------------------------
def _ray_run(config: dict, threads: int) -> dict:
    """A Ray task: train in memory and return the whole record to the driver (`config` has its threads settled)."""
    from .records import MemoryWriter
    from .train import run_record

    limit_threads(threads)
    cfg = RunConfig.model_validate(config)
    memory = MemoryWriter()
    summary = run_record(cfg, memory, progress=False)
    return {"rows": memory.rows, "profiles": memory.profile_rows, "summary": summary}


def connect_ray(address: str | None, num_cpus: int | None = None):
    try:
        import ray
    except ImportError:
        from .config import ConfigError

        raise ConfigError("--executor ray: ray is not installed; pip install 'seqbench[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(address=address, **kwargs)
    return ray


def run_ray(configs: list[RunConfig], sweep_dir: Path, threads: int, address: str | None,
            on_progress: Callable[[tuple], None], fn: Callable[[dict, int], dict] = _ray_run,
            rerun: frozenset[str] = frozenset()) -> Iterator[dict]:
    """Each run is a Ray task (one GPU, or `threads` CPUs); the driver holds each run's claim and writes its record.
    A task whose worker dies is retried by Ray; the record is written once, when a task returns (for a run in
    `rerun`, staged beside the old record and moved over it then)."""
    from .train import settle_threads

    ray = connect_ray(address)
    gpu = 1 if configs and configs[0].device == "cuda" else 0
    task = ray.remote(fn).options(num_cpus=0 if gpu else threads, num_gpus=gpu, max_retries=3)
    with contextlib.ExitStack() as claims:
        refs = {}
        for cfg in configs:
            run_dir = sweep_dir / cfg.run_id
            if not claims.enter_context(claim(run_dir)):
                yield {"run_id": cfg.run_id, "status": "busy"}
            elif is_finished(run_dir) and cfg.run_id not in rerun:
                yield {**read_summary(run_dir), "skipped": True}
            else:
                cfg = settle_threads(cfg, run_dir, threads)
                refs[task.remote(cfg.canonical(), cfg.threads)] = cfg
        while refs:
            (done,), _ = ray.wait(list(refs), num_returns=1)
            cfg = refs.pop(done)
            try:
                result = ray.get(done)
            except Exception as e:  # retries exhausted: the worker kept dying
                error = f"ray task failed: {type(e).__name__}: {e}".splitlines()[0]
                yield _record_failure(cfg, sweep_dir, error, claimed=True)
                continue
            run_dir = sweep_dir / cfg.run_id
            staged = run_dir.with_name(f".{cfg.run_id}.staging") if is_finished(run_dir) else run_dir
            RunWriter(staged).write_all(cfg.canonical(), result["rows"], result["profiles"], result["summary"])
            if staged != run_dir:
                replace_dir(staged, run_dir)
            on_progress((cfg.run_id, cfg.train.steps, cfg.train.steps, None, None))
            yield {k: v for k, v in result["summary"].items() if k not in ("traceback", "config")}
