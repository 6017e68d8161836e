"""Training progress: a tqdm bar on a terminal, plain lines (one per evaluation) otherwise."""

from __future__ import annotations

import sys

from tqdm import tqdm


def _fmt(row: dict) -> dict[str, str]:
    keys = {"train_loss": "loss", "eval_loss": "eval", "eval_accuracy": "acc"}
    return {short: f"{row[k]:.4g}" for k, short in keys.items() if row.get(k) is not None}


class Progress:
    def __init__(self, total: int, label: str, enabled: bool | None = None, stream=None, start: int = 0):
        self.stream = stream or sys.stderr
        self.enabled = True if enabled is None else enabled
        self.tty = self.enabled and self.stream.isatty()
        self.total, self.label, self.bar, self.done = total, label, None, start

    def __enter__(self) -> Progress:
        if self.tty:
            self.bar = tqdm(total=self.total, initial=self.done, desc=self.label, file=self.stream,
                            dynamic_ncols=True, leave=False)
        return self

    def update(self, step: int, row: dict) -> None:
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
