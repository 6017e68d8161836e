"""A plugin's nn.Module seen as a SequenceModel: what the trainer, the gradient profile and the records need.

Optional hooks a plugin module may have (see the README, "Bring your own model"):
- `forward(x, step_hook=None)`: when given a step_hook, the module passes each recurrent state through it before using
  it, `h = step_hook(layer, t, h)` with h of shape (B, H) (the convention of seqbench's reference kernels). The
  gradient profile then records ||dL/dh_t|| for every layer; without it, only ||dL/dx_t|| (and the record says so).
- `group_of(name) -> str`: the parameter group (for per-group gradient norms) of a parameter name; default: the name's
  first part (its top-level submodule).
- `kernel_path`: what computed the model, for the record; default: the module's class.

x_t, for the profile, is the output of the module's nn.Embedding for token tasks (when it has exactly one) and the
input features themselves for feature tasks.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .base import SequenceModel


class PluginModel(SequenceModel):
    def __init__(self, inner: nn.Module, name: str, output_size: int):
        super().__init__()
        self.inner, self.name, self.output_size = inner, name, output_size
        forward = inspect.signature(inner.forward).parameters
        self.exposes_states = "step_hook" in forward

    @property
    def kernel_path(self) -> str:
        own = getattr(self.inner, "kernel_path", None)
        return own if isinstance(own, str) else f"{type(self.inner).__module__}.{type(self.inner).__qualname__}"

    @property
    def kernel(self) -> dict | None:
        """A plugin's code is its own: what it records as `kernel`, if it does (see the report for its backend)."""
        own = getattr(self.inner, "kernel", None)
        return own if isinstance(own, dict) else None

    @property
    def profile_note(self) -> str | None:
        if self.exposes_states:
            return None
        return (f"{self.name} exposes no recurrent states (its forward takes no step_hook): the gradient profile "
                f"records dL/dx_t only")

    def forward(self, x: torch.Tensor, step_hook=None) -> torch.Tensor:
        out = self.inner(x) if step_hook is None else self.inner(x, step_hook=step_hook)
        if not torch.is_tensor(out) or out.shape[:2] != x.shape[:2] or out.shape[-1] != self.output_size \
                or out.dim() != 3:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"model {self.name}: its module maps a batch of shape {tuple(x.shape)} to {got}; "
                             f"expected (B, L, task.output_size) = ({x.shape[0]}, {x.shape[1]}, {self.output_size})")
        return out

    def probed_forward(self, x: torch.Tensor):
        probes: dict[str, list[torch.Tensor]] = {"x": [], "h": []}
        states: dict[int, torch.Tensor] = {}

        def add_x_probe(e: torch.Tensor) -> torch.Tensor:
            px = torch.zeros_like(e, requires_grad=True)
            probes["x"].append(px)
            return e + px

        handle = None
        if x.is_floating_point():
            x = add_x_probe(x)
        else:
            embeddings = [m for m in self.inner.modules() if isinstance(m, nn.Embedding)]
            if len(embeddings) == 1:
                handle = embeddings[0].register_forward_hook(lambda module, args, out: add_x_probe(out))

        def hook(layer: int, t: int, h: torch.Tensor) -> torch.Tensor:
            if layer not in states:  # a (B, L, H) probe per layer, made when its first state is seen
                states[layer] = h.new_zeros(h.shape[0], x.shape[1], *h.shape[1:], requires_grad=True)
            return h + states[layer][:, t]

        try:
            out = self(x, step_hook=hook if self.exposes_states else None)
        finally:
            if handle is not None:
                handle.remove()
        probes["h"] = [states[layer] for layer in sorted(states)]
        return out, {k: v for k, v in probes.items() if v}

    def group_of(self, name: str) -> str:
        inner = name.removeprefix("inner.")
        own = getattr(self.inner, "group_of", None)
        return own(inner) if callable(own) else inner.split(".")[0]
