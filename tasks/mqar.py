"""Multi-query associative recall (MQAR) of Arora, Eyuboglu et al. 2023 (Zoology): recall D values by their keys."""

from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING

from .base import SolvedByAccuracy, Task, param

if TYPE_CHECKING:  # imported where computed, so that listing the tasks needs no torch
    import torch

#: The target at every position that carries none (PyTorch's default ``ignore_index``, as in Zoology).
IGNORE = -100


@dataclasses.dataclass(frozen=True)
class MQARTask(SolvedByAccuracy, Task):
    """MQAR with vocabulary V = ``vocab``, D = ``num_kv_pairs`` and even length T = ``length``; L = T steps.

    Alphabet: keys 1..K-1 with K = V // 2, values K..V-1 (token 0 and every token appear as filler).
    Input x (B, T): the prefix k1 v1 k2 v2 ... kD vD (2D tokens; D distinct keys, D distinct values, both drawn
    uniformly without replacement), then (T - 2D)/2 query slots at the even offsets 2D, 2D + 2, ..., T - 2. Every key
    is queried once, key j at slot s_j: the D slots are drawn without replacement (in order, Plackett-Luce) with
    p(i) ∝ a·i^(a-1) over slot i = 1..(T - 2D)/2 (a = ``power_a``; a < 1 favours short gaps, a = 1 is uniform), and
    slot i sits at position 2D + 2(i - 1). All other positions after the prefix (the other slots and the odd offsets,
    where the value is *not* repeated) hold filler: with ``random_non_queries`` (the default) tokens drawn uniformly
    from 0..V-1, so a key may reappear as filler, and such a repeat carries no target; without it token 0, which is
    neither a key nor a value (Zoology's ``random_non_queries: False``, the setting of its Figure 2 configs).
    Target y (B, T), LongTensor: at each query position the next-token target is the queried key's value; every
    other position holds ``IGNORE`` (-100). Each sequence has exactly D targets.
    Output (B, T, V): next-token logits over the whole vocabulary, as Zoology's language models predict (only the D
    query positions are scored).

    Loss: cross-entropy over the D·B query positions (non-query positions ignored). Metrics per sequence:
    ``accuracy`` over its D query positions and ``exact`` (all D recalled). Chance: a memoryless predictor knows only
    that the target is a value, uniform over the V - K values, so its best loss is ln(V - K) = ln(V/2) for even V and
    its accuracy 1/(V - K) = 2/V. A model that finds the D values in the sequence but does not bind each to its key
    guesses among them: accuracy 1/D and loss ln D (``no_binding_accuracy``, ``no_binding_loss``), the level a model
    without associative recall reaches. Validation (Zoology's asserts): T even, 4·D <= T, V > T, and D <= K - 1 so
    that D distinct keys exist. Defaults are the paper's (T, D) = (128, 8) at V = 8192.
    """

    name = "mqar"
    input_kind = "tokens"
    loss_label = "eval cross-entropy (nats/query)"
    accuracy_label = "recall accuracy (queries)"
    accuracy_note = "on the queries"

    vocab: int = param(8192, "vocabulary size V: keys 1..V/2-1, values V/2..V-1, filler anywhere in 0..V-1", ge=4)
    num_kv_pairs: int = param(8, "number D of key-value pairs in the prefix, each queried once", ge=1)
    length: int = param(128, "sequence length T (even; needs 4·num_kv_pairs <= T < vocab)", ge=4)
    power_a: float = param(0.01, "power-law exponent a: query slot i drawn with p(i) ∝ a·i^(a-1) (1 = uniform)", gt=0)
    solved_accuracy: float = param(0.99, "eval accuracy at the query positions at which the task counts as solved",
                                   gt=0, le=1)
    random_non_queries: bool = param(True, "filler after the prefix: random tokens from 0..V-1 (true), or token 0 "
                                     "everywhere (false: Zoology's Figure 2 setting)")

    def __post_init__(self) -> None:
        super().__post_init__()
        V, D, T = self.vocab, self.num_kv_pairs, self.length
        if T % 2:
            raise ValueError(f"task.length={T}: MQAR needs an even length (queries sit at even offsets)")
        if 4 * D > T:
            raise ValueError(f"task.num_kv_pairs={D} and task.length={T}: MQAR needs 4·num_kv_pairs <= length")
        if D > V // 2 - 1:
            raise ValueError(f"task.num_kv_pairs={D} and task.vocab={V}: MQAR draws distinct keys from "
                             f"[1, vocab/2), so needs num_kv_pairs <= vocab//2 - 1 = {V // 2 - 1}")
        if V <= T:
            raise ValueError(f"task.vocab={V} and task.length={T}: MQAR needs vocab > length")

    @property
    def input_size(self) -> int:
        return self.vocab

    @property
    def output_size(self) -> int:
        # Next-token prediction over the whole vocabulary, as in Zoology (targets are always values).
        return self.vocab

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def first_value(self) -> int:
        """K = V // 2: keys are 1..K-1, values K..V-1."""
        return self.vocab // 2

    @property
    def num_slots(self) -> int:
        """Number of query slots (T - 2D)/2 after the prefix."""
        return (self.length - 2 * self.num_kv_pairs) // 2

    def slot_probabilities(self, device: torch.device | str = "cpu", dtype=None) -> torch.Tensor:
        """p(i) ∝ a·i^(a-1) for slot i = 1..(T - 2D)/2, normalised; a float tensor (num_slots,)."""
        import torch

        i = torch.arange(1, self.num_slots + 1, device=device, dtype=dtype or torch.float64)
        w = self.power_a * i ** (self.power_a - 1)
        return w / w.sum()

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Returns ``x`` and ``y``, both LongTensors (n, T) on ``device``; ``y`` is ``IGNORE`` except at the queries."""
        import torch

        V, D, T, K = self.vocab, self.num_kv_pairs, self.length, self.first_value
        # D distinct keys and D distinct values per row, in uniformly random order (top-D of i.i.d. uniforms).
        keys = torch.rand(n, K - 1, generator=generator, device=device).topk(D, dim=1).indices + 1  # (n, D)
        values = torch.rand(n, V - K, generator=generator, device=device).topk(D, dim=1).indices + K  # (n, D)
        # Query slot of each key: sequential draws without replacement, weights p(i) (slot index 0 is i = 1).
        p = self.slot_probabilities(device=device, dtype=torch.float32)
        slots = torch.multinomial(p.expand(n, -1).contiguous(), D, replacement=False, generator=generator)  # (n, D)
        where = 2 * D + 2 * slots  # query positions
        if self.random_non_queries:  # filler everywhere after the prefix
            x = torch.randint(0, V, (n, T), generator=generator, device=device)
        else:
            x = torch.zeros(n, T, dtype=torch.long, device=device)
        x[:, 0:2 * D:2] = keys
        x[:, 1:2 * D:2] = values
        x.scatter_(1, where, keys)
        y = torch.full_like(x, IGNORE)
        y.scatter_(1, where, values)
        return x, y

    def _query_logits(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (B, D, V) and targets (B, D) at the D query positions of each row (in position order).

        Gathering first keeps the softmax at B·D rows instead of B·T; the positions are found on the device.
        """
        import torch

        B, L = y.shape
        if out.shape != (B, L, self.output_size) or L != self.seq_len:
            raise ValueError(f"mqar: expected out (B, {self.seq_len}, {self.output_size}) and y (B, {self.seq_len}), "
                             f"got out {tuple(out.shape)} and y {tuple(y.shape)}")
        position = torch.arange(L, device=y.device).expand(B, L)
        where = torch.where(y != IGNORE, position, L).sort(dim=1).values[:, :self.num_kv_pairs]  # (B, D)
        logits = out.gather(1, where.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        return logits, y.gather(1, where)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over the D query positions of every sequence; ``out`` (B, T, V), ``y`` (B, T).

        Equal to ``F.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=-100)`` (Zoology's loss).
        """
        from torch.nn import functional as F

        logits, target = self._query_logits(out, y)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence (B,): ``loss`` and ``accuracy`` over its D query positions, ``exact`` (all D recalled).

        Every sequence has exactly D targets, so the mean of the per-sequence losses equals :meth:`loss`.
        """
        from torch.nn import functional as F

        logits, target = self._query_logits(out, y)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, D)
        hit = logits.argmax(-1) == target
        return {"loss": ce.mean(1), "accuracy": hit.to(ce.dtype).mean(1), "exact": hit.all(1).to(ce.dtype)}

    @property
    def baseline_loss(self) -> float:
        """Memoryless predictor, uniform over the V - V//2 values at the query positions: ln(V/2) for even V."""
        return math.log(self.vocab - self.first_value)

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of a memoryless predictor: 1/(V - V//2), i.e. 2/V for even V."""
        return 1 / (self.vocab - self.first_value)

    @property
    def no_binding_accuracy(self) -> float:
        """Accuracy of a predictor that knows the sequence's D values but not which key each belongs to: 1/D."""
        return 1 / self.num_kv_pairs

    @property
    def no_binding_loss(self) -> float:
        """Its loss, uniform over the D values: ln D."""
        return math.log(self.num_kv_pairs)
