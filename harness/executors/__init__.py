"""Executors carry out a sweep's runs: `local` (worker processes on this machine), `ray` (tasks on a Ray cluster),
`slurm` (an array job). Each keeps the contract in base.py; `seqbench sweep` reaches them only through EXECUTORS.

A new executor is one module here with a class that keeps `base.Executor`, and its line in EXECUTORS.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .base import Executor, Plan
from .local import LocalExecutor
from .ray import RayExecutor
from .slurm import SlurmExecutor

__all__ = ["EXECUTORS", "Executor", "Plan", "add_arguments", "refuse_others_flags"]

EXECUTORS: dict[str, Executor] = {e.name: e for e in (LocalExecutor(), RayExecutor(), SlurmExecutor())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--executor and every executor's own flags (on `seqbench sweep`)."""
    parser.add_argument("--executor", choices=tuple(EXECUTORS), default="local",
                        help="where the runs run: " + ", ".join(f"{e.name} ({e.help})" for e in EXECUTORS.values()))
    from ..resources import add_arguments as add_resource_arguments

    for executor in EXECUTORS.values():
        executor.add_arguments(parser)
    add_resource_arguments(parser)  # shared by the executors whose runs ask a cluster for resources


def refuse_others_flags(args: argparse.Namespace) -> None:
    """ConfigError for a flag that belongs to other executors than the chosen one (`--ray-address` without
    `--executor ray`)."""
    chosen = EXECUTORS[args.executor]
    owners: dict[str, list[Executor]] = {}
    for executor in EXECUTORS.values():
        for dest in executor.flags:
            owners.setdefault(dest, []).append(executor)
    for dest, takers in owners.items():
        value = getattr(args, dest, None)
        if dest in chosen.flags or value is None or value is False or value == []:
            continue
        message = next((t.flags[dest] for t in takers if t.flags[dest]), "") or "{flag} needs --executor {owners}"
        raise ConfigError(message.format(flag="--" + dest.replace("_", "-"), executor=chosen.name,
                                         owners=" or ".join(t.name for t in takers)))
