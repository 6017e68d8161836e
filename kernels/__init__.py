"""Recurrent-layer kernels. `kernels.reference` holds the plain PyTorch step-loop specifications (RNN, LSTM, GRU);
the top-level names RNN/LSTM/GRU are reserved for the fused Triton modules."""

from . import reference
from .reference import as_reference

__all__ = ["reference", "as_reference"]
