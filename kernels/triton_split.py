"""Split recurrent kernels, for hidden sizes whose W_hh does not fit on one program: the hidden units are split across
programs, each keeping only its slice of W_hh on chip.

Grid (NH, NB): program (j, b) owns hidden units [j*HB, (j+1)*HB) of batch rows [b*BB, (b+1)*BB) and keeps, for every
gate, the (KP, HB) slice of W_hh that produces (forward) or consumes (backward) those units. A step needs the whole
previous state of its batch rows, written by all NH programs of the row tile, so programs synchronise every step.
One kernel body serves two launch modes, chosen by the constexpr PERSISTENT:

- persistent (GPU): one launch runs `nsteps` steps; after each step the NH programs of a batch tile meet at a barrier
  (a per-tile arrival counter: CTA barrier, release-add, acquire-poll). All NH*NB programs must be resident at once,
  so the launcher only takes this mode when the grid is at most the GPU's multiprocessor count. A barrier that has
  waited `MAX_SPINS` polls gives up and raises a flag; the launcher turns it into an error (never a hang or a silent
  wrong answer).
- stepwise: one launch per step (`nsteps` = 1); the launch boundary is the barrier. This is the CPU-testable sibling
  of the persistent mode, since the Triton interpreter runs programs one after another and a program waiting on a
  later one would deadlock there. It also serves GPUs where the grid would not be co-resident.

Both modes run the same arithmetic in the same order, with no atomics on data, so results are deterministic.
What a step keeps in registers across steps (the LSTM cell state, or its gradient; the GRU's dh * z) goes through a
`carry` buffer at launch boundaries. Backward kernels write each step's pre-activation gradients into dg, (T+1, B, GH)
with slab T zero, and read slab t+1 for the recurrent term; dh0 = dg[0] W_hh (+ carry for the GRU) is a GEMM left to
the caller, as are the weight and input gradients. Layouts are those of kernels.triton_rnn.
"""

import torch
import triton
import triton.language as tl

from .triton_rnn import (_dot, _gru_cell, _gru_cell_backward, _load4, _lstm_cell, _lstm_cell_backward, _operand,
                         _store4, _tanh, check_buffers)

HIDDEN_BLOCK = 16  # hidden units per program: the smallest N tl.dot takes, so the most programs for a given H
MAX_SPINS = tl.constexpr(1 << 24)  # barrier polls (each an L2 round trip, ~1 us) before giving up: seconds, not forever


@triton.jit
def _grid_sync(sync_ptr, err_ptr, target):
    """Wait until `target` programs of this batch tile have arrived at the counter `sync_ptr` (this one included)."""
    tl.debug_barrier()  # every thread's stores of this step are issued before the arrival is released
    tl.atomic_add(sync_ptr, 1, sem="release")
    seen = tl.atomic_add(sync_ptr, 0, sem="acquire")
    spins = 0
    while (seen < target) & (spins < MAX_SPINS):
        seen = tl.atomic_add(sync_ptr, 0, sem="acquire")
        spins += 1
    if seen < target:
        tl.atomic_xchg(err_ptr, 1)
    tl.debug_barrier()


@triton.jit
def _step_done(sync_ptr, err_ptr, NB, s, PERSISTENT: tl.constexpr):
    """End of step s: in the persistent mode, the barrier of this program's batch tile."""
    if PERSISTENT:
        _grid_sync(sync_ptr + tl.program_id(1), err_ptr + NB, tl.num_programs(0) * (s + 1))


@triton.jit
def _split_tile(B, H, KP: tl.constexpr, HB: tl.constexpr, BB: tl.constexpr):
    """This program's batch rows (BB,), hidden units (HB,), the full-width column range (KP,), and the masks of its
    own (BB, HB) block and of its rows' full (BB, KP) state."""
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    units = tl.program_id(0) * HB + tl.arange(0, HB)
    ks = tl.arange(0, KP)
    own = (rows[:, None] < B) & (units[None, :] < H)
    full = (rows[:, None] < B) & (ks[None, :] < H)
    return rows, units, ks, own, full


@triton.jit
def _weight_slice(w_ptr, gate, H, units, ks, FORWARD: tl.constexpr, LOWP: tl.constexpr):
    """Gate `gate`'s (KP, HB) slice of W_hh (G*H, H), zero-padded.

    FORWARD: tile[k, u] = W[gate*H + u, k], so h (BB, KP) @ tile gives this program's pre-activations. Otherwise
    tile[k, u] = W[gate*H + k, u], so dG (BB, KP) @ tile gives this program's units of dG W.
    """
    mask = (ks[:, None] < H) & (units[None, :] < H)
    if FORWARD:
        ptrs = w_ptr + (gate * H + units[None, :]) * H + ks[:, None]
    else:
        ptrs = w_ptr + (gate * H + ks[:, None]) * H + units[None, :]
    return _operand(tl.load(ptrs, mask=mask, other=0.0), LOWP)


@triton.jit
def _load_shared(ptr, mask):
    """Data other programs wrote this launch: read through L2 (.cg), never from a stale L1 line."""
    return tl.load(ptr, mask=mask, other=0.0, cache_modifier=".cg")


@triton.jit
def _store_sq_norm(norm_ptr, dh, rows, B, TRACK: tl.constexpr):
    """This program's share of ||dL/dh_t||^2 per batch row, at norm_ptr[program_id(0), row] ((NH, B) per step)."""
    if TRACK:
        tl.store(norm_ptr + tl.program_id(0) * B + rows, tl.sum(dh * dh, axis=1), mask=rows < B)


# ---- Elman RNN ------------------------------------------------------------------------------------------------------


@triton.jit
def rnn_split_forward_kernel(xp_ptr, w_ptr, hs_ptr, sync_ptr, nsteps, B, H, NB, RELU: tl.constexpr,
                             PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr, HB: tl.constexpr,
                             BB: tl.constexpr):
    """Steps t0 .. t0+nsteps-1, xp_ptr and hs_ptr at slab t0: reads hs[t], writes this program's block of hs[t+1]."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    full_off = rows[:, None] * H + ks[None, :]
    w = _weight_slice(w_ptr, 0, H, units, ks, True, LOWP)
    for s in range(nsteps):
        pre = tl.load(xp_ptr + own_off, mask=own, other=0.0) + _dot(_load_shared(hs_ptr + full_off, full), w, LOWP)
        hs_ptr += B * H
        tl.store(hs_ptr + own_off, tl.maximum(pre, 0.0) if RELU else _tanh(pre), mask=own)
        xp_ptr += B * H
        _step_done(sync_ptr, sync_ptr, NB, s, PERSISTENT)


@triton.jit
def rnn_split_backward_kernel(dout_ptr, w_ptr, hs_ptr, dg_ptr, norm_ptr, sync_ptr, nsteps, B, H, NB, RELU: tl.constexpr,
                              TRACK: tl.constexpr, PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr,
                              HB: tl.constexpr, BB: tl.constexpr):
    """Steps t0, t0-1, ... with dout, dg, norm at step t0 and hs at h_{t0+1}: dh_t = dout_t + dg[t+1] W; dg[t]."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    full_off = rows[:, None] * H + ks[None, :]
    w = _weight_slice(w_ptr, 0, H, units, ks, False, LOWP)
    for s in range(nsteps):
        dg_next = _load_shared(dg_ptr + B * H + full_off, full)
        dh = tl.load(dout_ptr + own_off, mask=own, other=0.0) + _dot(dg_next, w, LOWP)
        _store_sq_norm(norm_ptr, dh, rows, B, TRACK)
        h = tl.load(hs_ptr + own_off, mask=own, other=0.0)
        tl.store(dg_ptr + own_off, tl.where(h > 0, dh, 0.0) if RELU else dh * (1.0 - h * h), mask=own)
        dout_ptr -= B * H
        hs_ptr -= B * H
        dg_ptr -= B * H
        norm_ptr -= tl.num_programs(0) * B
        _step_done(sync_ptr, sync_ptr, NB, s, PERSISTENT)


# ---- LSTM -----------------------------------------------------------------------------------------------------------


@triton.jit
def lstm_split_forward_kernel(xp_ptr, w_ptr, hs_ptr, cs_ptr, act_ptr, sync_ptr, nsteps, B, H, NB,
                              PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr, HB: tl.constexpr,
                              BB: tl.constexpr):
    """Gates (i, f, g, o); xp, act at step t0, hs and cs at slab t0 (read), this program's block of slab t+1 written."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    full_off = rows[:, None] * H + ks[None, :]
    gate_off = rows[:, None] * (4 * H) + units[None, :]
    w_i = _weight_slice(w_ptr, 0, H, units, ks, True, LOWP)
    w_f = _weight_slice(w_ptr, 1, H, units, ks, True, LOWP)
    w_g = _weight_slice(w_ptr, 2, H, units, ks, True, LOWP)
    w_o = _weight_slice(w_ptr, 3, H, units, ks, True, LOWP)
    c = tl.load(cs_ptr + own_off, mask=own, other=0.0)
    for s in range(nsteps):
        h = _load_shared(hs_ptr + full_off, full)
        x_i, x_f, x_g, x_o = _load4(xp_ptr + gate_off, H, own)
        i, f, g, o, c, h_own = _lstm_cell(x_i + _dot(h, w_i, LOWP), x_f + _dot(h, w_f, LOWP),
                                          x_g + _dot(h, w_g, LOWP), x_o + _dot(h, w_o, LOWP), c)
        hs_ptr += B * H
        cs_ptr += B * H
        tl.store(hs_ptr + own_off, h_own, mask=own)
        tl.store(cs_ptr + own_off, c, mask=own)
        _store4(act_ptr + gate_off, H, i, f, g, o, own)
        xp_ptr += 4 * B * H
        act_ptr += 4 * B * H
        _step_done(sync_ptr, sync_ptr, NB, s, PERSISTENT)


@triton.jit
def lstm_split_backward_kernel(dout_ptr, w_ptr, cs_ptr, act_ptr, dg_ptr, carry_ptr, norm_ptr, sync_ptr, nsteps, B, H,
                               NB, TRACK: tl.constexpr, PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr,
                               HB: tl.constexpr, BB: tl.constexpr):
    """Steps t0, t0-1, ...: dout, act, dg, norm at step t0, cs at c_{t0+1}; carry holds dL/dc_{t0+1} (in) and
    dL/dc of the last step's input state (out)."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    gate_off = rows[:, None] * (4 * H) + units[None, :]
    next_off = rows[:, None] * (4 * H) + ks[None, :] + 4 * B * H  # gate 0 of dg[t+1], full width
    w_i = _weight_slice(w_ptr, 0, H, units, ks, False, LOWP)
    w_f = _weight_slice(w_ptr, 1, H, units, ks, False, LOWP)
    w_g = _weight_slice(w_ptr, 2, H, units, ks, False, LOWP)
    w_o = _weight_slice(w_ptr, 3, H, units, ks, False, LOWP)
    dc = tl.load(carry_ptr + own_off, mask=own, other=0.0)
    for s in range(nsteps):
        dh = tl.load(dout_ptr + own_off, mask=own, other=0.0)
        dh += (_dot(_load_shared(dg_ptr + next_off, full), w_i, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + H, full), w_f, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + 2 * H, full), w_g, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + 3 * H, full), w_o, LOWP))
        _store_sq_norm(norm_ptr, dh, rows, B, TRACK)
        i, f, g, o = _load4(act_ptr + gate_off, H, own)
        c = tl.load(cs_ptr + own_off, mask=own, other=0.0)
        c_prev = tl.load(cs_ptr - B * H + own_off, mask=own, other=0.0)
        d_i, d_f, d_g, d_o, dc = _lstm_cell_backward(dh, dc, i, f, g, o, c, c_prev)
        _store4(dg_ptr + gate_off, H, d_i, d_f, d_g, d_o, own)
        dout_ptr -= B * H
        cs_ptr -= B * H
        act_ptr -= 4 * B * H
        dg_ptr -= 4 * B * H
        norm_ptr -= tl.num_programs(0) * B
        _step_done(sync_ptr, sync_ptr, NB, s, PERSISTENT)
    tl.store(carry_ptr + own_off, dc, mask=own)


# ---- GRU ------------------------------------------------------------------------------------------------------------


@triton.jit
def gru_split_forward_kernel(xp_ptr, w_ptr, bhn_ptr, hs_ptr, act_ptr, sync_ptr, nsteps, B, H, NB,
                             PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr, HB: tl.constexpr,
                             BB: tl.constexpr):
    """Gates (r, z, n), r scaling (W_hn h + b_hn); xp (x W_ih^T + b_ih + b_hr, b_hz) and act at step t0, hs at slab
    t0: reads hs[t], writes this program's block of hs[t+1] and of act (r, z, n, W_hn h + b_hn)."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    full_off = rows[:, None] * H + ks[None, :]
    x_off = rows[:, None] * (3 * H) + units[None, :]
    a_off = rows[:, None] * (4 * H) + units[None, :]
    w_r = _weight_slice(w_ptr, 0, H, units, ks, True, LOWP)
    w_z = _weight_slice(w_ptr, 1, H, units, ks, True, LOWP)
    w_n = _weight_slice(w_ptr, 2, H, units, ks, True, LOWP)
    b_hn = tl.load(bhn_ptr + units, mask=units < H, other=0.0)[None, :]
    for s in range(nsteps):
        h = _load_shared(hs_ptr + full_off, full)
        hn = _dot(h, w_n, LOWP) + b_hn
        r, z, n, h_own = _gru_cell(tl.load(xp_ptr + x_off, mask=own, other=0.0) + _dot(h, w_r, LOWP),
                                   tl.load(xp_ptr + x_off + H, mask=own, other=0.0) + _dot(h, w_z, LOWP),
                                   tl.load(xp_ptr + x_off + 2 * H, mask=own, other=0.0), hn,
                                   tl.load(hs_ptr + own_off, mask=own, other=0.0))
        hs_ptr += B * H
        tl.store(hs_ptr + own_off, h_own, mask=own)
        _store4(act_ptr + a_off, H, r, z, n, hn, own)
        xp_ptr += 3 * B * H
        act_ptr += 4 * B * H
        _step_done(sync_ptr, sync_ptr, NB, s, PERSISTENT)


@triton.jit
def gru_split_backward_kernel(dout_ptr, w_ptr, hs_ptr, act_ptr, dg_ptr, carry_ptr, norm_ptr, sync_ptr, nsteps, B, H, NB,
                              TRACK: tl.constexpr, PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr,
                              HB: tl.constexpr, BB: tl.constexpr):
    """Steps t0, t0-1, ...: dout, act, dg, norm at step t0, hs at h_{t0} (the step's input state); carry holds the
    pointwise part dh * z of dL/dh passed back from step t0+1 (in) and from the last step (out). dg[t] is
    (dr, dz, dn, d(W_hn h + b_hn)); the recurrent side uses columns of r, z and W_hn h."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    gate_off = rows[:, None] * (4 * H) + units[None, :]
    next_off = rows[:, None] * (4 * H) + ks[None, :] + 4 * B * H
    w_r = _weight_slice(w_ptr, 0, H, units, ks, False, LOWP)
    w_z = _weight_slice(w_ptr, 1, H, units, ks, False, LOWP)
    w_n = _weight_slice(w_ptr, 2, H, units, ks, False, LOWP)
    carry = tl.load(carry_ptr + own_off, mask=own, other=0.0)
    for s in range(nsteps):
        dh = tl.load(dout_ptr + own_off, mask=own, other=0.0) + carry
        dh += (_dot(_load_shared(dg_ptr + next_off, full), w_r, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + H, full), w_z, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + 3 * H, full), w_n, LOWP))
        _store_sq_norm(norm_ptr, dh, rows, B, TRACK)
        r, z, n, hn = _load4(act_ptr + gate_off, H, own)
        d_r, d_z, d_n, d_hn = _gru_cell_backward(dh, r, z, n, hn, tl.load(hs_ptr + own_off, mask=own, other=0.0))
        _store4(dg_ptr + gate_off, H, d_r, d_z, d_n, d_hn, own)
        carry = dh * z
        dout_ptr -= B * H
        hs_ptr -= B * H
        act_ptr -= 4 * B * H
        dg_ptr -= 4 * B * H
        norm_ptr -= tl.num_programs(0) * B
        _step_done(sync_ptr, sync_ptr, NB, s, PERSISTENT)
    tl.store(carry_ptr + own_off, carry, mask=own)


# ---- launchers ------------------------------------------------------------------------------------------------------


def cdiv_hidden(H):
    """NH: the number of hidden blocks (programs along the hidden dimension)."""
    return triton.cdiv(H, HIDDEN_BLOCK)


class BarrierTimeout(RuntimeError):
    """A persistent split kernel's programs were not all resident (another kernel or process holding SMs?)."""


def plan(B, H, G, device, lowp=0):
    """(mode, grid, constexprs) for a split launch: "persistent" when the grid fits the GPU's multiprocessors at once,
    else "stepwise". The batch tile grows (16 .. 64 rows) until the grid fits, if it can."""
    KP, HB = max(16, triton.next_power_of_2(H)), HIDDEN_BLOCK
    NH = cdiv_hidden(H)
    slots = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0
    BB = 16
    while NH * triton.cdiv(B, BB) > slots and BB < 64:
        BB *= 2
    fits = NH * triton.cdiv(B, BB) <= slots
    if not fits:
        BB = 16  # stepwise: the most programs
    # Compiled offline for sm_90 (triton 3.9) at these warp counts, every split kernel keeps its weight slices in
    # shared memory and runs without register spills for KP <= 512 (the RNN's to 1024); with bf16/fp16 operands the
    # LSTM/GRU kernels spill less at 8 warps than at 16 (none up to KP = 256, <= 40 bytes a thread at 512).
    num_warps = 4 if KP <= 32 else 8 if KP <= 64 or (lowp and G > 1) else 16
    mode = "persistent" if fits else "stepwise"
    return mode, (NH, triton.cdiv(B, BB)), dict(KP=KP, HB=HB, BB=BB, num_warps=num_warps)


def _run(kernel, mode, grid, cfg, T, at_step, sizes, walk_back=False, **constexprs):
    """Launch `kernel` over T steps. at_step(t) -> the pointer arguments at step t, sizes = (B, H); persistent: one
    launch from the first step; stepwise: one launch per step, in time order (reversed when walk_back)."""
    device = at_step(0)[0].device
    NB = grid[1]
    sync = torch.zeros(NB + 1, dtype=torch.int32, device=device)  # arrival counter per batch tile, then error flag
    if mode == "persistent":
        first = T - 1 if walk_back else 0
        kernel[grid](*at_step(first), sync, T, *sizes, NB, PERSISTENT=True, **constexprs, **cfg)
        if sync[NB].item():
            raise BarrierTimeout(f"{kernel.fn.__name__}: a step barrier gave up after {MAX_SPINS.value} polls: not all "
                                 f"{grid[0] * grid[1]} programs were resident (is another process using the GPU?); "
                                 f"SEQBENCH_SPLIT_MODE=stepwise runs one launch per step instead")
        return
    for t in (range(T - 1, -1, -1) if walk_back else range(T)):
        kernel[grid](*at_step(t), sync, 1, *sizes, NB, PERSISTENT=False, **constexprs, **cfg)


def rnn_forward(xp, w_hh, hs, relu, mode, lowp=0):
    """xp (T, B, H), w_hh (H, H), hs (T+1, B, H) with hs[0] = h0; fills hs[1:]."""
    T, B, H = xp.shape
    check_buffers(xp, w_hh, hs)
    _, grid, cfg = plan(B, H, 1, xp.device, lowp)
    _run(rnn_split_forward_kernel, mode, grid, cfg, T, lambda t: (xp[t], w_hh, hs[t]), sizes=(B, H), LOWP=lowp,
         RELU=relu)


def rnn_backward(dout, w_hh, hs, dg, norms, relu, mode, lowp=0):
    """dout (T, B, H), hs (T+1, B, H), dg (T+1, B, H) with dg[T] = 0 -> dg[:T]; norms (T, NH, B) squared or None."""
    T, B, H = dout.shape
    check_buffers(dout, w_hh, hs, dg, norms)
    _, grid, cfg = plan(B, H, 1, dout.device, lowp)
    track = norms is not None
    _run(rnn_split_backward_kernel, mode, grid, cfg, T,
         lambda t: (dout[t], w_hh, hs[t + 1], dg[t], norms[t] if track else dg[t]), walk_back=True, sizes=(B, H),
         LOWP=lowp, RELU=relu, TRACK=track)


def lstm_forward(xp, w_hh, hs, cs, act, mode, lowp=0):
    """xp (T, B, 4H), hs and cs (T+1, B, H) with row 0 set; fills hs[1:], cs[1:] and act (T, B, 4H)."""
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    check_buffers(xp, w_hh, hs, cs, act)
    _, grid, cfg = plan(B, H, 4, xp.device, lowp)
    _run(lstm_split_forward_kernel, mode, grid, cfg, T, lambda t: (xp[t], w_hh, hs[t], cs[t], act[t]), sizes=(B, H),
         LOWP=lowp)


def lstm_backward(dout, w_hh, cs, act, dg, carry, norms, mode, lowp=0):
    """dout (T, B, H), cs (T+1, B, H), act (T, B, 4H), dg (T+1, B, 4H) with dg[T] = 0, carry (B, H) = dL/dc_T ->
    dg[:T] and carry = dL/dc_0."""
    T, B, H = dout.shape
    check_buffers(dout, w_hh, cs, act, dg, carry, norms)
    _, grid, cfg = plan(B, H, 4, dout.device, lowp)
    track = norms is not None
    _run(lstm_split_backward_kernel, mode, grid, cfg, T,
         lambda t: (dout[t], w_hh, cs[t + 1], act[t], dg[t], carry, norms[t] if track else dg[t]), walk_back=True,
         sizes=(B, H), LOWP=lowp, TRACK=track)


def gru_forward(xp, w_hh, b_hn, hs, act, mode, lowp=0):
    """xp (T, B, 3H), b_hn (H,), hs (T+1, B, H) with hs[0] set; fills hs[1:] and act (T, B, 4H)."""
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    check_buffers(xp, w_hh, b_hn, hs, act)
    _, grid, cfg = plan(B, H, 3, xp.device, lowp)
    _run(gru_split_forward_kernel, mode, grid, cfg, T, lambda t: (xp[t], w_hh, b_hn, hs[t], act[t]), sizes=(B, H),
         LOWP=lowp)


def gru_backward(dout, w_hh, hs, act, dg, carry, norms, mode, lowp=0):
    """dout (T, B, H), hs (T+1, B, H), act (T, B, 4H), dg (T+1, B, 4H) with dg[T] = 0, carry (B, H) zero ->
    dg[:T] and carry = the pointwise part of dL/dh_0."""
    T, B, H = dout.shape
    check_buffers(dout, w_hh, hs, act, dg, carry, norms)
    _, grid, cfg = plan(B, H, 3, dout.device, lowp)
    track = norms is not None
    _run(gru_split_backward_kernel, mode, grid, cfg, T,
         lambda t: (dout[t], w_hh, hs[t], act[t], dg[t], carry, norms[t] if track else dg[t]), walk_back=True,
         sizes=(B, H), LOWP=lowp, TRACK=track)
