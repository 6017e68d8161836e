"""A leaky-integrator RNN, written as a seqbench plugin.

    h_t = a * h_{t-1} + (1 - a) * tanh(W x_t + U h_{t-1} + b),   a = sigmoid(leak_logit), one leak per unit

The config class below is all seqbench needs: its fields are the `model.<key>=...` overrides, `width_key` names the
key `model.params=N` may choose, and `build(task)` returns an nn.Module mapping a batch to outputs. The module's
forward takes an optional `step_hook`, so seqbench's gradient profile can record ||dL/dh_t||.

Use it from this folder with the import path, or after `pip install .` by its entry point:

    seqbench run model=byo_models.leaky:LeakyRNN model.hidden=32 task=copy
    seqbench run model=leaky model.params=20000 task=adding
"""

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from seqbench import ModelConfig


class LeakyRNN(ModelConfig):
    """The config: validated keys with their defaults and help (shown by `seqbench list`)."""

    width_key: ClassVar[str] = "hidden"

    hidden: int = Field(32, ge=1, description="hidden units")
    leak: float = Field(0.5, gt=0, lt=1, description="initial leak a of every unit (learned afterwards)")

    def build(self, task):
        return LeakyModule(task, self.hidden, self.leak)


class LeakyModule(nn.Module):
    def __init__(self, task, hidden: int, leak: float):
        super().__init__()
        # task.input_kind: "tokens" (x is (B, L) ids < task.input_size) or "features" (x is (B, L, task.input_size))
        if task.input_kind == "tokens":
            self.embed = nn.Embedding(task.input_size, hidden)
        else:
            self.embed = nn.Linear(task.input_size, hidden)
        self.cell = nn.RNNCell(hidden, hidden)
        self.leak_logit = nn.Parameter(torch.full((hidden,), math.log(leak / (1 - leak))))
        self.head = nn.Linear(hidden, task.output_size)

    def forward(self, x, step_hook=None):
        """x (B, L) or (B, L, F) -> (B, L, task.output_size). step_hook(layer, t, h) -> h, when given, sees every
        state h_t (B, H) before anything uses it."""
        e = self.embed(x)
        a = torch.sigmoid(self.leak_logit)
        h = e.new_zeros(e.shape[0], self.cell.hidden_size)
        states = []
        for t in range(e.shape[1]):
            h = a * h + (1 - a) * self.cell(e[:, t], h)
            if step_hook is not None:
                h = step_hook(0, t, h)
            states.append(h)
        return self.head(torch.stack(states, dim=1))

    def group_of(self, name: str) -> str:
        """Optional: parameter groups for the per-group gradient norms (default: the first part of the name)."""
        if name.startswith("cell.weight_hh") or name == "leak_logit":
            return "recurrent"
        return {"embed": "embedding", "head": "head"}.get(name.split(".")[0], "input")
