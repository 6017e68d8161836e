"""The adding problem (Arjovsky et al. 2016, after Hochreiter & Schmidhuber 1997): sum two marked values."""

from __future__ import annotations

import dataclasses

from typing import TYPE_CHECKING

from .base import Task, param

if TYPE_CHECKING:  # imported where computed, so that listing the tasks needs no torch
    import torch

#: Hochreiter & Schmidhuber's criterion for a correctly answered sequence.
TOLERANCE = 0.04


@dataclasses.dataclass(frozen=True)
class AddingTask(Task):
    """Adding problem of length T = ``length``.

    Input (B, T, 2): channel 0 holds values drawn from U[0, 1); channel 1 marks exactly two steps with 1, one uniform in
    [0, T//2) and one uniform in [T//2, T). Target (B,): the sum of the two marked values, due at the last step.
    """

    name = "adding"
    input_kind = "features"
    loss_label = "eval MSE"
    accuracy_label = f"fraction with |error| < {TOLERANCE:g}"
    accuracy_note = f"fraction of sequences with |error| < {TOLERANCE:g}"

    length: int = param(100, "sequence length T (one marker in each half)", ge=2)
    solved_mse: float = param(0.01, "eval MSE below which the task counts as solved", gt=0)

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    @property
    def seq_len(self) -> int:
        return self.length

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Returns ``x`` float32 (n, T, 2) and ``y`` float32 (n,) on ``device``."""
        import torch

        T, half = self.length, self.length // 2
        values = torch.rand(n, T, generator=generator, device=device)  # (n, T)
        first = torch.randint(0, half, (n, 1), generator=generator, device=device)
        second = torch.randint(half, T, (n, 1), generator=generator, device=device)
        marked = torch.cat([first, second], 1)  # (n, 2)
        markers = torch.zeros_like(values).scatter_(1, marked, 1.0)
        x = torch.stack([values, markers], -1)  # (n, T, 2)
        y = values.gather(1, marked).sum(1)  # (n,)
        return x, y

    def _prediction(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The output at the last step, (B,), after checking ``out`` (B, T, 1) against ``y`` (B,)."""
        if y.ndim != 1 or out.shape != (y.shape[0], self.seq_len, 1):
            raise ValueError(f"adding: expected out (B, {self.seq_len}, 1) and y (B,), "
                             f"got out {tuple(out.shape)} and y {tuple(y.shape)}")
        return out[:, -1, 0]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """MSE of the last step's output against the target; ``out`` (B, T, 1), ``y`` (B,)."""
        from torch.nn import functional as F

        pred = self._prediction(out, y)
        # y is float32; casting it lets a float64 model (e.g. a gradient diagnostic) keep its precision.
        return F.mse_loss(pred, y.to(pred.dtype))

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence (B,): squared error ``loss`` and ``accuracy`` (1.0 where |prediction - target| < 0.04)."""
        pred = self._prediction(out, y)
        err = pred - y.to(pred.dtype)
        return {"loss": err.square(), "accuracy": (err.abs() < TOLERANCE).to(pred.dtype)}

    @property
    def baseline_loss(self) -> float:
        """Predicting 1 always: the variance of a sum of two U[0, 1) values, 2/12."""
        return 1 / 6

    @property
    def solved_criterion(self) -> str:
        return f"eval_loss < {self.solved_mse:g}"

    def solved(self, stats: dict[str, float]) -> bool:
        return stats["eval_loss"] < self.solved_mse
