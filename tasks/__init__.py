"""Synthetic long-dependency tasks and their registry: a short user-facing name maps to a :class:`Task` subclass."""

from __future__ import annotations

import dataclasses

from .adding import AddingTask
from .base import Task, param
from .copy import CopyTask
from .induction import InductionTask
from .mqar import MQARTask
from .selective_copy import SelectiveCopyTask

TASKS: dict[str, type[Task]] = {"adding": AddingTask, "copy": CopyTask, "induction": InductionTask, "mqar": MQARTask,
                               "selective_copy": SelectiveCopyTask}

__all__ = ["Task", "param", "CopyTask", "AddingTask", "InductionTask", "MQARTask", "SelectiveCopyTask", "TASKS", "get_task"]


def get_task(name: str, **params) -> Task:
    """The task registered as ``name``, built with ``params`` (validated against its declared fields and bounds)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        # Rejected here so a misspelt config key fails with the choices rather than a bare TypeError.
        raise ValueError(f"unknown parameter(s) {', '.join('task.' + k for k in unknown)} for task {name!r}; "
                         f"known: {', '.join('task.' + k for k in known)}")
    return cls(**params)
