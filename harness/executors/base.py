"""What an executor is: the contract `seqbench sweep` holds every executor to, and what they share.

An executor takes a sweep's runs and hands back one outcome per run as runs end (runs.Outcome), writing or having
written each run's record through harness/runs.py. The command line knows executors only through this contract:

1. `add_arguments(parser)`: its own flags on `seqbench sweep` (`flags` names them, so that the command refuses them
   with another executor);
2. `prepare(args, spec, resources)`: its settings from the spec and the flags, checked before anything is written
   (ConfigError); `resources` is what each run asks of a cluster (the spec's `resources:` and the resource flags);
3. `preflight(settings, plan)`: refuse runs it cannot hold (memory, a cluster's nodes), before anything is written;
4. `run(settings, plan, configs, rerun)`: run them, yielding outcomes.

This module imports neither torch nor a cluster's client: `seqbench sweep --help` builds every executor's flags.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..runs import Outcome, ProgressEvent


@dataclasses.dataclass
class Plan:
    """What a sweep hands its executor besides the runs: where the records go, how many workers and threads, how to
    report progress, and how to name a run's point of the sweep in a message."""

    sweep_dir: Path
    workers: int
    threads: int  # CPU threads per run, for runs that have not recorded their own (train.settle_threads)
    on_progress: Callable[[ProgressEvent], None]
    #: a run's config -> where it comes from, for messages, e.g. "sweep.yaml: at model.name=lstm seed=0"
    describe: Callable[[Any], str] = str


class Executor(Protocol):
    """Where a sweep's runs run. Register one in harness/executors/__init__.py (EXECUTORS)."""

    name: ClassVar[str]  # the value of --executor
    help: ClassVar[str]  # one phrase, for --executor's help
    #: whether runs use this machine's devices and memory (configs are resolved with them, and the memory check
    #: applies); False for executors whose runs run on other nodes
    here: ClassVar[bool]
    #: its own flags (argparse dests) -> the message when one is given with another executor; "{flag}" is the flag,
    #: "{owners}" the executors that take it, "{executor}" the one chosen. An empty message means the default,
    #: "{flag} needs --executor {owners}".
    flags: ClassVar[dict[str, str]]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def prepare(self, args: argparse.Namespace, spec, resources) -> Any: ...

    def preflight(self, settings: Any, plan: Plan, todo: list) -> None: ...

    def run(self, settings: Any, plan: Plan, configs: list, rerun: frozenset[str]) -> Iterator[Outcome]: ...


# --- what executors share ----------------------------------------------------------------------------------------
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(device: str, per_gpu: int = 1) -> int:
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count()) * per_gpu
    return max(1, min(cpu_count(), 8))


def threads_per_worker(workers: int) -> int:
    """Split the cores so workers do not oversubscribe the CPU (intra-op threads per worker)."""
    return max(1, cpu_count() // workers)


def limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # can only be set before the first parallel region
        torch.set_num_interop_threads(1)
