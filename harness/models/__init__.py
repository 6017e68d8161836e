"""Model registry: a short user-facing name -> the pydantic config class whose `build(task)` makes the nn.Module.

The configs live in `configs.py`, free of torch; the modules (`recurrent.py`, `transformer.py`, `minrnn.py`) load when
built. Models from outside the package (an import path `pkg.module:Class`, or an entry point in the group
`seqbench.models`) are found by `plugins.model_class`.
"""

from .configs import (GRUConfig, LRUConfig, LSTMConfig, MambaConfig, MinGRUConfig, MinLSTMConfig, ModelConfigBase, RNNConfig,
                      TransformerConfig)

MODELS = {
    "rnn": RNNConfig,
    "lstm": LSTMConfig,
    "gru": GRUConfig,
    "transformer": TransformerConfig,
    "mingru": MinGRUConfig,
    "minlstm": MinLSTMConfig,
    "lru": LRUConfig,
    "mamba": MambaConfig,
}

__all__ = ["MODELS", "ModelConfigBase", "RNNConfig", "LSTMConfig", "GRUConfig", "TransformerConfig", "MinGRUConfig",
           "MinLSTMConfig", "LRUConfig", "MambaConfig"]
