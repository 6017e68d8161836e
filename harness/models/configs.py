"""The models' configurations (the `model.*` keys): pydantic classes whose `build(task)` makes the nn.Module.

Kept apart from the modules and free of torch, so that validating a config, `seqbench list` and `--help` never import
torch; `build` imports the module code when a run needs it.
"""

from __future__ import annotations

import math

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Backend = Literal["torch", "reference", "triton"]
#: the backends a recurrent model can run on (see recurrent.BACKENDS for the classes behind each name)
BACKEND_NAMES: tuple[str, ...] = Backend.__args__
#: values of a training step's activations per gradient-profile position and unit: zero probes on x_t and every h_t,
#: and their gradients (see harness/memory.py)
PROBES = 4


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
    #: reports: where the model's rows go among the built-in models (lower first); models from outside the package,
    #: None here, come after them
    report_order: ClassVar[int | None] = None
    #: reports: the model's colour and marker, an index into the report's palette of base models; None takes a spare
    #: one by a hash of its label (see report/figures.py)
    palette_slot: ClassVar[int | None] = None

    def width_step(self) -> int:
        return 1

    def build(self, task):
        raise NotImplementedError(f"{type(self).__name__} defines no build(task)")

    # --- what harness/memory.py and `model.params` need to know of a model -----------------------------------------
    def param_count(self, task) -> int | None:
        """Trainable parameters that `build(task)` makes, in closed form; None (the default) has them counted on a
        model built on the meta device."""
        return None

    def activation_values(self, device: str) -> tuple[float, float, float] | None:
        """Values kept per (sequence, position, unit of width) by a training step, an evaluation chunk (no grad) and
        the gradient profile, on `device`; None (the default): not estimated (only the outputs are counted)."""
        return None

    def profile_extra_bytes(self, batch: int, seq_len: int, device: str, value_bytes: int) -> int:
        """Bytes the gradient profile keeps beyond `activation_values` (default none)."""
        return 0

    def width_readings(self) -> list:
        """The ways `model.params` may read this config when it resizes it (see `set_width`): one, unless a recorded
        config cannot tell how a key related to the width (then each is tried)."""
        return [None]

    def set_width(self, width: int, reading=None) -> None:
        """Set the width key (`width_key`) to `width`, under one of `width_readings`."""
        setattr(self, self.width_key, width)


#: the name a model from outside the package subclasses (`from seqbench import ModelConfig`)
ModelConfig = ModelConfigBase


class RecurrentConfig(ModelConfigBase):
    width_key: ClassVar[str] = "hidden"
    #: gate blocks of the cell: the rows of W_ih and W_hh are this many times the hidden size
    gates: ClassVar[int]
    #: values kept per (sequence, position, hidden unit) by a training step, by backend: (per layer, once), the latter
    #: for the encoder output, the head's input and the backward pass's transients. Measured as the peak RSS growth of
    #: short CPU runs under torch 2.13 (oneDNN) and checked, within a factor of 2, by tests/harness/test_memory.py.
    #: `triton` runs the reference loop on a CPU; on a GPU its fused kernels keep less (the gates and states), so the
    #: reference's figures are an upper bound there.
    activations: ClassVar[dict[str, tuple[float, float]]]

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

    def param_count(self, task) -> int:
        H, G = self.hidden, self.gates
        core = sum(G * H * ((self.embed if layer == 0 else H) + H) + 2 * G * H for layer in range(self.layers))
        return _encoder_count(task, self.embed) + core + H * task.output_size + task.output_size

    def activation_values(self, device: str) -> tuple[float, float, float]:
        per_layer, once = self.activations["reference" if self.backend == "triton" else self.backend]
        ref_layer, ref_once = self.activations["reference"]  # the profile runs the reference loop
        return once + per_layer * self.layers, 3 + self.layers, ref_once + ref_layer * self.layers + PROBES

    def width_readings(self) -> list:
        """`embed` follows `hidden` unless given. A reading is the fixed embed, or None where it follows; a recorded
        config (which always holds embed) with embed equal to hidden could have been either."""
        given = self.hidden if "hidden" in self.model_fields_set else None
        fixed = self._embed_given and self.embed != given
        if given is None or fixed:
            return [self.embed if fixed else None]
        return [None, self.embed]

    def set_width(self, width: int, reading=None) -> None:
        self.hidden = width
        self.embed = width if reading is None else reading


class RNNConfig(RecurrentConfig):
    name: Literal["rnn"] = "rnn"
    gates = 1
    activations = {"torch": (2.5, 3.5), "reference": (4.5, 1.2)}
    report_order, palette_slot = 0, 0
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="RNN activation")

    def core_kwargs(self) -> dict:
        return {"nonlinearity": self.nonlinearity}


class LSTMConfig(RecurrentConfig):
    name: Literal["lstm"] = "lstm"
    gates = 4
    activations = {"torch": (6.7, 11.8), "reference": (11.5, 1.5)}
    report_order, palette_slot = 1, 1
    forget_bias: float | None = Field(1.0, description="initial forget-gate bias (b_ih + b_hh); null = torch's init")

    def build(self, task):
        from .recurrent import set_forget_bias_

        model = super().build(task)
        if self.forget_bias is not None:
            set_forget_bias_(model.core, self.forget_bias)
        return model


class GRUConfig(RecurrentConfig):
    name: Literal["gru"] = "gru"
    gates = 3
    activations = {"torch": (8.3, 4.6), "reference": (15.8, 3.4)}
    report_order, palette_slot = 2, 2


class TransformerConfig(ModelConfigBase):
    name: Literal["transformer"] = "transformer"
    d_model: int = Field(64, ge=1, description="residual width")
    heads: int = Field(4, ge=1, description="attention heads (must divide d_model)")
    layers: int = Field(2, ge=1, description="decoder blocks")
    ff_mult: int = Field(4, ge=1, description="MLP width as a multiple of d_model")
    pos_encoding: Literal["sinusoidal", "learned", "rope", "none"] = Field(
        "sinusoidal", description="positional encoding: sinusoidal or learned (added to the input), rope (rotary, "
        "on the queries and keys of every layer: Su et al. 2021), none (causal attention alone)")
    max_len: int | None = Field(None, ge=1, description="learned encoding: the positions it has (sequences longer "
                                "than this are refused); default: the training sequence length")
    params: int | None = Field(None, ge=1, description="parameter budget: choose model.d_model (a multiple of "
                               "model.heads) so that the trainable parameter count is as close to this as it can be")

    width_key: ClassVar[str] = "d_model"
    report_order, palette_slot = 7, 3

    def width_step(self) -> int:
        return self.heads

    def param_count(self, task) -> int:
        d, ff = self.d_model, self.ff_mult * self.d_model
        block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff + ff * d + d)
        pos = (self.max_len or task.seq_len) * d if self.pos_encoding == "learned" else 0
        return _encoder_count(task, d) + pos + self.layers * block + 2 * d + d * task.output_size + task.output_size

    def activation_values(self, device: str) -> tuple[float, float, float]:
        """Per layer: LayerNorms, q/k/v, the attention output, the projection and the MLP's two ff-wide tensors (8 +
        2 ff_mult); once: the encoder output, the final LayerNorm and the head's input (measured 16.25 per layer and
        4.9 once at ff_mult 4; evaluation 14.4 at 2 layers). Rotary encoding keeps 4 more per layer: the rotated queries
        and keys and the products it rotates them with (measured 4.05 at d_model 48, 3 layers, T = 500)."""
        rope = 4 if self.pos_encoding == "rope" else 0
        train = 5.0 + (8 + 2 * self.ff_mult + rope) * self.layers
        return train, 4 + 2 * self.ff_mult + self.layers, train + PROBES

    def profile_extra_bytes(self, batch: int, seq_len: int, device: str, value_bytes: int) -> int:
        """A float64 profile on CUDA: scaled_dot_product_attention falls back to its math kernel, which keeps the
        (batch, heads, L, L) scores per layer (and two more)."""
        if device == "cuda" and value_bytes == 8:
            return (self.layers + 2) * batch * self.heads * seq_len * seq_len * 8
        return 0

    @field_validator("pos_encoding", mode="before")
    @classmethod
    def _none_is_a_name(cls, value):
        """`model.pos_encoding=none` on a command line or in YAML reads as null: it names the `none` encoding."""
        return "none" if value is None else value

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"model.heads={self.heads} must divide model.d_model={self.d_model}")
        if self.pos_encoding == "rope" and (self.d_model // self.heads) % 2:
            raise ValueError(f"model.pos_encoding=rope rotates pairs of each head's dimensions: model.d_model="
                             f"{self.d_model} / model.heads={self.heads} = {self.d_model // self.heads} must be even")
        return self

    def build(self, task):
        from .transformer import Transformer

        return Transformer(self, task)


class MinRNNConfig(ModelConfigBase):
    """minGRU / minLSTM (Feng et al. 2024): gates that depend on the input only, so a layer is a linear recurrence that
    a parallel scan computes. Stacked as pre-norm residual blocks, each with an MLP (see kernels.minrnn.MinRNNStack)."""

    width_key: ClassVar[str] = "hidden"
    #: the gate projection's outputs per hidden unit (minGRU: z and h~; minLSTM: f, i and h~)
    gates: ClassVar[int]
    #: as RecurrentConfig.activations: blocks with their LayerNorms, the scan's log-space intermediates and the MLP at
    #: mlp_ratio 4; `triton` on a CPU runs the torch scan
    activations: ClassVar[dict[str, tuple[float, float]]]

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

    def param_count(self, task) -> int:
        """Per block: two LayerNorms, the gate projection, the MLP; then a final LayerNorm and the head."""
        H, G, F = self.hidden, self.gates, self.mlp_ratio * self.hidden
        block = 4 * H + G * H * H + G * H + (H * F + F + F * H + H)
        return _encoder_count(task, H) + self.layers * block + 2 * H + H * task.output_size + task.output_size

    def activation_values(self, device: str) -> tuple[float, float, float]:
        per_layer, once = self.activations["torch" if self.backend == "triton" else self.backend]
        ref_layer, ref_once = self.activations["reference"]
        return once + per_layer * self.layers, 3 + self.layers, ref_once + ref_layer * self.layers + PROBES


class MinGRUConfig(MinRNNConfig):
    name: Literal["mingru"] = "mingru"
    gates = 2
    activations = {"torch": (31.7, 14.1), "reference": (24.1, 6.9)}
    report_order, palette_slot = 3, 4


class MinLSTMConfig(MinRNNConfig):
    name: Literal["minlstm"] = "minlstm"
    gates = 3
    activations = {"torch": (35.7, 14.0), "reference": (26.7, 11.4)}
    report_order, palette_slot = 4, 5


class LRUConfig(ModelConfigBase):
    """The Linear Recurrent Unit (Orvieto et al. 2023): a linear time-invariant recurrence with a complex diagonal
    state matrix, in minGRU's residual blocks (see kernels.lru). The LTI baseline of the selective-copy comparison."""

    name: Literal["lru"] = "lru"
    width_key: ClassVar[str] = "hidden"
    report_order, palette_slot = 5, 6
    #: values kept per (sequence, position, unit of width) by a training step, measured as RecurrentConfig's at
    #: state = hidden (H = 64, 1 and 2 layers, T = 300); a larger state keeps more; `triton` runs the torch scan
    activations: ClassVar[dict[str, tuple[float, float]]] = {"torch": (30.5, 11.8), "reference": (40.2, 1.5)}
    #: of each per-layer figure, the values that scale with the state (N/H) rather than the width: all but the ~12 of
    #: the LayerNorms, the MLP and the residual
    state_share: ClassVar[dict[str, float]] = {"torch": 18.5, "reference": 28.2}

    hidden: int = Field(64, ge=1, description="width of the residual stream (each LRU's input and output)")
    state: int | None = Field(None, ge=1, description="complex state units N of each LRU layer; default: hidden")
    layers: int = Field(1, ge=1, description="stacked residual blocks (LRU + MLP)")
    backend: Backend = Field("torch", description="torch (chunked scan in torch) | reference (per-step loop) | triton "
                             "(no kernel yet: runs the torch scan, recorded)")
    mlp_ratio: int = Field(4, ge=1, description="MLP width of each block as a multiple of hidden")
    r_min: float = Field(0.9, ge=0, lt=1, description="initial |λ|: the inner radius of the ring it is drawn on")
    r_max: float = Field(0.999, gt=0, le=1, description="initial |λ|: the outer radius of the ring it is drawn on")
    params: int | None = Field(None, ge=1, description="parameter budget: choose model.hidden (and the state with "
                               "it, unless model.state is given) so that the trainable parameter count is as close "
                               "to this as it can be")

    @model_validator(mode="after")
    def _ring(self):
        if self.r_min >= self.r_max:
            raise ValueError(f"model.r_min={self.r_min} must be below model.r_max={self.r_max}")
        return self

    def build(self, task):
        from .lru import LRUModel

        return LRUModel(self, task)

    def layer_params(self) -> int:
        """One LRU layer's: ν, θ, γ (3N); B and C (2NH each, real and imaginary); D (H)."""
        H, N = self.hidden, self.state or self.hidden
        return 3 * N + 4 * N * H + H

    def param_count(self, task) -> int:
        """Per block: two LayerNorms, the LRU layer, the MLP; then a final LayerNorm and the head."""
        H, F = self.hidden, self.mlp_ratio * self.hidden
        block = 4 * H + self.layer_params() + (H * F + F + F * H + H)
        return _encoder_count(task, H) + self.layers * block + 2 * H + H * task.output_size + task.output_size

    def activation_values(self, device: str) -> tuple[float, float, float]:
        ratio = (self.state or self.hidden) / self.hidden

        def per_layer(backend: str) -> tuple[float, float]:
            value, once = self.activations[backend]
            return value + self.state_share[backend] * (ratio - 1), once

        train_layer, once = per_layer("torch" if self.backend == "triton" else self.backend)
        ref_layer, ref_once = per_layer("reference")  # the gradient profile runs the reference loop
        return once + train_layer * self.layers, 3 + self.layers, ref_once + ref_layer * self.layers + PROBES


class MambaConfig(ModelConfigBase):
    """A selective state-space model: Mamba's S6 layer (Gu & Dao 2023) in pure PyTorch (see kernels.mamba), each in a
    pre-norm residual block as the Mamba architecture stacks them. The selective baseline of the selective-copy
    comparison."""

    name: Literal["mamba"] = "mamba"
    width_key: ClassVar[str] = "hidden"
    report_order, palette_slot = 6, 7
    #: as LRUConfig.activations, per unit of the residual width at the defaults (state 16, expand 2), measured
    activations: ClassVar[dict[str, tuple[float, float]]] = {"torch": (211.5, 192.3), "reference": (160.5, 245.6)}

    hidden: int = Field(64, ge=1, description="width of the residual stream (d_model)")
    state: int = Field(16, ge=1, description="state units N per inner channel (d_state)")
    expand: int = Field(2, ge=1, description="inner width as a multiple of hidden")
    d_conv: int = Field(4, ge=1, description="width of the causal depthwise convolution")
    layers: int = Field(1, ge=1, description="stacked residual blocks")
    backend: Backend = Field("torch", description="torch (chunked selective scan in torch) | reference (per-step "
                             "loop) | triton (no kernel here: runs the torch scan, recorded)")
    params: int | None = Field(None, ge=1, description="parameter budget: choose model.hidden so that the trainable "
                               "parameter count is as close to this as it can be")

    def build(self, task):
        from .mamba import MambaModel

        return MambaModel(self, task)

    def layer_params(self) -> int:
        """One S6 layer's: W_in (H → 2E), the convolution (E·d_conv + E), W_x (E → R + 2N), W_dt (R → E, with
        bias), A_log (E·N), D (E), W_out (E → H). R = ceil(H/16)."""
        H, N, E = self.hidden, self.state, self.expand * self.hidden
        R = math.ceil(H / 16)
        return 2 * E * H + (E * self.d_conv + E) + E * (R + 2 * N) + (R * E + E) + E * N + E + E * H

    def projection_params(self) -> int:
        """Of those, the matrices every time step multiplies by (W_in, W_x, W_dt, W_out): the least FLOPs of a step."""
        H, N, E = self.hidden, self.state, self.expand * self.hidden
        R = math.ceil(H / 16)
        return 2 * E * H + E * (R + 2 * N) + R * E + E * H

    def param_count(self, task) -> int:
        """Per block: a LayerNorm and the S6 layer; then a final LayerNorm and the head."""
        H = self.hidden
        block = 2 * H + self.layer_params()
        return _encoder_count(task, H) + self.layers * block + 2 * H + H * task.output_size + task.output_size

    def activation_values(self, device: str) -> tuple[float, float, float]:
        per_layer, once = self.activations["torch" if self.backend == "triton" else self.backend]
        ref_layer, ref_once = self.activations["reference"]
        scale = self.state * self.expand / 32  # the state's values per unit of width, against the defaults'
        return (once + per_layer * scale * self.layers, 3 + self.layers,
                ref_once + ref_layer * scale * self.layers + PROBES)


def _encoder_count(task, width: int) -> int:
    """The input encoder's parameters: an embedding of token inputs, or a linear layer (with bias) of real ones."""
    return task.input_size * width + (0 if task.input_kind == "tokens" else width)


#: the layers `seqbench bench` times besides the gated cells: the LRU's and Mamba's, at state = hidden and at
#: Mamba's defaults (state 16, expand 2)
SCAN_CELLS = ("lru", "mamba")
#: gate blocks per recurrent cell, and per minGRU/minLSTM gate projection (read by bench and the memory check)
GATES = {cls.model_fields["name"].default: cls.gates for cls in (RNNConfig, LSTMConfig, GRUConfig)}
MIN_GATES = {cls.model_fields["name"].default: cls.gates for cls in (MinGRUConfig, MinLSTMConfig)}
