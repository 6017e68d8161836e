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

from .base import encoder
from .recurrent import RecurrentModel

#: model.backend -> the kernels.minrnn backend that computes it
KERNEL_BACKENDS = {"torch": "scan", "reference": "reference", "triton": "triton"}


class MinRNNModel(RecurrentModel):
    """A RecurrentModel whose core is a MinRNNStack: the body, the state probes and the recorded kernel path are the
    recurrent models' (the stack takes a step_hook and names the path its last forward took)."""

    def __init__(self, cfg, task):
        core = minrnn.MinRNNStack(cfg.name.removeprefix("min"), cfg.hidden, cfg.hidden, cfg.layers,
                                  backend=KERNEL_BACKENDS[cfg.backend], mlp_ratio=cfg.mlp_ratio)
        super().__init__(encoder(task, cfg.hidden), core, nn.Linear(cfg.hidden, task.output_size))

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
        return self.rnn_group(name)

    def rnn_group(self, name: str) -> str:
        """The group of a recurrent layer's own parameter."""
        if ".rnn.weight" in name:
            return "input"  # the gate projections: every weight of the recurrence acts on x_t
        return "bias"
