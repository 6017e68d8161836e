"""The LRU in the harness: encoder -> kernels.lru.LRUStack (any backend) -> linear head, as minGRU/minLSTM.

`model.backend`: `torch` is the chunked scan in torch, `reference` the per-step loop (the specification); `triton`
has no kernel of its own yet and runs the torch scan, recording why.
"""

from __future__ import annotations

import torch
from torch import nn

from ...kernels import lru

from .base import encoder
from .minrnn import MinRNNModel
from .recurrent import RecurrentModel

#: model.backend -> the kernels.lru backend that computes it
KERNEL_BACKENDS = {"torch": "scan", "reference": "reference", "triton": "triton"}


class LRUModel(MinRNNModel):
    """A model like minGRU's whose core is an LRUStack. Its recurrent state is complex: the state probes and the
    gradient profile's ‖∂L/∂h_t‖ cover its real and imaginary parts (2 · model.state values per layer)."""

    def __init__(self, cfg, task):
        core = lru.LRUStack(cfg.hidden, cfg.state or cfg.hidden, cfg.layers, backend=KERNEL_BACKENDS[cfg.backend],
                            mlp_ratio=cfg.mlp_ratio, r_min=cfg.r_min, r_max=cfg.r_max)
        RecurrentModel.__init__(self, encoder(task, cfg.hidden), core, nn.Linear(cfg.hidden, task.output_size))

    def state_probes(self, e: torch.Tensor) -> list[torch.Tensor]:
        B, L, _ = e.shape
        return [e.new_zeros(B, L, 2 * self.core.state_size, requires_grad=True) for _ in range(self.core.num_layers)]

    def rnn_group(self, name: str) -> str:
        if any(f".rnn.{p}" in name for p in ("nu_log", "theta_log", "gamma_log")):
            return "recurrent"  # λ and γ: the recurrence itself
        return "input"  # B, C and D: the projections in and out of the state
