"""Imported once by the local executor's fork server, so every worker it forks starts warm."""

import atexit
import os

_SERVER = os.getpid()


def _skip_teardown() -> None:
    """The fork server ends when its sweep does; registered before torch is imported, this runs after torch's exit
    handlers and ends the server without the interpreter's teardown of torch (over a CPU-second, for nothing). The
    workers it forks never run exit handlers (they leave through os._exit)."""
    if os.getpid() == _SERVER:
        os._exit(0)


atexit.register(_skip_teardown)

import torch._dynamo  # noqa: E402,F401  (torch.optim imports it on first use; seconds on a small CPU)

import seqbench.harness.executors.local  # noqa: E402,F401
import seqbench.harness.train  # noqa: E402,F401
