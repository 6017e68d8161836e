"""Training progress: a tqdm bar on a terminal, plain lines (one per evaluation) otherwise."""

from __future__ import annotations

import sys

from tqdm import tqdm

from .runs import Outcome, ProgressEvent


def _fmt(row: dict) -> dict[str, str]:
    keys = {"train_loss": "loss", "eval_loss": "eval", "eval_accuracy": "acc"}
    return {short: f"{row[k]:.4g}" for k, short in keys.items() if row.get(k) is not None}


class Progress:
    def __init__(self, total: int, label: str, enabled: bool | None = None, stream=None, start: int = 0, sink=None):
        self.stream, self.sink = stream or sys.stderr, sink  # sink(step, total, row): progress for another process
        self.enabled = (True if enabled is None else enabled) and sink is None
        self.tty = self.enabled and self.stream.isatty()
        self.total, self.label, self.bar, self.done = total, label, None, start

    def __enter__(self) -> Progress:
        if self.tty:
            self.bar = tqdm(total=self.total, initial=self.done, desc=self.label, file=self.stream,
                            dynamic_ncols=True, leave=False)
        return self

    def update(self, step: int, row: dict) -> None:
        if self.sink is not None:
            self.sink(step, self.total, row)
        if self.bar is not None:
            self.bar.update(step - self.done)
            self.bar.set_postfix(_fmt(row), refresh=False)
        elif self.enabled and "eval_loss" in row:
            fields = " ".join(f"{k} {v}" for k, v in _fmt(row).items())
            print(f"{self.label} step {step}/{self.total} {fields}", file=self.stream, flush=True)
        self.done = step

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


class SweepProgress:
    """A sweep's display: runs done/total, running, failed and ETA, with the latest step of each running run."""

    def __init__(self, total: int, label: str, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.label, self.running, self.failed, self.done = total, label, {}, 0, 0
        self.bar = None

    def __enter__(self) -> SweepProgress:
        if self.tty:
            self.bar = tqdm(total=self.total, desc=self.label, unit="run", file=self.stream, dynamic_ncols=True)
        return self

    def step(self, event: ProgressEvent) -> None:
        """A run's progress, from an executor."""
        if event.step >= event.total:
            self.running.pop(event.run_id, None)
        else:
            self.running[event.run_id] = f"{event.step}/{event.total}"
        self._postfix()

    def finished(self, summary: Outcome) -> None:
        self.running.pop(summary["run_id"], None)
        self.failed += summary["status"] == "failed"
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
        else:
            state = "skipped (already recorded)" if summary.get("skipped") else summary["status"]
            final = (summary.get("final") or {}).get("eval_loss")
            loss = f" eval_loss {final:.4g}" if isinstance(final, float) else ""
            print(f"[{self.done}/{self.total}] {summary['run_id']} {summary.get('model', '')}/"
                  f"{summary.get('task', '')} {state}{loss}", file=self.stream, flush=True)

    def _postfix(self) -> None:
        if self.bar is not None:
            runs = " ".join(f"{k[:6]}:{v}" for k, v in list(self.running.items())[:4])
            self.bar.set_postfix_str(f"running {len(self.running)} failed {self.failed} {runs}", refresh=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
