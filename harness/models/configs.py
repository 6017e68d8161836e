"""The models' configurations (the `model.*` keys): pydantic classes whose `build(task)` makes the nn.Module.

Kept apart from the modules and free of torch, so that validating a config, `seqbench list` and `--help` never import
torch; `build` imports the module code when a run needs it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

Backend = Literal["torch", "reference", "triton"]
#: the backends a recurrent model can run on (see recurrent.BACKENDS for the classes behind each name)
BACKEND_NAMES: tuple[str, ...] = Backend.__args__
#: gate blocks per recurrent cell: the rows of W_ih and W_hh are this many times the hidden size
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
#: minGRU / minLSTM: the gate projection's outputs per hidden unit (minGRU: z and h~; minLSTM: f, i and h~)
MIN_GATES = {"mingru": 2, "minlstm": 3}


class ModelConfigBase(BaseModel):
    """What every model's config is: its own validated keys (`model.<key>=...`) and `build(task) -> nn.Module`.

    Models from outside the package (import paths, the `seqbench.models` entry points: see `plugins.py` and the
    README) subclass this too. `width_key` names the key `model.params` chooses (None: the model has no width knob and
    refuses a budget); `width_step()` is the step that key moves in (the Transformer's d_model moves in steps of heads).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    params: int | None = Field(None, ge=1, description="parameter budget: choose the model's width so that the "
                               "trainable parameter count is as close to this as it can be (models with a width knob)")

    width_key: ClassVar[str | None] = None

    def width_step(self) -> int:
        return 1

    def build(self, task):
        raise NotImplementedError(f"{type(self).__name__} defines no build(task)")


#: the name a model from outside the package subclasses (`from seqbench import ModelConfig`)
ModelConfig = ModelConfigBase


class RecurrentConfig(ModelConfigBase):
    width_key: ClassVar[str] = "hidden"

    hidden: int = Field(64, ge=1, description="hidden units per layer")
    layers: int = Field(1, ge=1, description="stacked recurrent layers")
    backend: Backend = Field("torch", description="torch (cuDNN/oneDNN) | reference (per-step loop) | triton (fused)")
    embed: int | None = Field(None, ge=1, description="width of the input embedding/linear input; default: hidden")
    init: Literal["default", "orthogonal"] = Field("default", description="recurrent-weight init")
    params: int | None = Field(None, ge=1, description="parameter budget: choose model.hidden (and model.embed, "
                               "unless given) so that the trainable parameter count is as close to this as it can be")

    #: whether `embed` was given (in a recorded config it always is) or follows `hidden` (read by `model.params`)
    _embed_given: bool = PrivateAttr(True)

    @model_validator(mode="after")
    def _resolve(self):
        self._embed_given = self.embed is not None
        if self.embed is None:
            self.embed = self.hidden
        return self

    def core_kwargs(self) -> dict:
        return {}

    def build(self, task):
        from .recurrent import build_recurrent

        return build_recurrent(self, task)


class RNNConfig(RecurrentConfig):
    name: Literal["rnn"] = "rnn"
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="RNN activation")

    def core_kwargs(self) -> dict:
        return {"nonlinearity": self.nonlinearity}


class LSTMConfig(RecurrentConfig):
    name: Literal["lstm"] = "lstm"
    forget_bias: float | None = Field(1.0, description="initial forget-gate bias (b_ih + b_hh); null = torch's init")

    def build(self, task):
        from .recurrent import set_forget_bias_

        model = super().build(task)
        if self.forget_bias is not None:
            set_forget_bias_(model.core, self.forget_bias)
        return model


class GRUConfig(RecurrentConfig):
    name: Literal["gru"] = "gru"


class TransformerConfig(ModelConfigBase):
    name: Literal["transformer"] = "transformer"
    d_model: int = Field(64, ge=1, description="residual width")
    heads: int = Field(4, ge=1, description="attention heads (must divide d_model)")
    layers: int = Field(2, ge=1, description="decoder blocks")
    ff_mult: int = Field(4, ge=1, description="MLP width as a multiple of d_model")
    pos_encoding: Literal["sinusoidal", "learned"] = Field("sinusoidal", description="positional encoding")
    max_len: int | None = Field(None, ge=1, description="learned encoding: the positions it has (sequences longer "
                                "than this are refused); default: the training sequence length")
    params: int | None = Field(None, ge=1, description="parameter budget: choose model.d_model (a multiple of "
                               "model.heads) so that the trainable parameter count is as close to this as it can be")

    width_key: ClassVar[str] = "d_model"

    def width_step(self) -> int:
        return self.heads

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"model.heads={self.heads} must divide model.d_model={self.d_model}")
        return self

    def build(self, task):
        from .transformer import Transformer

        return Transformer(self, task)


class MinRNNConfig(ModelConfigBase):
    """minGRU / minLSTM (Feng et al. 2024): gates that depend on the input only, so a layer is a linear recurrence that
    a parallel scan computes. Stacked as pre-norm residual blocks, each with an MLP (see kernels.minrnn.MinRNNStack)."""

    width_key: ClassVar[str] = "hidden"

    hidden: int = Field(64, ge=1, description="hidden units per layer (also the width of the residual stream)")
    layers: int = Field(1, ge=1, description="stacked residual blocks (minRNN layer + MLP)")
    backend: Backend = Field("torch", description="torch (parallel log-space scan in torch) | reference (per-step "
                             "loop) | triton (fused scan kernel)")
    mlp_ratio: int = Field(4, ge=1, description="MLP width of each block as a multiple of hidden")
    params: int | None = Field(None, ge=1, description="parameter budget: choose model.hidden so that the trainable "
                               "parameter count is as close to this as it can be")

    def build(self, task):
        from .minrnn import MinRNNModel

        return MinRNNModel(self, task)


class MinGRUConfig(MinRNNConfig):
    name: Literal["mingru"] = "mingru"


class MinLSTMConfig(MinRNNConfig):
    name: Literal["minlstm"] = "minlstm"
