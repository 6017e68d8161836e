"""The Ray executor's mailbox actor (see executors/ray.py), in a module of its own that imports nothing but the standard
library: Ray starts a worker process for each sweep's actor, and that process imports the module the class comes
from. From executors/ray.py it would import the harness's configs and pydantic too (when it imported torch as well, that
cost over a CPU-second here at the start of every Ray sweep)."""

import threading


class Mailbox:
    """A Ray actor beside the driver: tasks send it a notice when they start and each checkpoint they make; the driver
    collects both every POLL_S, and asks it for a run's latest checkpoint when it submits the run again."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latest: dict[str, tuple[int, bytes]] = {}  # run_id -> (step, checkpoint), until the run is recorded
        self.starts: list[tuple[str, dict]] = []  # not collected yet
        self.fresh: dict[str, tuple[int, bytes]] = {}  # not collected yet

    def start(self, run_id: str, info: dict) -> None:
        with self.lock:
            self.starts.append((run_id, info))

    def checkpoint(self, run_id: str, step: int, data: bytes) -> None:
        with self.lock:
            self.latest[run_id] = self.fresh[run_id] = (step, data)

    def last(self, run_id: str) -> tuple[int, bytes] | None:
        with self.lock:
            return self.latest.get(run_id)

    def collect(self, finished: list[str]) -> tuple[list, dict]:
        """The starts and checkpoints since the last call; the runs in `finished` are forgotten."""
        with self.lock:
            for run_id in finished:
                self.latest.pop(run_id, None)
                self.fresh.pop(run_id, None)
            out = self.starts, self.fresh
            self.starts, self.fresh = [], {}
            return out
