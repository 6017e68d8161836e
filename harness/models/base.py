"""What every model shares: an input encoder (embedding or linear), a body, a linear head, and diagnostics hooks."""

from __future__ import annotations

import copy

import torch
from torch import nn



def encoder(task, width: int) -> nn.Module:
    """Embedding for token tasks, a linear map for feature tasks: (B, L[, F]) -> (B, L, width)."""
    if task.input_kind == "tokens":
        return nn.Embedding(task.input_size, width)
    return nn.Linear(task.input_size, width)


class SequenceModel(nn.Module):
    """Base class: subclasses set `self.encoder`, `self.head` and implement `body` and `group_of`."""

    #: which code computes the recurrence (or attention): recorded with every run
    kernel_path = "torch"

    @property
    def kernel(self) -> dict | None:
        """What computed the model, structured, for the record: {"backend": torch, reference or triton, "fallback":
        why the configured backend did not run, or None}; None where it is not known yet (a fused module before its
        first forward)."""
        return {"backend": "torch", "fallback": None}
    #: what the gradient profile cannot record for this model, and why (None: it records all there is)
    profile_note: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L) token ids or (B, L, F) features -> (B, L, output_size)."""
        return self.head(self.body(self.encoder(x)))

    def body(self, e: torch.Tensor, probes: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L, E) -> (B, L, H); adds probes[l][:, t] to layer l's state at step t when given."""
        raise NotImplementedError

    def probed_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Forward with zero probes added to the embedded input x_t and to every hidden state h_t of every layer.

        After `loss.backward()`, `probes["x"][0].grad[:, t]` is dL/dx_t and `probes["h"][l].grad[:, t]` is the total
        gradient dL/dh_t of layer l (through all later steps and layers), because adding a zero changes nothing forward.
        """
        e = self.encoder(x)
        px = torch.zeros_like(e, requires_grad=True)
        ph = self.state_probes(e)
        out = self.head(self.body(e + px, ph))
        return out, {"x": [px], "h": ph}

    def state_probes(self, e: torch.Tensor) -> list[torch.Tensor]:
        """One zero (B, L, H) tensor requiring grad per recurrent layer; none for models without a recurrent state."""
        return []

    def for_diagnostics(self, dtype: torch.dtype) -> SequenceModel:
        """A copy in `dtype` whose `probed_forward` works (recurrent models swap in the reference step loop)."""
        return copy.deepcopy(self).to(dtype)

    def group_of(self, name: str) -> str:
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role (embedding, input, recurrent, bias, head, ...), for per-group gradient norms."""
        groups: dict[str, list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            groups.setdefault(self.group_of(name), []).append(p)
        return groups
