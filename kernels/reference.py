"""Specification implementations of torch.nn.RNN, LSTM and GRU as plain per-step PyTorch loops.

Fused kernels are tested against these, and these against torch.nn. Each module is drop-in for its torch.nn twin
(constructor, parameter names, shapes and init, forward) and adds `step_hook`, which sees every new hidden state so the
harness can add zero probes and read the total gradient dL/dh_t. Unidirectional only: no dropout, no projection.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """Elman step h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh). x (B, I), h (B, H) -> h' (B, H)."""
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """LSTM step, gates in torch's order (i, f, g, o). x (B, I), h and c (B, H) -> (h', c'), each (B, H)."""
    i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """GRU step, gates in torch's order (r, z, n). x (B, I), h (B, H) -> h' (B, H).

    As in torch.nn.GRU (and cuDNN), r scales (W_hn h + b_hn) rather than h before the matmul.
    """
    x_r, x_z, x_n = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


class _Recurrent(nn.Module):
    """Shared constructor, parameters and layer/time loop. Subclasses set `gates`, `num_states` and `_step`."""

    gates = 1  # rows of weight_ih per hidden unit
    num_states = 1  # h, or (h, c) for the LSTM
    last_kernel = {"backend": "reference", "fallback": None}  # what computes it (kernels.fused records its own)

    def __init__(self, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if bidirectional:
            raise ValueError("bidirectional=True is not supported by the reference modules (unidirectional only)")
        if dropout != 0:
            raise ValueError(f"dropout={dropout!r} is not supported by the reference modules; use dropout=0")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = 0.0, False, 0  # as on every torch.nn RNNBase
        rows = self.gates * hidden_size
        for k in range(num_layers):
            # Same names, shapes and registration order as torch.nn, so the same seed draws the same initial weights.
            shapes = {f"weight_ih_l{k}": (rows, input_size if k == 0 else hidden_size),
                      f"weight_hh_l{k}": (rows, hidden_size)}
            if bias:
                shapes.update({f"bias_ih_l{k}": (rows,), f"bias_hh_l{k}": (rows,)})
            for name, shape in shapes.items():
                self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        """torch.nn's init: uniform(-1/sqrt(H), 1/sqrt(H)) on every parameter."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}")

    def forward(self, input, hx=None, *, step_hook=None):
        """Run every layer over the whole sequence, exactly like the torch.nn module.

        input: (L, B, I), or (B, L, I) if batch_first, or unbatched (L, I), which runs as B = 1.
        hx: initial state (num_layers, B, H) — a tuple (h0, c0) for the LSTM — or (num_layers, H) if unbatched;
        zeros if None.
        step_hook(layer, t, h) -> h: applied to each new hidden state h_t (B, H) of each layer before anything
        (next step, next layer, output) uses it. For the LSTM it sees h only, never c.
        Returns (output, h_n), or (output, (h_n, c_n)) for the LSTM: output in input's layout with last dim H,
        final states (num_layers, B, H), or (num_layers, H) if unbatched.
        """
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"input must be (L, B, {self.input_size}) ((B, L, {self.input_size}) if batch_first) "
                             f"or unbatched (L, {self.input_size}), got {tuple(input.shape)}")
        batched = input.dim() == 3
        x = input.unsqueeze(1) if not batched else input.transpose(0, 1) if self.batch_first else input  # (L, B, I)
        if x.shape[0] == 0:
            raise ValueError(f"input must have at least one time step, got shape {tuple(input.shape)}")
        out, states = self._layers(x, self._initial_states(hx, x, batched), step_hook)
        if not batched:
            out, states = out.squeeze(1), tuple(s.squeeze(1) for s in states)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (states if self.num_states == 2 else states[0])

    def _initial_states(self, hx, x, batched):
        """Initial states as a tuple of (num_layers, B, H) tensors: zeros, or hx after checking its shape."""
        shape = (self.num_layers, x.shape[1], self.hidden_size)
        if hx is None:
            return (x.new_zeros(shape),) * self.num_states
        states = (hx,) if torch.is_tensor(hx) else tuple(hx)
        want = shape if batched else (self.num_layers, self.hidden_size)
        if len(states) != self.num_states or any(not torch.is_tensor(s) or tuple(s.shape) != want for s in states):
            what = "a tuple (h0, c0) of tensors" if self.num_states == 2 else "a tensor"
            got = [tuple(s.shape) if torch.is_tensor(s) else type(s).__name__ for s in states]
            raise ValueError(f"hx must be {what} of shape {want}, got {got}")
        return states if batched else tuple(s.unsqueeze(1) for s in states)

    def _layers(self, x, states, step_hook):
        """The layer/time loop. x (L, B, I), states: tuple of (num_layers, B, H) -> output (L, B, H), final states."""
        finals = []
        for k in range(self.num_layers):
            weights = self._weights(k)
            steps = run_layer(lambda x_t, state: self._step(x_t, state, weights), x, tuple(s[k] for s in states),
                              step_hook, k)
            x = steps[0]  # (L, B, H): this layer's output is the next layer's input
            finals.append(tuple(s[-1] for s in steps))
        return x, tuple(torch.stack(s) for s in zip(*finals))

    def _weights(self, k):
        """(w_ih, w_hh, b_ih, b_hh) of layer k; biases are None when bias=False."""
        names = (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}")
        return tuple(getattr(self, n, None) for n in names)


def run_layer(step, x, state, step_hook=None, layer=0):
    """One layer's time loop: step(x_t, state) -> new state (h first), x (L, B, I), state a tuple of (B, H) tensors.
    Returns every step's states, a tuple of (L, B, H) tensors: the first (every h_t) is the layer's output, the last
    rows are the final states. step_hook(layer, t, h) -> h replaces each new h_t before anything uses it."""
    steps = []
    for t in range(x.shape[0]):
        h, *rest = step(x[t], state)
        if step_hook is not None:
            h = _checked_hook(step_hook, layer, t, h)
        state = (h, *rest)
        steps.append(state)
    return tuple(torch.stack(s) for s in zip(*steps))


def _checked_hook(step_hook, layer, t, h):
    """step_hook(layer, t, h), which must return a tensor shaped like h."""
    new = step_hook(layer, t, h)
    if not torch.is_tensor(new) or new.shape != h.shape:
        got = tuple(new.shape) if torch.is_tensor(new) else type(new).__name__
        raise ValueError(f"step_hook must return a tensor of shape {tuple(h.shape)}, got {got}")
    return new


class RNN(_Recurrent):
    """Reference torch.nn.RNN (Elman network, tanh or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self):
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"

    def _step(self, x, state, weights):
        return (rnn_cell(x, *state, *weights, nonlinearity=self.nonlinearity),)


class LSTM(_Recurrent):
    """Reference torch.nn.LSTM (no projection: proj_size must be 0)."""

    gates, num_states = 4, 2

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        if proj_size != 0:
            raise ValueError(f"proj_size={proj_size!r} is not supported by the reference LSTM; use proj_size=0")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype)

    def _step(self, x, state, weights):
        return lstm_cell(x, *state, *weights)


class GRU(_Recurrent):
    """Reference torch.nn.GRU."""

    gates = 3

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype)

    def _step(self, x, state, weights):
        return (gru_cell(x, *state, *weights),)


# Checked in order; torch.nn.RNN, LSTM and GRU are siblings, so at most one torch class matches.
_REFERENCE_OF = ((nn.RNN, RNN), (nn.LSTM, LSTM), (nn.GRU, GRU), (RNN, RNN), (LSTM, LSTM), (GRU, GRU))


def as_reference(module):
    """A reference module equivalent to `module` (torch.nn.RNN/LSTM/GRU or a reference module).

    Same constructor config, a copy of the weights (not shared), same device and dtype. Raises ValueError for other
    module types and for configs the reference does not support (bidirectional, dropout, proj_size).
    """
    cls = next((ref for src, ref in _REFERENCE_OF if isinstance(module, src)), None)
    if cls is None:
        raise ValueError(f"as_reference expects torch.nn.RNN, LSTM or GRU (or a reference module), "
                         f"got {type(module).__name__}")
    config = dict(input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers,
                  bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
                  bidirectional=module.bidirectional)
    if cls is RNN:
        config["nonlinearity"] = module.nonlinearity
    if cls is LSTM:
        config["proj_size"] = module.proj_size
    p = next(module.parameters())
    ref = cls(**config, device=p.device, dtype=p.dtype)
    ref.load_state_dict(module.state_dict())
    return ref
