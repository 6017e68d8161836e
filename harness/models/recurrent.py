"""Vanilla RNN, LSTM and GRU language of the harness: encoder -> stacked recurrent core (any backend) -> linear head."""

from __future__ import annotations

import copy
import typing

import torch
from torch import nn

from ... import kernels
from ...kernels import as_reference, reference

from .base import SequenceModel, encoder

if typing.TYPE_CHECKING:
    from .configs import RecurrentConfig

#: backend name -> {cell name -> torch.nn-compatible module class}
BACKENDS: dict[str, dict[str, type[nn.Module]]] = {
    "torch": {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU},
    "reference": {"rnn": reference.RNN, "lstm": reference.LSTM, "gru": reference.GRU},
    "triton": {"rnn": kernels.RNN, "lstm": kernels.LSTM, "gru": kernels.GRU},
}


def build_recurrent(cfg: RecurrentConfig, task) -> RecurrentModel:
    """encoder -> the configured backend's core -> linear head, with the configured recurrent-weight init."""
    core = BACKENDS[cfg.backend][cfg.name](cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                                           **cfg.core_kwargs())
    model = RecurrentModel(encoder(task, cfg.embed), core, nn.Linear(cfg.hidden, task.output_size))
    if cfg.init == "orthogonal":
        orthogonal_recurrent_(core)
    return model


class RecurrentModel(SequenceModel):
    def __init__(self, enc: nn.Module, core: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.core, self.head = enc, core, head

    @property
    def kernel_path(self) -> str:
        """The core's class, and for fused cores the path the last forward took (fused, or a fallback and why)."""
        name = f"{type(self.core).__module__}.{type(self.core).__qualname__}"
        path = getattr(self.core, "last_path", None)
        return f"{name}: {path}" if path else name

    @property
    def kernel(self) -> dict | None:
        """The core's own record of what its last forward ran (kernels.fused, kernels.minrnn, kernels.reference);
        torch.nn's modules keep none: torch."""
        if hasattr(self.core, "last_kernel"):
            return self.core.last_kernel
        return {"backend": "torch", "fallback": None}

    def body(self, e: torch.Tensor, probes: list[torch.Tensor] | None = None) -> torch.Tensor:
        if probes is None:
            return self.core(e)[0]
        return self.core(e, step_hook=lambda layer, t, h: h + probes[layer][:, t])[0]

    def state_probes(self, e: torch.Tensor) -> list[torch.Tensor]:
        B, L, _ = e.shape
        return [e.new_zeros(B, L, self.core.hidden_size, requires_grad=True) for _ in range(self.core.num_layers)]

    def for_diagnostics(self, dtype: torch.dtype) -> RecurrentModel:
        # The step loop exposes every h_t of every layer; fused/cuDNN cores do not, and share its parameters exactly.
        return RecurrentModel(copy.deepcopy(self.encoder), as_reference(self.core), copy.deepcopy(self.head)).to(dtype)

    def group_of(self, name: str) -> str:
        if name.startswith("encoder."):
            return "embedding"
        if name.startswith("head."):
            return "head"
        return {"weight_ih": "input", "weight_hh": "recurrent"}.get(name.split(".")[-1].rsplit("_", 1)[0], "bias")



@torch.no_grad()
def set_forget_bias_(core: nn.Module, value: float) -> None:
    """LSTM gate order is (i, f, g, o): put `value` in b_ih's forget block and zero b_hh's, so their sum is `value`."""
    H = core.hidden_size
    for layer in range(core.num_layers):
        getattr(core, f"bias_ih_l{layer}")[H:2 * H] = value
        getattr(core, f"bias_hh_l{layer}")[H:2 * H] = 0.0


@torch.no_grad()
def orthogonal_recurrent_(core: nn.Module) -> None:
    """Each gate's (H, H) block of every weight_hh is an independent random orthogonal matrix."""
    H = core.hidden_size
    for layer in range(core.num_layers):
        w = getattr(core, f"weight_hh_l{layer}")
        for g in range(w.shape[0] // H):
            nn.init.orthogonal_(w[g * H:(g + 1) * H])
