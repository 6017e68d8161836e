"""Triton kernels for the fused recurrences: one launch runs a layer's whole time loop (forward or reverse).

Each program owns a tile of BB batch rows and loads the recurrent weights W_hh once, one zero-padded (HP, HP) fp32 tile
per gate, keeping them on chip (registers, staged through shared memory for the dots) for the whole loop, so the
per-step work is tile matmuls and pointwise math with no global round trip for the weights. The input projection
x W_ih^T and the weight/input gradients are plain torch GEMMs done by the caller (kernels.fused). Programs are
independent (batch rows do not interact), so nothing ever waits on another program, and nothing is accumulated with
atomics: results are bitwise reproducible.

Layouts (all fp32, contiguous): states hs/cs (T+1, B, H) with row 0 the initial state; input projections xp (T, B, G*H);
saved activations and pre-activation gradients (T, B, G*H) or (T, B, 4H), gate k in columns [k*H, (k+1)*H).
"""

import contextlib
import inspect
import os

import torch
import triton
import triton.language as tl

#: True when TRITON_INTERPRET=1 was set before this module was imported: the kernels then run on CPU tensors through
#: Triton's interpreter (triton.jit decides between compiling and interpreting when it decorates).
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

BATCH_TILE = 16  # batch rows per program: the smallest M tl.dot takes; more programs keep more SMs busy

# Exact fp32 products (never TF32). The keyword is `input_precision` since triton 3.0, `allow_tf32` before it.
if "input_precision" in inspect.signature(tl.dot).parameters:
    @triton.jit
    def _mm(a, b):
        return tl.dot(a, b, input_precision="ieee")
else:  # pragma: no cover - older triton
    @triton.jit
    def _mm(a, b):
        return tl.dot(a, b, allow_tf32=False)


# The interpreter's tl.dot gives garbage for bfloat16 operands (triton 3.9: it multiplies the raw bits), so there a
# bfloat16 operand is rounded to bfloat16 and carried in fp32: the same products, exact in fp32, the same fp32 sums.
_EMULATE_BF16 = tl.constexpr(INTERPRET)


@triton.jit
def _operand(x, LOWP: tl.constexpr):
    """x as a tl.dot operand: fp32 (LOWP 0), bfloat16 (1) or float16 (2)."""
    if LOWP == 1:
        x = x.to(tl.bfloat16)
        if _EMULATE_BF16:
            x = x.to(tl.float32)
    elif LOWP == 2:
        x = x.to(tl.float16)
    return x


@triton.jit
def _dot(a, b, LOWP: tl.constexpr):
    """a @ b accumulated in fp32: IEEE fp32 products (LOWP 0), or, for bfloat16/float16 callers, a rounded to that
    dtype times b already in it (tensor cores; the state itself stays fp32)."""
    if LOWP == 0:
        out = _mm(a, b)
    elif LOWP == 1 and _EMULATE_BF16:
        out = _mm(_operand(a, LOWP), b)
    else:
        out = tl.dot(_operand(a, LOWP), b)
    return out


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tanh through the sigmoid: saturates cleanly (exp overflow gives exactly -1), and, unlike a sign-select form,
    # does not trip triton 3.9's LLVM SLP vectorizer (assertion failure) in the LSTM forward on sm_90.
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _load4(ptr, H, mask):
    """The four (rows, units) gate tiles at ptr, ptr + H, ptr + 2H, ptr + 3H."""
    return (tl.load(ptr, mask=mask, other=0.0), tl.load(ptr + H, mask=mask, other=0.0),
            tl.load(ptr + 2 * H, mask=mask, other=0.0), tl.load(ptr + 3 * H, mask=mask, other=0.0))


@triton.jit
def _store4(ptr, H, a, b, c, d, mask):
    tl.store(ptr, a, mask=mask)
    tl.store(ptr + H, b, mask=mask)
    tl.store(ptr + 2 * H, c, mask=mask)
    tl.store(ptr + 3 * H, d, mask=mask)


# The cells' pointwise math, shared by the one-program kernels here and the split kernels (kernels.triton_split).


@triton.jit
def _lstm_cell(pre_i, pre_f, pre_g, pre_o, c):
    """One LSTM step from the gate pre-activations and c_{t-1}: (i, f, g, o, c_t, h_t)."""
    i = _sigmoid(pre_i)
    f = _sigmoid(pre_f)
    g = _tanh(pre_g)
    o = _sigmoid(pre_o)
    c = f * c + i * g
    return i, f, g, o, c, o * _tanh(c)


@triton.jit
def _lstm_cell_backward(dh, dc, i, f, g, o, c, c_prev):
    """dL/dh_t (dh) and dL/dc_t from later steps (dc) -> gate pre-activation gradients and dL/dc_{t-1}."""
    tc = _tanh(c)
    dc += dh * o * (1.0 - tc * tc)
    return dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o), dc * f


@triton.jit
def _gru_cell(pre_r, pre_z, x_n, hn, h):
    """One GRU step from the r, z pre-activations, n's input side, hn = W_hn h + b_hn and h_{t-1}: (r, z, n, h_t)."""
    r = _sigmoid(pre_r)
    z = _sigmoid(pre_z)
    n = _tanh(x_n + r * hn)
    return r, z, n, (1.0 - z) * n + z * h


@triton.jit
def _gru_cell_backward(dh, r, z, n, hn, h_prev):
    """dL/dh_t -> (dr, dz, dn) pre-activation gradients and d(W_hn h + b_hn); dh * z is dL/dh_{t-1}'s direct part."""
    d_n = dh * (1.0 - z) * (1.0 - n * n)
    return d_n * hn * r * (1.0 - r), dh * (h_prev - n) * z * (1.0 - z), d_n, d_n * r


@triton.jit
def _tile(B, H, HP: tl.constexpr, BB: tl.constexpr):
    """This program's batch rows (BB,), the (BB, HP) validity mask, and the tile's offsets in a (B, H) slab."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.arange(0, HP)
    mask = (rows[:, None] < B) & (cols[None, :] < H)
    return rows, mask, rows[:, None] * H + cols[None, :]


@triton.jit
def _gate_offsets(B, H, G: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr):
    """Offsets of gate 0 of this program's rows in a (B, G*H) slab; gate k is at + k * H."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    return rows[:, None] * (G * H) + tl.arange(0, HP)[None, :]


@triton.jit
def _weight_tile(w_ptr, gate, H, HP: tl.constexpr, TRANSPOSED: tl.constexpr, LOWP: tl.constexpr):
    """Gate `gate`'s (H, H) block of W_hh (G*H, H), zero-padded to (HP, HP).

    TRANSPOSED: tile[k, j] = W[gate*H + j, k], the right operand of h @ W^T (forward). Otherwise tile[j, k] =
    W[gate*H + j, k], the right operand of dG @ W (backward). Zero padding keeps padded columns out of valid ones.
    """
    a = tl.arange(0, HP)[:, None]
    b = tl.arange(0, HP)[None, :]
    mask = (a < H) & (b < H)
    if TRANSPOSED:
        ptrs = w_ptr + (gate * H + b) * H + a
    else:
        ptrs = w_ptr + (gate * H + a) * H + b
    return _operand(tl.load(ptrs, mask=mask, other=0.0), LOWP)


@triton.jit
def _store_norm(norm_ptr, dh, rows, B, TRACK: tl.constexpr):
    """||dL/dh_t|| of each batch row, when TRACK."""
    if TRACK:
        tl.store(norm_ptr + rows, tl.sqrt(tl.sum(dh * dh, axis=1)), mask=rows < B)


# ---- Elman RNN ------------------------------------------------------------------------------------------------------


@triton.jit
def rnn_forward_kernel(xp_ptr, w_ptr, hs_ptr, T, B, H, RELU: tl.constexpr, LOWP: tl.constexpr, HP: tl.constexpr,
                       BB: tl.constexpr):
    """h_t = act(xp_t + h_{t-1} W^T) for t = 1..T; reads hs[0], writes hs[1..T]."""
    rows, mask, off = _tile(B, H, HP, BB)
    w = _weight_tile(w_ptr, 0, H, HP, True, LOWP)
    h = tl.load(hs_ptr + off, mask=mask, other=0.0)
    for _ in range(T):
        pre = tl.load(xp_ptr + off, mask=mask, other=0.0) + _dot(h, w, LOWP)
        h = tl.maximum(pre, 0.0) if RELU else _tanh(pre)
        hs_ptr += B * H
        tl.store(hs_ptr + off, h, mask=mask)
        xp_ptr += B * H


@triton.jit
def rnn_backward_kernel(dout_ptr, w_ptr, hs_ptr, dg_ptr, dh0_ptr, norm_ptr, T, B, H, RELU: tl.constexpr,
                        TRACK: tl.constexpr, LOWP: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr):
    """Reverse time: dG_t = (dout_t + dh_rec) * act'(pre_t) into dg[t]; dh_rec = dG_t W; finally dh0 = dh_rec.

    dout_ptr, hs_ptr (at h_t) and dg_ptr, norm_ptr are passed pointing at step T-1 and walk backwards.
    """
    rows, mask, off = _tile(B, H, HP, BB)
    w = _weight_tile(w_ptr, 0, H, HP, False, LOWP)
    dh = tl.zeros((BB, HP), dtype=tl.float32)
    for _ in range(T):
        dh += tl.load(dout_ptr + off, mask=mask, other=0.0)
        _store_norm(norm_ptr, dh, rows, B, TRACK)
        h = tl.load(hs_ptr + off, mask=mask, other=0.0)
        dpre = tl.where(h > 0, dh, 0.0) if RELU else dh * (1.0 - h * h)
        tl.store(dg_ptr + off, dpre, mask=mask)
        dh = _dot(dpre, w, LOWP)
        dout_ptr -= B * H
        hs_ptr -= B * H
        dg_ptr -= B * H
        norm_ptr -= B
    tl.store(dh0_ptr + off, dh, mask=mask)


# ---- LSTM -----------------------------------------------------------------------------------------------------------


@triton.jit
def lstm_forward_kernel(xp_ptr, w_ptr, hs_ptr, cs_ptr, act_ptr, T, B, H, LOWP: tl.constexpr, HP: tl.constexpr,
                        BB: tl.constexpr):
    """Gates (i, f, g, o); reads hs[0], cs[0], writes hs/cs[1..T] and the activations (i, f, g, o) to act (T, B, 4H)."""
    rows, mask, off = _tile(B, H, HP, BB)
    goff = _gate_offsets(B, H, 4, HP, BB)
    w_i = _weight_tile(w_ptr, 0, H, HP, True, LOWP)
    w_f = _weight_tile(w_ptr, 1, H, HP, True, LOWP)
    w_g = _weight_tile(w_ptr, 2, H, HP, True, LOWP)
    w_o = _weight_tile(w_ptr, 3, H, HP, True, LOWP)
    h = tl.load(hs_ptr + off, mask=mask, other=0.0)
    c = tl.load(cs_ptr + off, mask=mask, other=0.0)
    for _ in range(T):
        x_i, x_f, x_g, x_o = _load4(xp_ptr + goff, H, mask)
        i, f, g, o, c, h = _lstm_cell(x_i + _dot(h, w_i, LOWP), x_f + _dot(h, w_f, LOWP), x_g + _dot(h, w_g, LOWP),
                                      x_o + _dot(h, w_o, LOWP), c)
        hs_ptr += B * H
        cs_ptr += B * H
        tl.store(hs_ptr + off, h, mask=mask)
        tl.store(cs_ptr + off, c, mask=mask)
        _store4(act_ptr + goff, H, i, f, g, o, mask)
        xp_ptr += 4 * B * H
        act_ptr += 4 * B * H


@triton.jit
def lstm_backward_kernel(dout_ptr, dcn_ptr, w_ptr, cs_ptr, act_ptr, dg_ptr, dh0_ptr, dc0_ptr, norm_ptr, T, B, H,
                         TRACK: tl.constexpr, LOWP: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr):
    """Reverse time: pre-activation gradients (di, df, dg, do) into dg[t] (T, B, 4H); dh0, dc0 at the end.

    dout_ptr, act_ptr, dg_ptr, norm_ptr and cs_ptr (at c_t, so c_{t-1} is one slab back) point at step T-1.
    """
    rows, mask, off = _tile(B, H, HP, BB)
    goff = _gate_offsets(B, H, 4, HP, BB)
    w_i = _weight_tile(w_ptr, 0, H, HP, False, LOWP)
    w_f = _weight_tile(w_ptr, 1, H, HP, False, LOWP)
    w_g = _weight_tile(w_ptr, 2, H, HP, False, LOWP)
    w_o = _weight_tile(w_ptr, 3, H, HP, False, LOWP)
    dh = tl.zeros((BB, HP), dtype=tl.float32)
    dc = tl.load(dcn_ptr + off, mask=mask, other=0.0)
    for _ in range(T):
        dh += tl.load(dout_ptr + off, mask=mask, other=0.0)
        _store_norm(norm_ptr, dh, rows, B, TRACK)
        i, f, g, o = _load4(act_ptr + goff, H, mask)
        c, c_prev = tl.load(cs_ptr + off, mask=mask, other=0.0), tl.load(cs_ptr - B * H + off, mask=mask, other=0.0)
        d_i, d_f, d_g, d_o, dc = _lstm_cell_backward(dh, dc, i, f, g, o, c, c_prev)
        _store4(dg_ptr + goff, H, d_i, d_f, d_g, d_o, mask)
        dh = _dot(d_i, w_i, LOWP) + _dot(d_f, w_f, LOWP) + _dot(d_g, w_g, LOWP) + _dot(d_o, w_o, LOWP)
        dout_ptr -= B * H
        cs_ptr -= B * H
        act_ptr -= 4 * B * H
        dg_ptr -= 4 * B * H
        norm_ptr -= B
    tl.store(dh0_ptr + off, dh, mask=mask)
    tl.store(dc0_ptr + off, dc, mask=mask)


# ---- GRU ------------------------------------------------------------------------------------------------------------


@triton.jit
def gru_forward_kernel(xp_ptr, w_ptr, bhn_ptr, hs_ptr, act_ptr, T, B, H, LOWP: tl.constexpr, HP: tl.constexpr,
                       BB: tl.constexpr):
    """Gates (r, z, n), r scaling (W_hn h + b_hn); xp holds x W_ih^T + b_ih (+ b_hr, b_hz). Reads hs[0], writes
    hs[1..T] and (r, z, n, W_hn h + b_hn) to act (T, B, 4H)."""
    rows, mask, off = _tile(B, H, HP, BB)
    xoff = _gate_offsets(B, H, 3, HP, BB)
    aoff = _gate_offsets(B, H, 4, HP, BB)
    w_r = _weight_tile(w_ptr, 0, H, HP, True, LOWP)
    w_z = _weight_tile(w_ptr, 1, H, HP, True, LOWP)
    w_n = _weight_tile(w_ptr, 2, H, HP, True, LOWP)
    cols = tl.arange(0, HP)
    b_hn = tl.load(bhn_ptr + cols, mask=cols < H, other=0.0)[None, :]
    h = tl.load(hs_ptr + off, mask=mask, other=0.0)
    for _ in range(T):
        hn = _dot(h, w_n, LOWP) + b_hn
        r, z, n, h = _gru_cell(tl.load(xp_ptr + xoff, mask=mask, other=0.0) + _dot(h, w_r, LOWP),
                               tl.load(xp_ptr + xoff + H, mask=mask, other=0.0) + _dot(h, w_z, LOWP),
                               tl.load(xp_ptr + xoff + 2 * H, mask=mask, other=0.0), hn, h)
        hs_ptr += B * H
        tl.store(hs_ptr + off, h, mask=mask)
        _store4(act_ptr + aoff, H, r, z, n, hn, mask)
        xp_ptr += 3 * B * H
        act_ptr += 4 * B * H


@triton.jit
def gru_backward_kernel(dout_ptr, w_ptr, hs_ptr, act_ptr, dg_ptr, dh0_ptr, norm_ptr, T, B, H,
                        TRACK: tl.constexpr, LOWP: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr):
    """Reverse time: dg[t] (T, B, 4H) = (dr, dz, dn) pre-activation gradients of the input side, then d(W_hn h + b_hn);
    the recurrent side's gradients are (dr, dz, d(W_hn h + b_hn)). dh0 at the end.

    dout_ptr, act_ptr, dg_ptr, norm_ptr and hs_ptr (at h_{t-1}) point at step T-1.
    """
    rows, mask, off = _tile(B, H, HP, BB)
    goff = _gate_offsets(B, H, 4, HP, BB)
    w_r = _weight_tile(w_ptr, 0, H, HP, False, LOWP)
    w_z = _weight_tile(w_ptr, 1, H, HP, False, LOWP)
    w_n = _weight_tile(w_ptr, 2, H, HP, False, LOWP)
    dh = tl.zeros((BB, HP), dtype=tl.float32)
    for _ in range(T):
        dh += tl.load(dout_ptr + off, mask=mask, other=0.0)
        _store_norm(norm_ptr, dh, rows, B, TRACK)
        r, z, n, hn = _load4(act_ptr + goff, H, mask)
        d_r, d_z, d_n, d_hn = _gru_cell_backward(dh, r, z, n, hn, tl.load(hs_ptr + off, mask=mask, other=0.0))
        _store4(dg_ptr + goff, H, d_r, d_z, d_n, d_hn, mask)
        dh = dh * z + _dot(d_r, w_r, LOWP) + _dot(d_z, w_z, LOWP) + _dot(d_hn, w_n, LOWP)
        dout_ptr -= B * H
        hs_ptr -= B * H
        act_ptr -= 4 * B * H
        dg_ptr -= 4 * B * H
        norm_ptr -= B
    tl.store(dh0_ptr + off, dh, mask=mask)


# ---- launchers: shapes in, one launch out ---------------------------------------------------------------------------


def on_device(device):
    """Launch on `device` whatever the current CUDA device is: Triton launches on the current device and stream."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def check_buffers(*tensors):
    """The kernels index raw pointers, so every tensor must be contiguous float32 (None is skipped)."""
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous()):
            raise ValueError(f"fused kernels need contiguous float32 tensors, got {t.dtype} with strides {t.stride()}")


def _config(B, H, *tensors):
    """Grid over batch tiles and the compile-time sizes: H and the batch tile padded to powers of two >= 16; checks
    `tensors` with check_buffers."""
    check_buffers(*tensors)
    HP = max(16, triton.next_power_of_2(H))
    # More warps as the weight tiles grow. From HP = 64 on, 32: at 16 the float32 LSTM/GRU forwards at HP = 64 spill
    # 1.6-1.7 KB a thread under triton 3.9 and the RNN's at HP = 128 1.7 KB under 3.6; at 32 no kernel spills more
    # than 20 bytes under 3.2, 3.6 or 3.9 (kernels.compile_report, results/bench/compile/).
    num_warps = 4 if HP <= 16 else 8 if HP <= 32 else 32
    return (triton.cdiv(B, BATCH_TILE),), dict(HP=HP, BB=BATCH_TILE, num_warps=num_warps)


def _last(t):
    """Step T-1 of a (T, ...) tensor: backward kernels start there and walk back one slab per step."""
    return t[-1]


def rnn_forward(xp, w_hh, hs, relu, lowp=0):
    """xp (T, B, H), w_hh (H, H), hs (T+1, B, H) with hs[0] = h0; fills hs[1:]."""
    T, B, H = xp.shape
    grid, cfg = _config(B, H, xp, w_hh, hs)
    rnn_forward_kernel[grid](xp, w_hh, hs, T, B, H, RELU=relu, LOWP=lowp, **cfg)


def rnn_backward(dout, w_hh, hs, dg, dh0, norms, relu, lowp=0):
    """dout (T, B, H), hs (T+1, B, H) -> dg (T, B, H), dh0 (B, H); norms (T, B) or None."""
    T, B, H = dout.shape
    grid, cfg = _config(B, H, dout, w_hh, hs, dg, dh0, norms)
    track = norms is not None
    rnn_backward_kernel[grid](_last(dout), w_hh, _last(hs), _last(dg), dh0, _last(norms if track else dg), T, B, H,
                              RELU=relu, TRACK=track, LOWP=lowp, **cfg)


def lstm_forward(xp, w_hh, hs, cs, act, lowp=0):
    """xp (T, B, 4H), w_hh (4H, H), hs and cs (T+1, B, H) with row 0 set; fills hs[1:], cs[1:], act (T, B, 4H)."""
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    grid, cfg = _config(B, H, xp, w_hh, hs, cs, act)
    lstm_forward_kernel[grid](xp, w_hh, hs, cs, act, T, B, H, LOWP=lowp, **cfg)


def lstm_backward(dout, dcn, w_hh, cs, act, dg, dh0, dc0, norms, lowp=0):
    """dout (T, B, H), dcn (B, H), cs (T+1, B, H), act (T, B, 4H) -> dg (T, B, 4H), dh0, dc0 (B, H)."""
    T, B, H = dout.shape
    grid, cfg = _config(B, H, dout, dcn, w_hh, cs, act, dg, dh0, dc0, norms)
    track = norms is not None
    lstm_backward_kernel[grid](_last(dout), dcn, w_hh, _last(cs), _last(act), _last(dg), dh0, dc0,
                               _last(norms if track else dg), T, B, H, TRACK=track, LOWP=lowp, **cfg)


def gru_forward(xp, w_hh, b_hn, hs, act, lowp=0):
    """xp (T, B, 3H), w_hh (3H, H), b_hn (H,), hs (T+1, B, H) with hs[0] set; fills hs[1:] and act (T, B, 4H)."""
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    grid, cfg = _config(B, H, xp, w_hh, b_hn, hs, act)
    gru_forward_kernel[grid](xp, w_hh, b_hn, hs, act, T, B, H, LOWP=lowp, **cfg)


def gru_backward(dout, w_hh, hs, act, dg, dh0, norms, lowp=0):
    """dout (T, B, H), hs (T+1, B, H), act (T, B, 4H) -> dg (T, B, 4H), dh0 (B, H)."""
    T, B, H = dout.shape
    grid, cfg = _config(B, H, dout, w_hh, hs, act, dg, dh0, norms)
    track = norms is not None
    # hs[T-1] is h_{t-1} for t = T-1
    gru_backward_kernel[grid](_last(dout), w_hh, hs[-2], _last(act), _last(dg), dh0,
                              _last(norms if track else dg), T, B, H, TRACK=track, LOWP=lowp, **cfg)
