"""Drop-in torch.nn.RNN, LSTM and GRU whose recurrence runs as one fused Triton launch per layer, forward and backward.

Per layer: the input projection of all steps is one GEMM (x W_ih^T + b), one kernel launch runs the whole time loop
with W_hh held on chip and fp32 state, and backward runs one reverse-time launch that yields every step's
pre-activation gradients, from which the weight and input gradients are single large GEMMs over all T*B rows (the
split kernels' stepwise mode, below, launches once per step instead). No atomics on data (the split kernels'
barrier counters are the only atomics), so the same inputs give bitwise the same gradients.

Precision: the state (h, c), the saved activations and every accumulation are fp32 in every mode. In float32 the
recurrent products are IEEE fp32 (never TF32) and the big GEMMs (input projection, weight and input gradients) follow
torch's float32 matmul precision (IEEE unless TF32 has been enabled). For bfloat16/float16 modules every matmul
operand is in that dtype, as in cuDNN: the recurrent tl.dot operands (W_hh and h_{t-1}, or the gate gradients in
backward) are rounded to it and the big GEMMs run in it, all on tensor cores with fp32 accumulation; the input
projection comes back rounded to the dtype once, then is carried in fp32. Outputs and gradients come back in the
caller's dtype.

Which path runs is recorded on every forward in `module.last_path`:
- "fused-triton": the one-program kernels (kernels.triton_rnn): hidden_size at most the class's `max_fused_hidden`
  (RNN 128, GRU 64, LSTM 64). One program per 16 batch rows holds all of W_hh on chip for the whole loop.
- "fused-triton-split-persistent" / "fused-triton-split-stepwise": the split kernels (kernels.triton_split) for
  hidden sizes above that, up to `max_split_hidden` (RNN 1024, GRU 512, LSTM 512). The hidden units are split over
  programs of 16 units each, each holding its gates' slice of W_hh; the programs of a batch tile meet at a barrier every
  step inside one launch (persistent: on a GPU, when the whole grid fits its multiprocessors at once) or every step is
  its own launch (stepwise: the Triton interpreter, or a grid too large to be resident). `SPLIT_MODE` overrides.
- "fallback-reference: <why>": everything else runs the kernels.reference step loop (same math, same parameters),
  with the reason recorded and warned once per reason. Reasons: a step_hook (it needs every h_t of the step loop),
  triton not importable, CPU tensors without the interpreter, another device type, float64 (the kernels would round
  it to fp32), or a hidden size above `max_split_hidden`.
The fused paths run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before the kernels were loaded
(at the first fused forward; the Triton interpreter: slow, for tests), in float32, bfloat16 or float16.

Size limits, from compiling every kernel for sm_90 offline (triton 3.9; `python -m kernels.compile_report`, whose
output is committed in results/bench/compile/sm90.json): one-program kernels at HP = 64 (H padded to a
power of two) run spill-free at 16 warps in <= 124 KiB of shared memory; at HP = 128 the LSTM and GRU would need
200-376 KiB and spill, so they stop at 64, while the RNN fits at 128. The split kernels keep (gates x KP x 16) fp32
weights in shared memory: 160 KiB for the LSTM at KP = 512 (an H100 block gets 227 KiB), 128 KiB for the GRU at 512 and
the RNN at 1024, all spill-free at 16 warps; twice that does not fit.

`track_grad_norms = True` makes the backward kernels also write ||dL/dh_t|| (the total gradient of each layer's
hidden state at each step, per batch row) into `module.grad_norms`, (num_layers, T, B), at no extra pass.
"""

import functools
import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import reference

POISON_BUFFERS = False
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


#: How the split kernels (hidden sizes above `max_fused_hidden`) launch: "auto" (persistent when the grid fits the
#: GPU's multiprocessors at once, else one launch per step), "persistent" or "stepwise". Default: the environment
#: variable SEQBENCH_SPLIT_MODE, else "auto".
SPLIT_MODE = os.environ.get("SEQBENCH_SPLIT_MODE", "auto")
SPLIT_MODES = ("auto", "persistent", "stepwise")


@functools.cache
def load_triton():
    """(kernels.triton_rnn, None), or (None, why) when triton cannot be imported."""
    try:
        from . import triton_rnn
    except ImportError as e:
        return None, f"triton is not importable ({type(e).__name__}: {e})"
    return triton_rnn, None


def _split():
    from . import triton_split

    return triton_split


def _split_backward_prep(T, B, H, G, norms, like):
    """The split backward's buffers: dg (T+1, B, G*H) with slab T zero, and squared per-block norm shares or None."""
    dg = _buffer(T + 1, B, G * H, like=like)
    dg[T] = 0
    sq = None if norms is None else _buffer(T, _split().cdiv_hidden(H), B, like=like)
    return dg, sq


def _finish_norms(norms, sq):
    if norms is not None:
        torch.sqrt(sq.sum(1), out=norms)  # fixed-order sum over hidden blocks: deterministic


# ---- autograd Functions: one layer over a whole sequence ------------------------------------------------------------


def _buffer(*shape, like):
    """An fp32 tensor the kernels fill (NaN-filled when POISON_BUFFERS)."""
    if POISON_BUFFERS:
        return torch.full(shape, math.nan, dtype=torch.float32, device=like.device)
    return torch.empty(shape, dtype=torch.float32, device=like.device)


def _states(T, s0):
    """(T+1, B, H) fp32 buffer whose row 0 is s0 (B, H): the kernels read row 0 and write rows 1..T."""
    buf = _buffer(T + 1, *s0.shape, like=s0)
    buf[0] = s0
    return buf


def _fp32(t):
    return t.float().contiguous()


def _lowp(dtype):
    """The kernels' LOWP code for a caller dtype: recurrent tl.dot operands in fp32 (0), bfloat16 (1) or float16 (2)."""
    return {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 0)


def _gemm_dtype(dtype):
    """The big GEMMs run in the caller's dtype when it is bfloat16/float16 (tensor cores; cuBLAS accumulates in fp32
    and rounds each result once), else in float32."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def _project(x, w_ih, bias):
    """Input projections of every step as one GEMM: x (T, B, I) -> x W_ih^T + bias, (T, B, G*H) fp32."""
    T, B, I = x.shape
    g = _gemm_dtype(x.dtype)
    x2, w = x.reshape(T * B, I).to(g), w_ih.to(g).t()
    if g == torch.float32:
        xp = x2 @ w if bias is None else torch.addmm(bias, x2, w)
    else:
        xp = (x2 @ w).float()
        if bias is not None:
            xp += bias
    return xp.view(T, B, -1)


def _combined_bias(b_ih, b_hh):
    return None if b_ih is None else b_ih.float() + b_hh.float()


def _input_and_weight_grads(needs, dgx, dgh, x, h_prev, w_ih, w_hh):
    """Gradients of x, W_ih, W_hh, b_ih, b_hh (None where `needs` says not needed) as GEMMs over all T*B rows, in
    `_gemm_dtype` (the bias gradients are fp32 sums).

    dgx (T*B, G*H) fp32: gradients of the input-side pre-activations x W_ih^T + b_ih; dgh: of the recurrent side
    h W_hh^T + b_hh (the same tensor except for the GRU's n gate); h_prev (T*B, H) fp32 holds h_{t-1} row for row.
    """
    T, B, I = x.shape
    need_x, need_w_ih, need_w_hh, need_b_ih, need_b_hh = needs
    g = _gemm_dtype(x.dtype)
    dgx_g = dgx.to(g)
    dgh_g = dgx_g if dgh is dgx else dgh.to(g)
    dx = (dgx_g @ w_ih.to(g)).view(T, B, I).to(x.dtype) if need_x else None
    dw_ih = (dgx_g.t() @ x.reshape(T * B, I).to(g)).to(w_ih.dtype) if need_w_ih else None
    dw_hh = (dgh_g.t() @ h_prev.to(g)).to(w_hh.dtype) if need_w_hh else None
    db_ih = dgx.sum(0).to(w_ih.dtype) if need_b_ih else None
    db_hh = dgh.sum(0).to(w_hh.dtype) if need_b_hh else None
    return dx, dw_ih, dw_hh, db_ih, db_hh


class RNNLayer(torch.autograd.Function):
    """One Elman layer: x (T, B, I), h0 (B, H) -> output (T, B, H). norms: (T, B) to fill in backward, or None."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, norms, relu, split):
        triton_rnn, _ = load_triton()
        hs = _states(x.shape[0], h0)  # (T+1, B, H)
        xp, lowp = _project(x, w_ih, _combined_bias(b_ih, b_hh)), _lowp(x.dtype)
        if split:
            _split().rnn_forward(xp, _fp32(w_hh), hs, relu, split, lowp)
        else:
            triton_rnn.rnn_forward(xp, _fp32(w_hh), hs, relu, lowp)
        ctx.save_for_backward(x, w_ih, w_hh, hs)
        ctx.norms, ctx.relu, ctx.state_dtype, ctx.split, ctx.lowp = norms, relu, h0.dtype, split, lowp
        return hs[1:].to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        triton_rnn, _ = load_triton()
        x, w_ih, w_hh, hs = ctx.saved_tensors
        T, B, H = dout.shape
        if ctx.split:
            dg, sq = _split_backward_prep(T, B, H, 1, ctx.norms, dout)
            _split().rnn_backward(_fp32(dout), _fp32(w_hh), hs, dg, sq, ctx.relu, ctx.split, ctx.lowp)
            _finish_norms(ctx.norms, sq)
            dh0, dg = dg[0] @ _fp32(w_hh), dg[:T]
        else:
            dg, dh0 = _buffer(T, B, H, like=dout), _buffer(B, H, like=dout)
            triton_rnn.rnn_backward(_fp32(dout), _fp32(w_hh), hs, dg, dh0, ctx.norms, ctx.relu, ctx.lowp)
        dg = dg.reshape(T * B, H)
        needs = ctx.needs_input_grad
        grads = _input_and_weight_grads((needs[0], *needs[2:6]), dg, dg, x, hs[:-1].view(T * B, H), w_ih, w_hh)
        dx, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0.to(ctx.state_dtype), dw_ih, dw_hh, db_ih, db_hh, None, None, None


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer: x (T, B, I), h0 and c0 (B, H) -> output (T, B, H), c_n (B, H); h_n is output[-1]."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, split):
        triton_rnn, _ = load_triton()
        T, B, _ = x.shape
        hs, cs = _states(T, h0), _states(T, c0)  # (T+1, B, H)
        act = _buffer(T, B, w_hh.shape[0], like=x)  # (T, B, 4H): i, f, g, o after their nonlinearities
        xp, lowp = _project(x, w_ih, _combined_bias(b_ih, b_hh)), _lowp(x.dtype)
        if split:
            _split().lstm_forward(xp, _fp32(w_hh), hs, cs, act, split, lowp)
        else:
            triton_rnn.lstm_forward(xp, _fp32(w_hh), hs, cs, act, lowp)
        ctx.save_for_backward(x, w_ih, w_hh, hs, cs, act)
        ctx.norms, ctx.state_dtype, ctx.split, ctx.lowp = norms, h0.dtype, split, lowp
        return hs[1:].to(x.dtype), cs[-1].to(c0.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dcn):
        triton_rnn, _ = load_triton()
        x, w_ih, w_hh, hs, cs, act = ctx.saved_tensors
        T, B, H = dout.shape
        if ctx.split:
            dg, sq = _split_backward_prep(T, B, H, 4, ctx.norms, dout)
            dc0 = _fp32(dcn).clone()  # carry: dL/dc_T in, dL/dc_0 out
            _split().lstm_backward(_fp32(dout), _fp32(w_hh), cs, act, dg, dc0, sq, ctx.split, ctx.lowp)
            _finish_norms(ctx.norms, sq)
            dh0, dg = dg[0] @ _fp32(w_hh), dg[:T]
        else:
            dg = _buffer(T, B, 4 * H, like=dout)
            dh0, dc0 = _buffer(B, H, like=dout), _buffer(B, H, like=dout)
            triton_rnn.lstm_backward(_fp32(dout), _fp32(dcn), _fp32(w_hh), cs, act, dg, dh0, dc0, ctx.norms,
                                     ctx.lowp)
        dg = dg.reshape(T * B, 4 * H)
        needs = ctx.needs_input_grad
        grads = _input_and_weight_grads((needs[0], *needs[3:7]), dg, dg, x, hs[:-1].view(T * B, H), w_ih, w_hh)
        dx, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0.to(ctx.state_dtype), dc0.to(ctx.state_dtype), dw_ih, dw_hh, db_ih, db_hh, None, None


class GRULayer(torch.autograd.Function):
    """One GRU layer: x (T, B, I), h0 (B, H) -> output (T, B, H)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, norms, split):
        triton_rnn, _ = load_triton()
        T, B, _ = x.shape
        H = w_hh.shape[1]
        # b_hr and b_hz add like input biases; b_hn stays inside r * (W_hn h + b_hn), so the kernel adds it.
        bias = None if b_ih is None else b_ih.float() + F.pad(b_hh[:2 * H].float(), (0, H))
        b_hn = x.new_zeros(H, dtype=torch.float32) if b_hh is None else _fp32(b_hh[2 * H:])
        hs = _states(T, h0)  # (T+1, B, H)
        act = _buffer(T, B, 4 * H, like=x)  # (T, B, 4H): r, z, n, W_hn h + b_hn
        xp, lowp = _project(x, w_ih, bias), _lowp(x.dtype)
        if split:
            _split().gru_forward(xp, _fp32(w_hh), b_hn, hs, act, split, lowp)
        else:
            triton_rnn.gru_forward(xp, _fp32(w_hh), b_hn, hs, act, lowp)
        ctx.save_for_backward(x, w_ih, w_hh, hs, act)
        ctx.norms, ctx.state_dtype, ctx.split, ctx.lowp = norms, h0.dtype, split, lowp
        return hs[1:].to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        triton_rnn, _ = load_triton()
        x, w_ih, w_hh, hs, act = ctx.saved_tensors
        T, B, H = dout.shape
        if ctx.split:
            dg, sq = _split_backward_prep(T, B, H, 4, ctx.norms, dout)
            carry = torch.zeros(B, H, dtype=torch.float32, device=dout.device)  # the dh * z part of dL/dh_0 out
            _split().gru_backward(_fp32(dout), _fp32(w_hh), hs, act, dg, carry, sq, ctx.split, ctx.lowp)
            _finish_norms(ctx.norms, sq)
            dh0 = torch.addmm(carry, torch.cat((dg[0, :, :2 * H], dg[0, :, 3 * H:]), dim=1), _fp32(w_hh))
            dg = dg[:T]
        else:
            dg, dh0 = _buffer(T, B, 4 * H, like=dout), _buffer(B, H, like=dout)
            triton_rnn.gru_backward(_fp32(dout), _fp32(w_hh), hs, act, dg, dh0, ctx.norms, ctx.lowp)
        dg = dg.reshape(T * B, 4 * H)  # (dr, dz, dn) of the input side, then d(W_hn h + b_hn)
        dgx = dg[:, :3 * H]
        dgh = torch.cat((dg[:, :2 * H], dg[:, 3 * H:]), dim=1)
        needs = ctx.needs_input_grad
        grads = _input_and_weight_grads((needs[0], *needs[2:6]), dgx, dgh, x, hs[:-1].view(T * B, H), w_ih, w_hh)
        dx, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0.to(ctx.state_dtype), dw_ih, dw_hh, db_ih, db_hh, None, None


# ---- nn.Modules: drop-in torch.nn.RNN / LSTM / GRU ------------------------------------------------------------------

_warned = set()


def _warn_once(message):
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _reject_unsupported(name, dropout, bidirectional, proj_size=0):
    """ValueError for torch.nn arguments the fused modules do not implement (never a silent difference)."""
    if bidirectional:
        raise ValueError(f"kernels.{name}: bidirectional=True is not supported (unidirectional only)")
    if dropout != 0:
        raise ValueError(f"kernels.{name}: dropout={dropout!r} is not supported; use dropout=0")
    if proj_size != 0:
        raise ValueError(f"kernels.{name}: proj_size={proj_size!r} is not supported; use proj_size=0")


class _Fused:
    """Mixin over a reference module: runs its layers through the fused kernels when it can, else the reference
    step loop, recording which in `last_path`. Subclasses implement `_fused_layer`."""

    max_fused_hidden = 64  # largest hidden_size the one-program kernels take; above it the split kernels run
    max_split_hidden = 512  # largest hidden_size the split kernels take (their W_hh slices fit in shared memory)
    last_path = None  # set by every forward: "fused-triton", "fused-triton-split-<mode>" or "fallback-reference: <why>"
    track_grad_norms = False
    grad_norms = None  # (num_layers, T, B) ||dL/dh_t|| after backward when track_grad_norms; NaN before it

    def fallback_reason(self, x, step_hook=None):
        """Why `x` (L, B, I) cannot take the fused path, or None if it can."""
        if step_hook is not None:
            return "step_hook given (it needs every h_t of the step loop)"
        triton_rnn, why = load_triton()
        if triton_rnn is None:
            return why
        if x.device.type == "cpu" and not triton_rnn.INTERPRET:
            return "CPU tensors, and TRITON_INTERPRET=1 was not set when the kernels were loaded"
        if x.device.type not in ("cuda", "cpu"):
            return f"device type {x.device.type!r} is not supported by the Triton kernels"
        if x.dtype not in SUPPORTED_DTYPES:
            return f"dtype {x.dtype}: the fused kernels compute in float32"
        if self.hidden_size > self.max_split_hidden:
            return (f"hidden_size={self.hidden_size} is above the split kernels' limit {self.max_split_hidden} for "
                    f"{type(self).__name__} (a program's W_hh slice would not fit in shared memory)")
        return None

    def split_mode(self, x):
        """None for the one-program kernels (hidden_size <= max_fused_hidden), else how the split kernels launch:
        "persistent" or "stepwise" (SPLIT_MODE, or when "auto" the plan for this batch and device)."""
        if self.hidden_size <= self.max_fused_hidden:
            return None
        if SPLIT_MODE not in SPLIT_MODES:
            raise ValueError(f"kernels.fused.SPLIT_MODE={SPLIT_MODE!r} (SEQBENCH_SPLIT_MODE): expected one of "
                             f"{', '.join(SPLIT_MODES)}")
        if SPLIT_MODE != "auto":
            return SPLIT_MODE
        gates = self.weight_hh_l0.shape[0] // self.hidden_size
        return _split().plan(x.shape[1], self.hidden_size, gates, x.device)[0]

    def _layers(self, x, states, step_hook):
        for name, p in self.named_parameters():
            if p.dtype != x.dtype:
                raise ValueError(f"input dtype {x.dtype} does not match parameter {name} dtype {p.dtype}")
        reason = self.fallback_reason(x, step_hook)
        if reason is not None:
            self.last_path = f"fallback-reference: {reason}"
            _warn_once(f"kernels.{type(self).__name__} runs the reference step loop: {reason}")
            self.grad_norms = None
            return super()._layers(x, states, step_hook)
        split = self.split_mode(x)
        self.last_path = f"fused-triton-split-{split}" if split else "fused-triton"
        T, B = x.shape[:2]
        self.grad_norms = None
        if self.track_grad_norms:
            self.grad_norms = torch.full((self.num_layers, T, B), math.nan, dtype=torch.float32, device=x.device)
        finals = []
        for k in range(self.num_layers):
            norms = None if self.grad_norms is None else self.grad_norms[k]
            x, final = self._fused_layer(x, tuple(s[k] for s in states), self._weights(k), norms, split)
            finals.append(final)
        return x, tuple(torch.stack(s) for s in zip(*finals))


class RNN(_Fused, reference.RNN):
    """torch.nn.RNN (tanh or relu) with fused Triton kernels; see the module docstring for paths and limits."""

    max_fused_hidden = 128
    max_split_hidden = 1024

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        _reject_unsupported("RNN", dropout, bidirectional)
        super().__init__(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout, bidirectional,
                         device, dtype)

    def _fused_layer(self, x, state, weights, norms, split):
        out = RNNLayer.apply(x, *state, *weights, norms, self.nonlinearity == "relu", split)
        return out, (out[-1],)


class LSTM(_Fused, reference.LSTM):
    """torch.nn.LSTM (proj_size=0) with fused Triton kernels; see the module docstring for paths and limits."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        _reject_unsupported("LSTM", dropout, bidirectional, proj_size)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         device, dtype)

    def _fused_layer(self, x, state, weights, norms, split):
        out, c_n = LSTMLayer.apply(x, *state, *weights, norms, split)
        return out, (out[-1], c_n)


class GRU(_Fused, reference.GRU):
    """torch.nn.GRU with fused Triton kernels; see the module docstring for paths and limits."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        _reject_unsupported("GRU", dropout, bidirectional)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype)

    def _fused_layer(self, x, state, weights, norms, split):
        out = GRULayer.apply(x, *state, *weights, norms, split)
        return out, (out[-1],)
