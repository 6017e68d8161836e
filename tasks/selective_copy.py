"""Selective copying (Gu & Dao 2023, Mamba, App. E.1; the S4 code's copying task with ``variable=True``): pick M tokens
out of noise, wherever they fall, and write them back in order."""

from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING

from .base import SolvedByAccuracy, Task, param

if TYPE_CHECKING:  # imported where computed, so that listing the tasks needs no torch
    import torch

BLANK = 0


@dataclasses.dataclass(frozen=True)
class SelectiveCopyTask(SolvedByAccuracy, Task):
    """Selective copying with noise length L = ``length``, M = ``n_tokens`` and vocabulary A = ``vocab``.

    Alphabet: blank (noise) 0, data tokens 1..A-2, marker A-1.
    Input x (B, L + 2M), LongTensor: the first L + M slots are blanks except M data tokens, each drawn uniformly
    from 1..A-2, at M distinct slots drawn uniformly without replacement and kept in ascending order; the last M steps
    are markers. Target y (B, M): the data tokens in the order they appear. The model's outputs at the M marker
    positions (the last M steps) are read; its other outputs are ignored. Outputs (B, L + 2M, A-1) cover 0..A-2: the
    marker is never a target (blank is a class the model may predict, never a target either).

    Loss: cross-entropy over the M marker positions (the S4 code's convention). Metrics per sequence: ``accuracy``
    over its M positions and ``exact`` (all M right). Chance: a predictor that knows where the markers are but not the
    tokens is uniform over the A-2 data tokens, so its loss is ln(A-2) and its accuracy 1/(A-2). With the tokens in
    the first M slots this is the classic copy task. ``length`` (the noise) is what length generalisation varies.
    """

    name = "selective_copy"
    input_kind = "tokens"
    loss_label = "eval cross-entropy (nats/target)"
    accuracy_label = "accuracy at the markers"
    accuracy_note = "at the markers"

    length: int = param(256, "noise length L: the M data tokens are scattered among L + M slots", ge=1)
    n_tokens: int = param(16, "number M of data tokens to recall, in order, at the M markers", ge=1)
    vocab: int = param(16, "vocabulary size A: blank 0, data tokens 1..A-2, marker A-1", ge=3)
    solved_accuracy: float = param(0.99, "eval accuracy at the marker positions at which the task counts as solved",
                                   gt=0, le=1)

    @property
    def input_size(self) -> int:
        return self.vocab

    @property
    def output_size(self) -> int:
        return self.vocab - 1  # blank and the data tokens; the marker is never a target

    @property
    def seq_len(self) -> int:
        return self.length + 2 * self.n_tokens

    @property
    def marker(self) -> int:
        return self.vocab - 1

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Returns ``x`` LongTensor (n, L + 2M) and ``y`` LongTensor (n, M) on ``device``."""
        import torch

        L, M = self.length, self.n_tokens
        tokens = torch.randint(1, self.marker, (n, M), generator=generator, device=device)  # (n, M)
        # M distinct slots of L + M, uniformly: the M smallest of i.i.d. uniform keys, then in ascending order
        slots = torch.rand(n, L + M, generator=generator, device=device).topk(M, dim=1, largest=False).indices
        slots = slots.sort(dim=1).values
        x = torch.full((n, self.seq_len), BLANK, dtype=torch.long, device=device)
        x.scatter_(1, slots, tokens)
        x[:, L + M:] = self.marker
        return x, tokens

    def _prediction(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The logits at the M marker positions, (B, M, A-1), after checking ``out`` (B, L+2M, A-1) and ``y`` (B, M)."""
        M = self.n_tokens
        if y.ndim != 2 or y.shape[1] != M or out.shape != (y.shape[0], self.seq_len, self.output_size):
            raise ValueError(f"selective_copy: expected out (B, {self.seq_len}, {self.output_size}) and y (B, {M}), "
                             f"got out {tuple(out.shape)} and y {tuple(y.shape)}")
        return out[:, -M:]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over the M marker positions and the batch."""
        from torch.nn import functional as F

        return F.cross_entropy(self._prediction(out, y).flatten(0, 1), y.flatten())

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence (B,): mean ``loss`` over its M marker positions, ``accuracy`` there, ``exact`` (all M)."""
        from torch.nn import functional as F

        logits = self._prediction(out, y)
        ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, M)
        hit = logits.argmax(-1) == y
        return {"loss": ce.mean(1), "accuracy": hit.to(ce.dtype).mean(1), "exact": hit.all(1).to(ce.dtype)}

    @property
    def baseline_loss(self) -> float:
        """Knowing where the markers are but not the tokens: uniform over the A-2 data tokens, ln(A-2)."""
        return math.log(self.vocab - 2)

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of that predictor: 1/(A-2)."""
        return 1 / (self.vocab - 2)
