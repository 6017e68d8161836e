"""Mamba's selective SSM in the harness: encoder -> kernels.mamba.MambaStack (any backend) -> linear head.

`model.backend`: `torch` is the chunked selective scan in torch, `reference` the per-step loop (the specification);
`triton` has no kernel here and runs the torch scan, recording why.
"""

from __future__ import annotations

import torch
from torch import nn

from ...kernels import mamba

from .base import encoder
from .minrnn import MinRNNModel
from .recurrent import RecurrentModel

#: model.backend -> the kernels.mamba backend that computes it
KERNEL_BACKENDS = {"torch": "scan", "reference": "reference", "triton": "triton"}


class MambaModel(MinRNNModel):
    """A model like minGRU's whose core is a MambaStack. Each layer's state is E×N per sequence (inner width ×
    state units): the state probes and the gradient profile's ‖∂L/∂h_t‖ cover all of it."""

    def __init__(self, cfg, task):
        core = mamba.MambaStack(cfg.hidden, cfg.layers, state_size=cfg.state, expand=cfg.expand, d_conv=cfg.d_conv,
                                backend=KERNEL_BACKENDS[cfg.backend])
        RecurrentModel.__init__(self, encoder(task, cfg.hidden), core, nn.Linear(cfg.hidden, task.output_size))

    def state_probes(self, e: torch.Tensor) -> list[torch.Tensor]:
        B, L, _ = e.shape
        return [e.new_zeros(B, L, self.core.state_size, requires_grad=True) for _ in range(self.core.num_layers)]

    def rnn_group(self, name: str) -> str:
        leaf = name.rsplit(".rnn.", 1)[-1]
        if leaf in ("A_log", "D") or leaf.startswith("dt_proj."):
            return "recurrent"  # A and the step size Δ: the recurrence itself (and D, its skip)
        if leaf.startswith("conv."):
            return "conv"
        return "input"  # the projections in, to the selection (B, C, Δ's input) and out
