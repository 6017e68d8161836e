"""Induction heads as in the Mamba paper's synthetic (Gu & Dao 2023, after Olsson et al. 2022): recall a token."""

from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING

from .base import SolvedByAccuracy, Task, param

if TYPE_CHECKING:  # imported where computed, so that listing the tasks needs no torch
    import torch


@dataclasses.dataclass(frozen=True)
class InductionTask(SolvedByAccuracy, Task):
    """Induction heads with vocabulary A = ``vocab`` and length T = ``length``; every sequence has L = T steps.

    Alphabet: ordinary tokens 0..A-2, the special (trigger) token A-1.
    Input (B, T): ordinary tokens drawn uniformly, except the trigger at one position p drawn uniformly from
    [0, T-3] and again at the last position T-1, so it appears exactly twice and the token at p + 1 (<= T-2) is an
    ordinary one. Target (B,): that token x[p + 1], due at the last position (the model's other outputs are ignored).
    The model outputs (B, T, A-1) logits over the ordinary tokens only: the trigger is never a target.

    Loss: cross-entropy at the last position. Metrics per sequence: ``accuracy`` of the last position, ``exact``
    (the whole sequence right, i.e. the same as ``accuracy``, since only one position carries a target).
    Chance: a memoryless predictor knows only that the target is uniform over the A-1 ordinary tokens, so its best
    loss is ln(A-1) and its accuracy 1/(A-1). ``length`` is the parameter that length generalisation varies.
    """

    name = "induction"
    input_kind = "tokens"
    loss_label = "eval cross-entropy (nats/sequence)"
    accuracy_label = "accuracy at the last step"
    accuracy_note = "at the last step"

    length: int = param(256, "sequence length T (the trigger at a uniform position in [0, T-3] and at T-1)", ge=3)
    vocab: int = param(16, "vocabulary size A: ordinary tokens 0..A-2 and the trigger A-1", ge=3)
    solved_accuracy: float = param(0.99, "eval accuracy at the last position at which the task counts as solved",
                                   gt=0, le=1)

    @property
    def input_size(self) -> int:
        return self.vocab

    @property
    def output_size(self) -> int:
        # The target is always an ordinary token, so the model predicts one of 0..A-2.
        return self.vocab - 1

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def trigger(self) -> int:
        return self.vocab - 1

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Returns ``x`` LongTensor (n, T) and ``y`` LongTensor (n,) on ``device``."""
        import torch

        T = self.length
        x = torch.randint(0, self.trigger, (n, T), generator=generator, device=device)  # ordinary tokens only
        first = torch.randint(0, T - 2, (n, 1), generator=generator, device=device)  # uniform in [0, T-3]
        x.scatter_(1, first, self.trigger)
        x[:, -1] = self.trigger
        y = x.gather(1, first + 1).squeeze(1)  # position <= T-2: ordinary, and not the second trigger
        return x, y

    def _prediction(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The logits at the last position, (B, A-1), after checking ``out`` (B, T, A-1) against ``y`` (B,)."""
        if y.ndim != 1 or out.shape != (y.shape[0], self.seq_len, self.output_size):
            raise ValueError(f"induction: expected out (B, {self.seq_len}, {self.output_size}) and y (B,), "
                             f"got out {tuple(out.shape)} and y {tuple(y.shape)}")
        return out[:, -1]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at the last position, averaged over the batch; ``out`` (B, T, A-1), ``y`` (B,)."""
        from torch.nn import functional as F

        return F.cross_entropy(self._prediction(out, y), y)

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence (B,): last-position cross-entropy ``loss``, its ``accuracy`` and ``exact`` (equal to it)."""
        from torch.nn import functional as F

        logits = self._prediction(out, y)
        ce = F.cross_entropy(logits, y, reduction="none")  # (B,)
        hit = (logits.argmax(-1) == y).to(ce.dtype)
        return {"loss": ce, "accuracy": hit, "exact": hit.clone()}

    @property
    def baseline_loss(self) -> float:
        """Memoryless predictor, uniform over the A-1 ordinary tokens: ln(A-1) (accuracy 1/(A-1))."""
        return math.log(self.vocab - 1)

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of a memoryless predictor: 1/(A-1)."""
        return 1 / (self.vocab - 1)
