"""Recurrent-layer kernels. `kernels.reference` holds the plain PyTorch step-loop specifications (RNN, LSTM, GRU);
the top-level RNN/LSTM/GRU are their drop-in fused Triton versions (kernels.fused), which fall back to the reference
loop, with the reason recorded, where triton or the kernels cannot run."""

from . import reference
from .fused import GRU, LSTM, RNN
from .reference import as_reference

__all__ = ["reference", "as_reference", "RNN", "LSTM", "GRU"]
