"""minGRU and minLSTM in the harness: encoder -> kernels.minrnn.MinRNNStack (any backend) -> linear head.

`model.backend` names what computes the recurrence, as for the other recurrent models: `torch` is the parallel
log-space scan written in torch (kernels.minrnn's "scan"), `reference` the per-step loop (the specification) and
`triton` the fused scan kernel. One parameter layout serves all three, so a checkpoint moves between them unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...kernels import minrnn

from .base import SequenceModel, encoder

#: model.backend -> the kernels.minrnn backend that computes it
KERNEL_BACKENDS = {"torch": "scan", "reference": "reference", "triton": "triton"}


class MinRNNModel(SequenceModel):
    def __init__(self, cfg, task):
        super().__init__()
        kind = cfg.name.removeprefix("min")
        self.encoder = encoder(task, cfg.hidden)
        self.core = minrnn.MinRNNStack(kind, cfg.hidden, cfg.hidden, cfg.layers, backend=KERNEL_BACKENDS[cfg.backend],
                                       mlp_ratio=cfg.mlp_ratio)
        self.head = nn.Linear(cfg.hidden, task.output_size)

    @property
    def kernel_path(self) -> str:
        """`seqbench.kernels.minrnn.MinRNNStack: <path>`: reference-loop, scan-torch, fused-triton or a fallback and
        why (None before the first forward)."""
        path = self.core.kernel_path
        name = f"{type(self.core).__module__}.{type(self.core).__qualname__}"
        return f"{name}: {path}" if path else name

    def body(self, e: torch.Tensor, probes: list[torch.Tensor] | None = None) -> torch.Tensor:
        if probes is None:
            return self.core(e)[0]
        return self.core(e, step_hook=lambda layer, t, h: h + probes[layer][:, t])[0]

    def state_probes(self, e: torch.Tensor) -> list[torch.Tensor]:
        B, L, _ = e.shape
        return [e.new_zeros(B, L, self.core.hidden_size, requires_grad=True) for _ in range(self.core.num_layers)]

    def for_diagnostics(self, dtype: torch.dtype) -> MinRNNModel:
        # the step loop exposes every layer's h_t (a step_hook makes any backend run it; set it so nothing warns)
        diag = copy.deepcopy(self).to(dtype)
        diag.core.backend = "reference"
        return diag

    def group_of(self, name: str) -> str:
        if name.startswith("encoder."):
            return "embedding"
        if name.startswith("head."):
            return "head"
        if ".norm" in name or name.startswith("core.norm"):
            return "norm"
        if ".mlp." in name:
            return "mlp"
        if ".rnn.weight" in name:
            return "input"  # the gate projections: every weight of the recurrence acts on x_t
        return "bias"
