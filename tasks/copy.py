"""The copy (memory) task of Arjovsky, Shah & Bengio 2016: read c symbols, wait T steps, then recall them."""

from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING

from .base import SolvedByAccuracy, Task, param

if TYPE_CHECKING:  # imported where computed, so that listing the tasks needs no torch
    import torch

BLANK = 0


@dataclasses.dataclass(frozen=True)
class CopyTask(SolvedByAccuracy, Task):
    """Copy task with T = ``length``, c = ``copy_len`` and n = ``n_symbols``; every sequence has L = T + 2c steps.

    Alphabet: blank 0, data symbols 1..n, delimiter n + 1.
    Input (B, L): c symbols, T - 1 blanks, the delimiter, c blanks.
    Target (B, L): T + c blanks, then the c symbols, so the first symbol is due one step after the delimiter.

    ``variable_delay`` (the variable-length copy task of Henaff, Szlam & LeCun 2016): each sequence draws its own delay
    d uniformly from 1..T and keeps the length L. Its delimiter is at step d + c - 1 and its c symbols are due at
    d + c .. d + 2c - 1; every other input and target is blank. d = T is the fixed layout, so a model cannot rely on
    counting T steps. The symbols are drawn first, so a batch's symbols are those of the fixed task from the same
    generator. Loss, metrics and baseline are the fixed task's; accuracy counts each sequence's own recall window
    (the positions where the target is a symbol, never a blank), and the baseline predictor sees the delimiter, so
    it still knows the window.
    """

    name = "copy"
    input_kind = "tokens"
    loss_label = "eval cross-entropy (nats/position)"
    accuracy_label = "recall accuracy"
    accuracy_note = "on the recall window"

    length: int = param(100, "delay T: the data symbols are followed by T - 1 blanks and the delimiter (with "
                        "variable_delay, the largest delay)", ge=1)
    n_symbols: int = param(8, "number of data symbols n (alphabet: blank, n symbols, delimiter)", ge=1)
    copy_len: int = param(10, "number of symbols c to memorise and recall", ge=1)
    variable_delay: bool = param(False, "draw each sequence's delay uniformly from 1..T (Henaff et al. 2016); the "
                                 "sequence length stays T + 2c")
    solved_accuracy: float = param(0.99, "eval recall accuracy at which the task counts as solved", gt=0, le=1)

    @property
    def input_size(self) -> int:
        return self.n_symbols + 2

    @property
    def output_size(self) -> int:
        # The delimiter is never a target, so the model predicts blank or a data symbol.
        return self.n_symbols + 1

    @property
    def seq_len(self) -> int:
        return self.length + 2 * self.copy_len

    @property
    def delimiter(self) -> int:
        return self.n_symbols + 1

    @property
    def recall_slice(self) -> slice:
        """Positions (the last ``copy_len``) where the targets are the data symbols (the fixed delay only)."""
        return slice(self.length + self.copy_len, self.seq_len)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Returns ``x`` and ``y``, both LongTensors (n, L) on ``device``."""
        import torch

        T, c = self.length, self.copy_len
        symbols = torch.randint(1, self.n_symbols + 1, (n, c), generator=generator, device=device)  # (n, c)
        x = torch.full((n, self.seq_len), BLANK, dtype=torch.long, device=device)
        x[:, :c] = symbols
        y = torch.full_like(x, BLANK)
        if not self.variable_delay:  # the fixed layout draws nothing more (its batches predate the option)
            x[:, T + c - 1] = self.delimiter
            y[:, self.recall_slice] = symbols
            return x, y
        delay = torch.randint(1, T + 1, (n, 1), generator=generator, device=device)  # d in 1..T
        x.scatter_(1, delay + c - 1, self.delimiter)
        y.scatter_(1, delay + c + torch.arange(c, device=device), symbols)
        return x, y

    def _check(self, out: torch.Tensor, y: torch.Tensor) -> None:
        B, L = y.shape
        if out.shape != (B, L, self.output_size) or L != self.seq_len:
            raise ValueError(f"copy: expected out (B, {self.seq_len}, {self.output_size}) and y (B, {self.seq_len}), "
                             f"got out {tuple(out.shape)} and y {tuple(y.shape)}")

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over all L positions and the batch (the papers' convention); ``out`` (B, L, n + 1)."""
        from torch.nn import functional as F

        self._check(out, y)
        return F.cross_entropy(out.flatten(0, 1), y.flatten())

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence (B,): mean ``loss`` over all positions, recall ``accuracy``, ``exact`` (1.0 if all c recalled).

        Accuracy counts the recall positions only: over the whole sequence a memoryless model would score ~99%.
        """
        from torch.nn import functional as F

        self._check(out, y)
        ce = F.cross_entropy(out.transpose(1, 2), y, reduction="none")  # (B, L)
        if self.variable_delay:  # each sequence's window: where its target is a symbol (exactly c positions)
            window = y != BLANK
            hit = ((out.argmax(-1) == y) & window).sum(1).to(ce.dtype)  # (B,): right recalls
            return {"loss": ce.mean(1), "accuracy": hit / self.copy_len, "exact": (hit == self.copy_len).to(ce.dtype)}
        recall = self.recall_slice
        hit = out[:, recall].argmax(-1) == y[:, recall]  # (B, c)
        return {"loss": ce.mean(1), "accuracy": hit.to(ce.dtype).mean(1), "exact": hit.all(1).to(ce.dtype)}

    @property
    def baseline_loss(self) -> float:
        """Memoryless predictor (blanks, then uniform over the n symbols): c·ln(n) / (T + 2c).

        The same with ``variable_delay``: a predictor that sees the delimiter knows its sequence's recall window but
        not the symbols, so it still pays ln(n) at c of the T + 2c positions and nothing elsewhere.
        """
        return self.copy_len * math.log(self.n_symbols) / self.seq_len

    @property
    def chance_accuracy(self) -> float:
        """Recall accuracy of the memoryless predictor: 1/n."""
        return 1 / self.n_symbols
