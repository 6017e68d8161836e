"""Induction heads as in the Mamba paper's synthetic (Gu & Dao 2023, after Olsson et al. 2022): recall a token."""

from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING, Literal

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

    ``loss_positions="all"`` is the public H3/safari generator's protocol: next-token prediction at every position
    (target y (B, T): x shifted left by one, and the answer at the last position), the loss averaged over all T
    positions, the accuracy (and ``exact``) still scored at the last position alone. The model then predicts over all
    A tokens, the trigger included (it is the next token twice). The sequences are the same draws in both modes.
    Baseline loss there: a predictor that ignores the tokens but knows the position (see ``baseline_loss``).
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
    loss_positions: Literal["last", "all"] = param("last", "where the loss is taken: the last position (last), or "
                                                   "next-token loss at every position, scored at the last (all: the "
                                                   "public H3/safari generator)")

    @property
    def input_size(self) -> int:
        return self.vocab

    @property
    def output_size(self) -> int:
        # At the last position the target is always an ordinary token, so the model predicts one of 0..A-2; taking
        # the loss at every position, it predicts the next token, which is the trigger twice: one of 0..A-1.
        return self.vocab if self.loss_positions == "all" else self.vocab - 1

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def trigger(self) -> int:
        return self.vocab - 1

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Returns ``x`` LongTensor (n, T) and ``y`` LongTensor (n,) on ``device``; with ``loss_positions="all"``,
        ``y`` (n, T): the next token at every position and the answer at the last."""
        import torch

        T = self.length
        x = torch.randint(0, self.trigger, (n, T), generator=generator, device=device)  # ordinary tokens only
        first = torch.randint(0, T - 2, (n, 1), generator=generator, device=device)  # uniform in [0, T-3]
        x.scatter_(1, first, self.trigger)
        x[:, -1] = self.trigger
        answer = x.gather(1, first + 1).squeeze(1)  # position <= T-2: ordinary, and not the second trigger
        if self.loss_positions == "all":
            return x, torch.cat([x[:, 1:], answer[:, None]], dim=1)
        return x, answer

    def _checked(self, out: torch.Tensor, y: torch.Tensor) -> None:
        every = self.loss_positions == "all"
        want = (y.shape[0], self.seq_len) if every else (y.shape[0],)
        if tuple(y.shape) != want or out.shape != (y.shape[0], self.seq_len, self.output_size):
            raise ValueError(f"induction: expected out (B, {self.seq_len}, {self.output_size}) and y "
                             f"{'(B, ' + str(self.seq_len) + ')' if every else '(B,)'}, got out {tuple(out.shape)} "
                             f"and y {tuple(y.shape)}")

    def _per_sequence(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of each sequence (B,) and its last position's logits and target."""
        from torch.nn import functional as F

        self._checked(out, y)
        if self.loss_positions == "all":
            ce = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)  # (B, T) -> (B,)
            return ce, out[:, -1], y[:, -1]
        return F.cross_entropy(out[:, -1], y, reduction="none"), out[:, -1], y

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at the last position (or averaged over every position), averaged over the batch; ``out``
        (B, T, output_size)."""
        return self._per_sequence(out, y)[0].mean()

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence (B,): its ``loss`` (as :meth:`loss` takes it), the last position's ``accuracy`` and ``exact``
        (equal to it)."""
        ce, logits, target = self._per_sequence(out, y)
        hit = (logits.argmax(-1) == target).to(ce.dtype)
        return {"loss": ce, "accuracy": hit, "exact": hit.clone()}

    @property
    def baseline_loss(self) -> float:
        """Memoryless predictor, uniform over the A-1 ordinary tokens: ln(A-1) (accuracy 1/(A-1)). With the loss at
        every position, the predictor that ignores the tokens but knows the position: at positions 0..T-4 the next
        token is the first trigger with probability q = 1/(T-2), else uniform over the A-1 ordinary tokens (entropy
        -q ln q - (1-q) ln((1-q)/(A-1))); at T-3 and T-1 it is ordinary (ln(A-1)); at T-2 it is the trigger (0)."""
        ordinary = math.log(self.vocab - 1)
        if self.loss_positions == "last":
            return ordinary
        T = self.length
        q = 1 / (T - 2)
        mixed = -q * math.log(q) - (1 - q) * math.log((1 - q) / (self.vocab - 1)) if q < 1 else 0.0
        return ((T - 3) * mixed + 2 * ordinary) / T

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of a memoryless predictor: 1/(A-1)."""
        return 1 / (self.vocab - 1)
