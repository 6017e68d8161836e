"""Model registry: a short user-facing name -> the pydantic config class whose `build(task)` makes the nn.Module."""

from .recurrent import GRUConfig, LSTMConfig, RNNConfig
from .transformer import TransformerConfig

MODELS = {
    "rnn": RNNConfig,
    "lstm": LSTMConfig,
    "gru": GRUConfig,
    "transformer": TransformerConfig,
}

__all__ = ["MODELS", "RNNConfig", "LSTMConfig", "GRUConfig", "TransformerConfig"]
