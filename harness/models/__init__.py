"""Model registry: a short user-facing name -> the pydantic config class whose `build(task)` makes the nn.Module.

The configs live in `configs.py`, free of torch; the modules (`recurrent.py`, `transformer.py`) load when built.
"""

from .configs import GRUConfig, LSTMConfig, RNNConfig, TransformerConfig

MODELS = {
    "rnn": RNNConfig,
    "lstm": LSTMConfig,
    "gru": GRUConfig,
    "transformer": TransformerConfig,
}

__all__ = ["MODELS", "RNNConfig", "LSTMConfig", "GRUConfig", "TransformerConfig"]
