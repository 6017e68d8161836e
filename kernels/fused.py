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
  proj_size > 0, batch size 0, a torch.func transform or forward-mode AD (the autograd.Functions have no vmap or jvp
  rule), triton not importable, CPU tensors without the interpreter, another device type, float64 (the kernels would
  round it to fp32), or a hidden size above `max_split_hidden`.
The fused paths run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before the kernels were loaded
(at the first fused forward; the Triton interpreter: slow, for tests), in float32, bfloat16 or float16.

Drop-in: the modules subclass torch.nn.RNN / LSTM / GRU (constructor and its checks, parameters, init, state_dict,
flatten_parameters, all_weights, repr, pickling and isinstance are torch's own) and take what torch.nn's forward takes:
tensors batched, batch_first or unbatched, PackedSequences (run as the zero-padded batch; each sequence's final state
is read at its own length, and past it the LSTM's input and forget gates are pinned to 0 and 1 so its cell state
stops), bidirectional (the reverse direction is the same kernels over each sequence reversed in place), dropout between
layers in training mode, and autocast (input, states and weights cast to the autocast dtype, as cuDNN's autocast kernel
does). Backward under create_graph=True (double backward) recomputes through the reference loop, so higher derivatives
are exact; outputs never alias saved buffers, so in-place ops on them are safe. The kernel launches are torch.library
custom ops (torch >= 2.4): torch.compile graph-breaks around the module as around any torch.nn.RNNBase, and with
torch._dynamo.config.allow_rnn traces through it into one graph. tests/kernels/test_dropin.py checks all of this
against torch.nn, including every nn.RNN/LSTM/GRU sample of torch's own module_db.

Size limits come from compiling every kernel for sm_90 and sm_80 offline under triton 3.2, 3.6 and 3.9
(`python -m seqbench.kernels.compile_report`; reports in results/bench/compile/, figures and reasons in docs/kernels.md): the
one-program kernels take RNN H <= 128 and LSTM/GRU H <= 64 (32 warps, spill-free); the split kernels keep
(gates x KP x 16) weights in shared memory, 160 KiB for the LSTM at KP = 512, up to RNN 1024 and LSTM/GRU 512, with
their batch tiles from `triton_split.LAUNCH_TABLE`.

`track_grad_norms = True` makes the backward kernels also write ||dL/dh_t|| (the total gradient of each layer's
hidden state at each step, per batch row) into `module.grad_norms`, (num_layers, T, B), at no extra pass (fused paths
only, unidirectional, not under create_graph=True; zero at the padding of a PackedSequence).
"""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import reference
from ._support import custom_operator, triton_loader, unsupported_transform, warn_once

POISON_BUFFERS = False
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


#: How the split kernels (hidden sizes above `max_fused_hidden`) launch: "auto" (persistent when the grid fits the
#: GPU's multiprocessors at once, else one launch per step), "persistent" or "stepwise". Default: the environment
#: variable SEQBENCH_SPLIT_MODE, else "auto".
SPLIT_MODE = os.environ.get("SEQBENCH_SPLIT_MODE", "auto")
SPLIT_MODES = ("auto", "persistent", "stepwise")


load_triton = triton_loader("triton_rnn")


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


# ---- buffers, input projections and weight gradients -----------------------------------------------------------------

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


# ---- kernel launches as operators -----------------------------------------------------------------------------------
# Each cell's forward and backward launch is one custom operator (torch.library.custom_op, torch >= 2.4), so that
# torch.compile calls it as an opaque op with known output shapes instead of tracing into Triton's launcher (on an older
# torch they stay plain functions). Every launch runs under its input's CUDA device: a module on cuda:1 launches its
# kernels there whatever the current device is (torch.cuda.device_of is a no-op for CPU tensors).


def _kernels():
    return load_triton()[0]


def _empty(like, *shape):
    return like.new_empty(shape, dtype=torch.float32)


def _norms_or_empty(norms, like):
    """Operators return tensors only: ||dL/dh_t|| (T, B), or an empty tensor when they were not tracked."""
    return _empty(like, 0) if norms is None else norms


def _rnn_forward_fake(xp, w_hh, h0, relu, split, lowp):
    return _empty(xp, xp.shape[0] + 1, *h0.shape)


@custom_operator("rnn_forward", _rnn_forward_fake)
def _rnn_forward(xp: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, relu: bool, split: str,
                 lowp: int) -> torch.Tensor:
    """xp (T, B, H) fp32 input projections -> hs (T+1, B, H) fp32, row 0 = h0. split: "" or the split mode."""
    hs = _states(xp.shape[0], h0)
    with torch.cuda.device_of(xp):
        if split:
            _split().rnn_forward(xp, _fp32(w_hh), hs, relu, split, lowp)
        else:
            _kernels().rnn_forward(xp, _fp32(w_hh), hs, relu, lowp)
    return hs


def _rnn_backward_fake(dout, w_hh, hs, relu, split, lowp, track):
    T, B, H = dout.shape
    return _empty(dout, T, B, H), _empty(dout, B, H), _empty(dout, *((T, B) if track else (0,)))


@custom_operator("rnn_backward", _rnn_backward_fake)
def _rnn_backward(dout: torch.Tensor, w_hh: torch.Tensor, hs: torch.Tensor, relu: bool, split: str, lowp: int,
                  track: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/d(output) (T, B, H) -> pre-activation gradients dg (T, B, H), dL/dh0 (B, H), ||dL/dh_t|| (T, B) if track."""
    T, B, H = dout.shape
    norms = _buffer(T, B, like=dout) if track else None
    with torch.cuda.device_of(dout):
        if split:
            dg, sq = _split_backward_prep(T, B, H, 1, norms, dout)
            _split().rnn_backward(_fp32(dout), _fp32(w_hh), hs, dg, sq, relu, split, lowp)
            _finish_norms(norms, sq)
            dh0, dg = dg[0] @ _fp32(w_hh), dg[:T]
        else:
            dg, dh0 = _buffer(T, B, H, like=dout), _buffer(B, H, like=dout)
            _kernels().rnn_backward(_fp32(dout), _fp32(w_hh), hs, dg, dh0, norms, relu, lowp)
    return dg, dh0, _norms_or_empty(norms, dout)


def _lstm_forward_fake(xp, w_hh, h0, c0, split, lowp):
    T, (B, H) = xp.shape[0], h0.shape
    return _empty(xp, T + 1, B, H), _empty(xp, T + 1, B, H), _empty(xp, *xp.shape)


@custom_operator("lstm_forward", _lstm_forward_fake)
def _lstm_forward(xp: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, split: str,
                  lowp: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """xp (T, B, 4H) -> hs, cs (T+1, B, H) with row 0 the initial state, act (T, B, 4H): i, f, g, o after their
    nonlinearities; all fp32."""
    T = xp.shape[0]
    hs, cs, act = _states(T, h0), _states(T, c0), _buffer(*xp.shape, like=xp)
    with torch.cuda.device_of(xp):
        if split:
            _split().lstm_forward(xp, _fp32(w_hh), hs, cs, act, split, lowp)
        else:
            _kernels().lstm_forward(xp, _fp32(w_hh), hs, cs, act, lowp)
    return hs, cs, act


def _lstm_backward_fake(dout, dcn, w_hh, cs, act, split, lowp, track):
    T, B, H = dout.shape
    return (_empty(dout, T, B, 4 * H), _empty(dout, B, H), _empty(dout, B, H),
            _empty(dout, *((T, B) if track else (0,))))


@custom_operator("lstm_backward", _lstm_backward_fake)
def _lstm_backward(dout: torch.Tensor, dcn: torch.Tensor, w_hh: torch.Tensor, cs: torch.Tensor, act: torch.Tensor,
                   split: str, lowp: int, track: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/d(output) (T, B, H), dL/dc_n (B, H) -> dg (T, B, 4H), dL/dh0, dL/dc0 (B, H), ||dL/dh_t|| (T, B) if track."""
    T, B, H = dout.shape
    norms = _buffer(T, B, like=dout) if track else None
    with torch.cuda.device_of(dout):
        if split:
            dg, sq = _split_backward_prep(T, B, H, 4, norms, dout)
            dc0 = _fp32(dcn).clone()  # carry: dL/dc_T in, dL/dc_0 out
            _split().lstm_backward(_fp32(dout), _fp32(w_hh), cs, act, dg, dc0, sq, split, lowp)
            _finish_norms(norms, sq)
            dh0, dg = dg[0] @ _fp32(w_hh), dg[:T]
        else:
            dg = _buffer(T, B, 4 * H, like=dout)
            dh0, dc0 = _buffer(B, H, like=dout), _buffer(B, H, like=dout)
            _kernels().lstm_backward(_fp32(dout), _fp32(dcn), _fp32(w_hh), cs, act, dg, dh0, dc0, norms, lowp)
    return dg, dh0, dc0, _norms_or_empty(norms, dout)


def _gru_forward_fake(xp, w_hh, b_hn, h0, split, lowp):
    T, (B, H) = xp.shape[0], h0.shape
    return _empty(xp, T + 1, B, H), _empty(xp, T, B, 4 * H)


@custom_operator("gru_forward", _gru_forward_fake)
def _gru_forward(xp: torch.Tensor, w_hh: torch.Tensor, b_hn: torch.Tensor, h0: torch.Tensor, split: str,
                 lowp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """xp (T, B, 3H), b_hn (H,) fp32 -> hs (T+1, B, H) with row 0 = h0, act (T, B, 4H): r, z, n, W_hn h + b_hn."""
    T, (B, H) = xp.shape[0], h0.shape
    hs, act = _states(T, h0), _buffer(T, B, 4 * H, like=xp)
    with torch.cuda.device_of(xp):
        if split:
            _split().gru_forward(xp, _fp32(w_hh), b_hn, hs, act, split, lowp)
        else:
            _kernels().gru_forward(xp, _fp32(w_hh), b_hn, hs, act, lowp)
    return hs, act


def _gru_backward_fake(dout, w_hh, hs, act, split, lowp, track):
    T, B, H = dout.shape
    return _empty(dout, T, B, 4 * H), _empty(dout, B, H), _empty(dout, *((T, B) if track else (0,)))


@custom_operator("gru_backward", _gru_backward_fake)
def _gru_backward(dout: torch.Tensor, w_hh: torch.Tensor, hs: torch.Tensor, act: torch.Tensor, split: str, lowp: int,
                  track: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/d(output) (T, B, H) -> dg (T, B, 4H): (dr, dz, dn) of the input side, then d(W_hn h + b_hn); dL/dh0 (B, H);
    ||dL/dh_t|| (T, B) if track."""
    T, B, H = dout.shape
    norms = _buffer(T, B, like=dout) if track else None
    with torch.cuda.device_of(dout):
        if split:
            dg, sq = _split_backward_prep(T, B, H, 4, norms, dout)
            carry = torch.zeros(B, H, dtype=torch.float32, device=dout.device)  # the dh * z part of dL/dh_0 out
            _split().gru_backward(_fp32(dout), _fp32(w_hh), hs, act, dg, carry, sq, split, lowp)
            _finish_norms(norms, sq)
            dh0 = torch.addmm(carry, torch.cat((dg[0, :, :2 * H], dg[0, :, 3 * H:]), dim=1), _fp32(w_hh))
            dg = dg[:T]
        else:
            dg, dh0 = _buffer(T, B, 4 * H, like=dout), _buffer(B, H, like=dout)
            _kernels().gru_backward(_fp32(dout), _fp32(w_hh), hs, act, dg, dh0, norms, lowp)
    return dg, dh0, _norms_or_empty(norms, dout)


# ---- autograd Functions: one layer over a whole sequence ------------------------------------------------------------
# Each Function returns its output and the fp32 buffers backward needs (marked non-differentiable), so that the
# forward takes no ctx and functorch-style setup_context saves them. The output is a copy, never a view of a saved
# buffer: in-place ops on it (as on torch.nn's outputs) cannot corrupt what backward reads.
#
# Backward under create_graph=True (a gradient penalty, double backward): the kernels' gradients are not themselves
# differentiable, so there the layer is rerun through the reference step loop on the saved inputs and differentiated
# with create_graph, which makes every higher derivative exact (at the step loop's cost).


def _output(hs, dtype):
    return hs[1:].to(dtype, copy=True)


def _save(ctx, inputs, buffers, norms, split, dtype):
    ctx.mark_non_differentiable(*buffers)
    ctx.save_for_backward(*inputs, *buffers)
    ctx.norms, ctx.split, ctx.lowp = norms, split or "", _lowp(dtype)


def _recomputed_grads(ctx, inputs, grad_outputs, layer):
    """Differentiable gradients of `inputs` (None where not needed): `layer(*inputs)` (the reference step loop) rerun
    with grad enabled and differentiated against `grad_outputs` with create_graph=True."""
    if ctx.norms is not None:
        raise RuntimeError("kernels: track_grad_norms cannot be combined with create_graph=True (double backward)")
    needs = ctx.needs_input_grad[:len(inputs)]
    with torch.enable_grad():
        # Views keep the link to the saved inputs' graph, so the gradients are functions of the inputs themselves.
        leaves = [t.view_as(t) if need else t for t, need in zip(inputs, needs)]
        outputs = layer(*leaves)
        wanted = [t for t, need in zip(leaves, needs) if need]
        grads = iter(torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True))
    return tuple(next(grads) if need else None for need in needs)


def _at_lengths(steps, lengths):
    """Row lengths[b] - 1 of batch column b of steps (T, B, H): each sequence's state at its own last step."""
    return steps[lengths - 1, torch.arange(steps.shape[1], device=steps.device)]


class RNNLayer(torch.autograd.Function):
    """One Elman layer: x (T, B, I), h0 (B, H) -> output (T, B, H) in x's dtype, and the fp32 states hs (T+1, B, H)
    backward needs. norms: (T, B) to fill in backward, or None."""

    @staticmethod
    def forward(x, h0, w_ih, w_hh, b_ih, b_hh, norms, relu, split):
        xp = _project(x, w_ih, _combined_bias(b_ih, b_hh))
        hs = _rnn_forward(xp, w_hh, h0, relu, split or "", _lowp(x.dtype))
        return _output(hs, x.dtype), hs

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h0, w_ih, w_hh, b_ih, b_hh, norms, relu, split = inputs
        _save(ctx, inputs[:6], output[1:], norms, split, x.dtype)
        ctx.relu = relu

    @staticmethod
    def backward(ctx, dout, _):
        x, h0, w_ih, w_hh, b_ih, b_hh, hs = ctx.saved_tensors
        if torch.is_grad_enabled():
            act = "relu" if ctx.relu else "tanh"

            def layer(x, h0, *w):
                return reference.run_layer(lambda x_t, s: (reference.rnn_cell(x_t, *s, *w, act),), x, (h0,))[0]
            return _recomputed_grads(ctx, (x, h0, w_ih, w_hh, b_ih, b_hh), (dout,), layer) + (None,) * 3
        T, B, H = dout.shape
        dg, dh0, norms = _rnn_backward(dout, w_hh, hs, ctx.relu, ctx.split, ctx.lowp, ctx.norms is not None)
        if ctx.norms is not None:
            ctx.norms.copy_(norms)
        dg = dg.reshape(T * B, H)
        needs = ctx.needs_input_grad
        grads = _input_and_weight_grads((needs[0], *needs[2:6]), dg, dg, x, hs[:-1].view(T * B, H), w_ih, w_hh)
        dx, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0.to(h0.dtype), dw_ih, dw_hh, db_ih, db_hh, None, None, None


#: |pre-activation| that saturates a sigmoid to exactly 0 or 1 in fp32 (exp(1e4) overflows, exp(-1e4) underflows).
_SATURATED = 1e4


def _freeze_past_end(xp, lengths):
    """Pin the input and forget gates of every step past a sequence's end to i = 0, f = 1 (exactly, in fp32), so the
    cell state stops there: c_T is each sequence's c at its own length. Those steps then pass dL/dc back unchanged
    and add no gradient anywhere (their gate gradients are exactly zero). xp (T, B, 4H), lengths (B,) or None."""
    if lengths is not None:
        T, B, G = xp.shape
        past = (torch.arange(T, device=xp.device)[:, None] >= lengths)[..., None]  # (T, B, 1)
        xp[..., :G // 4].masked_fill_(past, -_SATURATED)
        xp[..., G // 4:G // 2].masked_fill_(past, _SATURATED)
    return xp


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer: x (T, B, I), h0 and c0 (B, H) -> output (T, B, H), c_n (B, H) and the fp32 buffers hs, cs
    (T+1, B, H) and act (T, B, 4H) backward needs. h_n is output[-1]. lengths (B,): sequence lengths for padded batches
    (steps past a sequence's end are frozen, c_n is at each length), or None."""

    @staticmethod
    def forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, split, lengths):
        xp = _freeze_past_end(_project(x, w_ih, _combined_bias(b_ih, b_hh)), lengths)
        hs, cs, act = _lstm_forward(xp, w_hh, h0, c0, split or "", _lowp(x.dtype))
        return _output(hs, x.dtype), cs[-1].to(c0.dtype, copy=True), hs, cs, act

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, split, lengths = inputs
        _save(ctx, inputs[:7], output[2:], norms, split, x.dtype)
        ctx.lengths = lengths

    @staticmethod
    def backward(ctx, dout, dcn, *_):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, hs, cs, act = ctx.saved_tensors
        if torch.is_grad_enabled():
            def layer(x, h0, c0, *w):
                hs, cs = reference.run_layer(lambda x_t, s: reference.lstm_cell(x_t, *s, *w), x, (h0, c0))
                return hs, cs[-1] if ctx.lengths is None else _at_lengths(cs, ctx.lengths)
            return _recomputed_grads(ctx, (x, h0, c0, w_ih, w_hh, b_ih, b_hh), (dout, dcn), layer) + (None,) * 3
        T, B, H = dout.shape
        dg, dh0, dc0, norms = _lstm_backward(dout, dcn, w_hh, cs, act, ctx.split, ctx.lowp, ctx.norms is not None)
        if ctx.norms is not None:
            ctx.norms.copy_(norms)
        dg = dg.reshape(T * B, 4 * H)
        needs = ctx.needs_input_grad
        grads = _input_and_weight_grads((needs[0], *needs[3:7]), dg, dg, x, hs[:-1].view(T * B, H), w_ih, w_hh)
        dx, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0.to(h0.dtype), dc0.to(c0.dtype), dw_ih, dw_hh, db_ih, db_hh, None, None, None


class GRULayer(torch.autograd.Function):
    """One GRU layer: x (T, B, I), h0 (B, H) -> output (T, B, H) and the fp32 buffers hs (T+1, B, H) and act
    (T, B, 4H) backward needs."""

    @staticmethod
    def forward(x, h0, w_ih, w_hh, b_ih, b_hh, norms, split):
        H = w_hh.shape[1]
        # b_hr and b_hz add like input biases; b_hn stays inside r * (W_hn h + b_hn), so the kernel adds it.
        bias = None if b_ih is None else b_ih.float() + F.pad(b_hh[:2 * H].float(), (0, H))
        b_hn = x.new_zeros(H, dtype=torch.float32) if b_hh is None else _fp32(b_hh[2 * H:])
        xp = _project(x, w_ih, bias)
        hs, act = _gru_forward(xp, w_hh, b_hn, h0, split or "", _lowp(x.dtype))
        return _output(hs, x.dtype), hs, act

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, h0, w_ih, w_hh, b_ih, b_hh, norms, split = inputs
        _save(ctx, inputs[:6], output[1:], norms, split, x.dtype)

    @staticmethod
    def backward(ctx, dout, *_):
        x, h0, w_ih, w_hh, b_ih, b_hh, hs, act = ctx.saved_tensors
        if torch.is_grad_enabled():
            def layer(x, h0, *w):
                return reference.run_layer(lambda x_t, s: (reference.gru_cell(x_t, *s, *w),), x, (h0,))[0]
            return _recomputed_grads(ctx, (x, h0, w_ih, w_hh, b_ih, b_hh), (dout,), layer) + (None,) * 2
        T, B, H = dout.shape
        dg, dh0, norms = _gru_backward(dout, w_hh, hs, act, ctx.split, ctx.lowp, ctx.norms is not None)
        if ctx.norms is not None:
            ctx.norms.copy_(norms)
        dg = dg.reshape(T * B, 4 * H)  # (dr, dz, dn) of the input side, then d(W_hn h + b_hn)
        dgx = dg[:, :3 * H]
        dgh = torch.cat((dg[:, :2 * H], dg[:, 3 * H:]), dim=1)
        needs = ctx.needs_input_grad
        grads = _input_and_weight_grads((needs[0], *needs[2:6]), dgx, dgh, x, hs[:-1].view(T * B, H), w_ih, w_hh)
        dx, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0.to(h0.dtype), dw_ih, dw_hh, db_ih, db_hh, None, None


# ---- nn.Modules: drop-in torch.nn.RNN / LSTM / GRU ------------------------------------------------------------------

def _autocast_dtype(x):
    """The dtype torch.nn's recurrent modules run in under autocast on x's device type (cuDNN's autocast kernel casts
    input, states and weights to it; on CPU the outputs come out in it too), or None: autocast is off, or x is not a
    float32/bfloat16/float16 tensor (autocast leaves float64 alone)."""
    if x.dtype not in SUPPORTED_DTYPES:
        return None
    device = x.device.type
    try:
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    except (AttributeError, TypeError):  # a torch without the device-generic functions
        if device == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
    except RuntimeError:  # a device type autocast does not know
        pass
    return None


def _padded(data, batch_sizes):
    """A PackedSequence's data (N, I) and batch_sizes (T,) -> the zero-padded input (T, B, I) in its sorted batch order,
    the sequence lengths (B,), and each packed row's index in the flattened (T*B) padding."""
    T, B = batch_sizes.numel(), int(batch_sizes[0])
    present = torch.arange(B) < batch_sizes[:, None]  # (T, B): step t of sorted sequence b exists; packed row order
    rows = present.flatten().nonzero().squeeze(1).to(data.device)
    x = data.new_zeros(T * B, data.shape[-1]).index_copy(0, rows, data).view(T, B, -1)
    return x, present.sum(0).to(data.device), rows


def _reversed(x, lengths):
    """x (T, B, ...) with each sequence's first lengths[b] steps (every step if lengths is None) in reverse order; the
    padding past a sequence's end stays where it is. Its own inverse."""
    if lengths is None:
        return x.flip(0)
    t = torch.arange(x.shape[0], device=x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    return x.gather(0, index.view(*index.shape, *(1,) * (x.dim() - 2)).expand_as(x))


class _Fused:
    """Mixin over torch.nn.RNN / LSTM / GRU, whose parameters, init, state_dict, flatten_parameters, all_weights,
    repr, pickling and isinstance checks it keeps: its forward runs each layer through the fused kernels when it can,
    else through the kernels.reference step loop, recording which in `last_path`. Subclasses set `num_states` and
    implement `_fused_layer` and `_cell`."""

    max_fused_hidden = 64  # largest hidden_size the one-program kernels take; above it the split kernels run
    max_split_hidden = 512  # largest hidden_size the split kernels take (their W_hh slices fit in shared memory)
    last_path = None  # set by every forward: "fused-triton", "fused-triton-split-<mode>" or "fallback-reference: <why>"
    #: the same, structured (set by every forward): {"backend": "triton" or "reference", "fallback": why, or None}
    last_kernel = None
    track_grad_norms = False
    grad_norms = None  # (num_layers, T, B) ||dL/dh_t|| after backward when track_grad_norms; NaN before it

    def fallback_reason(self, x, step_hook=None):
        """Why `x` (L, B, I) cannot take the fused path, or None if it can."""
        if step_hook is not None:
            return "step_hook given (it needs every h_t of the step loop)"
        if self.proj_size:
            return f"proj_size={self.proj_size} (the kernels have no projection)"
        if x.shape[1] == 0:
            return "batch size 0"
        why = unsupported_transform("the kernels' autograd.Functions have")
        if why is not None:
            return why
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
        return _split().plan(x.shape[1], self.hidden_size, gates, x.device, _lowp(x.dtype))[0]

    def forward(self, input, hx=None, *, step_hook=None):
        """torch.nn's forward, plus step_hook.

        input: (L, B, I), (B, L, I) if batch_first, unbatched (L, I), or a PackedSequence. hx: the initial state
        (num_layers * num_directions, B, H_out), or (num_layers * num_directions, H_out) if unbatched, a tuple
        (h_0, c_0) for the LSTM (c_0 with hidden_size); zeros if None. Returns (output, h_n), or (output, (h_n, c_n))
        for the LSTM, shaped as torch.nn's; a PackedSequence gives a PackedSequence output and each sequence's final
        state at its own length. step_hook(layer, t, h) -> h replaces every new hidden state h_t (B, H) before anything
        uses it (unidirectional only; it runs the reference step loop).
        """
        self._update_flat_weights()
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx, step_hook)
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        batched = input.dim() == 3
        x = input.unsqueeze(1) if not batched else input.transpose(0, 1) if self.batch_first else input  # (L, B, I)
        self.check_input(x, None)
        out, finals = self._run(x, self._initial_states(hx, x, batched), None, step_hook)
        if not batched:
            out, finals = out.squeeze(1), tuple(s.squeeze(1) for s in finals)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, finals if self.num_states == 2 else finals[0]

    def _forward_packed(self, input, hx, step_hook):
        """A PackedSequence runs as its zero-padded batch in sorted order (as torch.nn, hx is given in the original
        order): each sequence's final state is taken at its own length, and the LSTM's input and forget gates are
        pinned past it (see _freeze_past_end), so padding changes no result and no gradient."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        self.check_input(data, batch_sizes)
        x, lengths, rows = _padded(data, batch_sizes)  # (T, B, I)
        states = self._initial_states(hx, x, True)
        if sorted_indices is not None:
            states = tuple(s.index_select(1, sorted_indices) for s in states)
        out, finals = self._run(x, states, lengths, step_hook)
        out = out.reshape(-1, out.shape[-1]).index_select(0, rows)  # (N, D * H_out): the packed rows
        if unsorted_indices is not None:
            finals = tuple(s.index_select(1, unsorted_indices) for s in finals)
        return (PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices),
                finals if self.num_states == 2 else finals[0])

    def _initial_states(self, hx, x, batched):
        """hx checked as torch.nn checks it -> a tuple of (num_layers * directions, B, H) tensors (zeros if None)."""
        sizes = (self.proj_size or self.hidden_size, self.hidden_size)[:self.num_states]
        shapes = [(self.num_layers * (1 + self.bidirectional), x.shape[1], size) for size in sizes]
        if hx is None:
            return tuple(x.new_zeros(shape) for shape in shapes)
        states = (hx,) if self.num_states == 1 else hx
        if not isinstance(states, (tuple, list)) or len(states) != self.num_states or not all(
                torch.is_tensor(s) for s in states):
            what = "a tuple (h_0, c_0) of tensors" if self.num_states == 2 else "a tensor"
            raise TypeError(f"{type(self).__name__}: hx must be None or {what}, got {type(hx).__name__}")
        dims = 3 if batched else 2
        for s in states:
            if s.dim() != dims:
                raise RuntimeError(f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, hx should also be "
                                   f"{dims}-D but got {s.dim()}-D tensor")
        states = tuple(s if batched else s.unsqueeze(1) for s in states)
        for k, (s, shape) in enumerate(zip(states, shapes)):
            self.check_hidden_size(s, shape, f"Expected hidden[{k}] size {{}}, got {{}}" if self.num_states == 2 else
                                   "Expected hidden size {}, got {}")
        return states

    def _weights(self, layer, direction=0):
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction, None for those the config does not have."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        return tuple(getattr(self, name + suffix, None) for name in names)

    def _run(self, x, states, lengths, step_hook):
        """x (T, B, I) -> output (T, B, D * H_out) and final states, each (num_layers * D, B, H). Under autocast, as in
        torch.nn, the input, the states and the weights are cast to the autocast dtype and everything runs in it."""
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if step_hook is not None and self.bidirectional:
            raise ValueError(f"kernels.{type(self).__name__}: step_hook needs bidirectional=False")
        weights = [self._weights(k, d) for k in range(self.num_layers) for d in range(1 + self.bidirectional)]
        dtype = _autocast_dtype(x)
        if dtype is None:
            return self._layers(x, states, weights, lengths, step_hook)

        def cast(t):
            return t if t is None or t.dtype not in SUPPORTED_DTYPES else t.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            weights = [tuple(map(cast, w)) for w in weights]
            return self._layers(cast(x), tuple(map(cast, states)), weights, lengths, step_hook)

    def _choose_path(self, x, step_hook):
        """Record in `last_path` which path this forward takes (warning once per fallback reason) -> (fused, split)."""
        reason = self.fallback_reason(x, step_hook)
        if reason is not None:
            self.last_path = f"fallback-reference: {reason}"
            self.last_kernel = {"backend": "reference", "fallback": reason}
            warn_once(f"kernels.{type(self).__name__} runs the reference step loop: {reason}", stacklevel=5)
            return False, None
        split = self.split_mode(x)
        self.last_path = f"fused-triton-split-{split}" if split else "fused-triton"
        self.last_kernel = {"backend": "triton", "fallback": None}
        return True, split

    def _layers(self, x, states, weights, lengths, step_hook):
        """Every layer and direction, with dropout between layers: x (T, B, I) -> output (T, B, D * H_out), finals."""
        for t in (*states, *(w for ws in weights for w in ws if w is not None)):
            if t.dtype != x.dtype:
                raise ValueError(f"kernels.{type(self).__name__}: input dtype {x.dtype} does not match the dtype "
                                 f"{t.dtype} of hx or a parameter")
        fused, split = self._choose_path(x, step_hook)
        self.grad_norms = None
        if fused and self.track_grad_norms:
            if self.bidirectional:
                raise ValueError(f"kernels.{type(self).__name__}: track_grad_norms needs bidirectional=False")
            self.grad_norms = torch.full((self.num_layers, *x.shape[:2]), math.nan, device=x.device)
        directions, finals = 1 + self.bidirectional, []
        for k in range(self.num_layers):
            outs = []
            for d in range(directions):
                norms = None if self.grad_norms is None else self.grad_norms[k]
                run = (x, tuple(s[k * directions + d] for s in states), weights[k * directions + d], lengths, d == 1)
                out, final = (self._direction(*run, split, norms) if fused else
                              self._direction_reference(*run, step_hook, k))
                outs.append(out)
                finals.append(final)
            x = torch.cat(outs, dim=-1) if directions == 2 else outs[0]  # (T, B, D * H_out): the next layer's input
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, tuple(torch.stack(s) for s in zip(*finals))

    def _direction(self, x, state, weights, lengths, reverse, split, norms):
        """One direction of one layer through the kernels: output (T, B, H) and final states, each (B, H)."""
        x = _reversed(x, lengths) if reverse else x
        out, c_n = self._fused_layer(x, state, weights[:4], norms, split, lengths)
        h_n = out[-1] if lengths is None else _at_lengths(out, lengths)
        return (_reversed(out, lengths) if reverse else out), (h_n,) if c_n is None else (h_n, c_n)

    def _direction_reference(self, x, state, weights, lengths, reverse, step_hook, layer):
        """One direction of one layer through the reference step loop: output (T, B, H_out) and final states."""
        x = _reversed(x, lengths) if reverse else x
        steps = reference.run_layer(lambda x_t, s: self._cell(x_t, s, weights), x, state, step_hook, layer)
        finals = tuple(s[-1] if lengths is None else _at_lengths(s, lengths) for s in steps)
        return (_reversed(steps[0], lengths) if reverse else steps[0]), finals


class RNN(_Fused, nn.RNN):
    """torch.nn.RNN (tanh or relu) with fused Triton kernels; see the module docstring for paths and limits."""

    num_states = 1
    max_fused_hidden = 128
    max_split_hidden = 1024

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, nonlinearity=nonlinearity, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional, device=device,
                         dtype=dtype)

    def _fused_layer(self, x, state, weights, norms, split, lengths):
        return RNNLayer.apply(x, *state, *weights, norms, self.nonlinearity == "relu", split)[0], None

    def _cell(self, x, state, weights):
        return (reference.rnn_cell(x, *state, *weights[:4], nonlinearity=self.nonlinearity),)


class LSTM(_Fused, nn.LSTM):
    """torch.nn.LSTM with fused Triton kernels (proj_size > 0 runs the reference step loop); see the module docstring
    for paths and limits."""

    num_states = 2

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, proj_size=proj_size, device=device, dtype=dtype)

    def _fused_layer(self, x, state, weights, norms, split, lengths):
        return LSTMLayer.apply(x, *state, *weights, norms, split, lengths)[:2]

    def _cell(self, x, state, weights):
        h, c = reference.lstm_cell(x, *state, *weights[:4])
        return (h if weights[4] is None else F.linear(h, weights[4])), c


class GRU(_Fused, nn.GRU):
    """torch.nn.GRU with fused Triton kernels; see the module docstring for paths and limits."""

    num_states = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)

    def _fused_layer(self, x, state, weights, norms, split, lengths):
        return GRULayer.apply(x, *state, *weights, norms, split)[0], None

    def _cell(self, x, state, weights):
        return (reference.gru_cell(x, *state, *weights[:4]),)
