"""Split recurrent kernels, for hidden sizes whose W_hh does not fit on one program: the hidden units are split across
programs, each keeping only its slice of W_hh on chip.

Grid (NH, NB): program (j, b) owns hidden units [j*HB, (j+1)*HB) of batch rows [b*BB, (b+1)*BB) and keeps, for every
gate, the (KP, HB) slice of W_hh that produces (forward) or consumes (backward) those units. A step needs the whole
previous state of its batch rows, written by all NH programs of the row tile, so programs synchronise every step.
One kernel body serves two launch modes, chosen by the constexpr PERSISTENT:

- persistent (GPU): one launch runs `nsteps` steps; after each step the NH programs of a batch tile meet at a barrier
  (a per-tile arrival counter on its own 128-byte line: CTA barrier, release-add, acquire-poll). All NH*NB programs
  must be resident at once: plan() takes this mode only when the grid is at most one program per multiprocessor, the
  launcher checks that from the compiled kernel's registers and shared memory, and launches cooperatively where
  Triton can (>= 3.3: the driver then guarantees co-residency or refuses). A wait that has lasted BARRIER_TIMEOUT_S
  (%globaltimer; in the interpreter, INTERPRETER_POLLS polls) gives up and raises the device's status flag, recording
  where and after how long; every later wait, of any program, sees the flag at its first read and does not wait, so a
  launch that cannot complete ends after one wait. The launcher turns the flag into BarrierTimeout (never a hang or a
  silent wrong answer), without a host sync after every launch: see _Status. The step loop is never software-pipelined
  (num_stages=1) and each step's loads of other programs' data are masked by the last barrier's result, so no compiler
  can move them (prefetch h_t) above the barrier.
- stepwise: one launch per step (`nsteps` = 1); the launch boundary is the barrier. This is the CPU-testable sibling
  of the persistent mode, since the Triton interpreter runs programs one after another and a program waiting on a
  later one would deadlock there. It also serves grids a GPU cannot hold at once.

Which mode and batch tile (16, 32 or 64 rows) a size takes comes from LAUNCH_TABLE, derived from the compile reports
(kernels.compile_report) of every supported Triton version: docs/kernels.md says which sizes take which path and why.

Both modes run the same arithmetic in the same order, with no atomics on data, so results are deterministic.
What a step keeps in registers across steps (the LSTM cell state, or its gradient; the GRU's dh * z) goes through a
`carry` buffer at launch boundaries. Backward kernels write each step's pre-activation gradients into dg, (T+1, B, GH)
with slab T zero, and read slab t+1 for the recurrent term; dh0 = dg[0] W_hh (+ carry for the GRU) is a GEMM left to
the caller, as are the weight and input gradients. Layouts are those of kernels.triton_rnn.
"""

import dataclasses
import functools

import torch
import triton
import triton.language as tl

from .triton_rnn import (INTERPRET, _dot, _gru_cell, _gru_cell_backward, _load4, _lstm_cell, _lstm_cell_backward,
                         _operand, _store4, _tanh, check_buffers, on_device)

HIDDEN_BLOCK = 16  # hidden units per program: the smallest N tl.dot takes, so the most programs for a given H
LINE = 32  # int32 words in a 128-byte line: each arrival counter, and the status words, get a line of their own
_LINE = tl.constexpr(LINE)
# On a GPU a barrier wait is bounded by time (%globaltimer, an inline PTX read); the interpreter has no clock, so
# there `patience` counts polls.
_TIMED = tl.constexpr(not INTERPRET)
# A wait also needs this many polls before it may give up, so that a context switched out for longer than the
# patience (another process's time slice, a debugger) gives its other programs a chance to arrive once it resumes.
MIN_POLLS = tl.constexpr(4096)

# The status line (per device): words the first program to give up writes, read back by BarrierTimeout.
STATUS_FIELDS = ("flag", "step", "polls", "waited_us", "program0", "program1", "seen", "target", "left", "left_polls")
(S_STEP, S_POLLS, S_WAITED_US, S_PID0, S_PID1, S_SEEN, S_TARGET, S_LEFT, S_LEFT_POLLS) = (
    tl.constexpr(STATUS_FIELDS.index(name)) for name in STATUS_FIELDS[1:])


@triton.jit
def _clock():
    """%globaltimer in ns on a GPU; 0 in the interpreter."""
    now = 0
    if _TIMED:
        now = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False,
                                        pack=1)
    return now


@triton.jit
def _out_of_patience(start, polls, patience):
    """patience microseconds and at least MIN_POLLS polls on a GPU; patience polls in the interpreter."""
    if _TIMED:
        spent = (_clock() - start >= patience.to(tl.int64) * 1000) & (polls >= MIN_POLLS)
    else:
        spent = polls >= patience
    return spent


@triton.jit
def _grid_sync(count_ptr, status_ptr, target, step, patience):
    """Wait until `target` programs of this batch tile have arrived at the counter `count_ptr` (this one included).
    Returns 1 when they have, 0 when this wait, or any program's, gave up (the status flag is set): the caller then
    leaves its step loop, so a launch that cannot complete ends after one wait, not one wait per step."""
    tl.debug_barrier()  # every thread's stores of this step are issued before the arrival is released
    tl.atomic_add(count_ptr, 1, sem="release")
    seen = tl.atomic_add(count_ptr, 0, sem="acquire")
    failed = tl.atomic_add(status_ptr, 0, sem="relaxed")
    start = _clock()
    polls = 0
    waiting = (seen < target) & (failed == 0)
    while waiting:
        seen = tl.atomic_add(count_ptr, 0, sem="acquire")
        failed = tl.atomic_add(status_ptr, 0, sem="relaxed")
        polls += 1
        waiting = (seen < target) & (failed == 0) & (_out_of_patience(start, polls, patience) == 0)
    if (seen < target) & (failed == 0):  # this wait gave up; the first program to do so records why
        if tl.atomic_cas(status_ptr, 0, 1, sem="relaxed") == 0:
            tl.store(status_ptr + S_STEP, step)
            tl.store(status_ptr + S_POLLS, polls)
            tl.store(status_ptr + S_WAITED_US, ((_clock() - start) // 1000).to(tl.int32) if _TIMED else -1)
            tl.store(status_ptr + S_PID0, tl.program_id(0))
            tl.store(status_ptr + S_PID1, tl.program_id(1))
            tl.store(status_ptr + S_SEEN, seen)
            tl.store(status_ptr + S_TARGET, target)
    if failed != 0:  # another program gave up: leave at once
        tl.atomic_add(status_ptr + S_LEFT, 1, sem="relaxed")
        tl.atomic_add(status_ptr + S_LEFT_POLLS, polls, sem="relaxed")
    tl.debug_barrier()
    return ((seen >= target) & (failed == 0)).to(tl.int32)


@triton.jit
def _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT: tl.constexpr):
    """End of step s: in the persistent mode, the barrier of this program's batch tile (its counter on a line of its
    own). 1 to go on, 0 to leave the step loop."""
    go = tl.full((), 1, tl.int32)
    if PERSISTENT:
        go = _grid_sync(sync_ptr + tl.program_id(1) * _LINE, status_ptr, tl.num_programs(0) * (s + 1), s, patience)
    return go


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
def _load_shared(ptr, mask, go):
    """Data other programs wrote this launch: read through L2 (.cg), never from a stale L1 line. `go` is the last
    barrier's result: masking with it makes the load depend on that barrier's acquire, so no compiler can issue it
    (prefetch h_t) before the barrier has seen every program arrive."""
    return tl.load(ptr, mask=mask & (tl.broadcast_to(go, mask.shape) != 0), other=0.0, cache_modifier=".cg")


@triton.jit
def _store_sq_norm(norm_ptr, dh, rows, B, TRACK: tl.constexpr):
    """This program's share of ||dL/dh_t||^2 per batch row, at norm_ptr[program_id(0), row] ((NH, B) per step)."""
    if TRACK:
        tl.store(norm_ptr + tl.program_id(0) * B + rows, tl.sum(dh * dh, axis=1), mask=rows < B)


# A stepwise launch passes nsteps = 1, which Triton would otherwise compile as a constant: the step loop would vanish
# and both modes would be different programs (triton 3.2's ptxas then spills ~3 KB a thread in the LSTM backward).
# Kept a runtime value, both modes compile the same loop, which the compile report checks.
_step_kernel = triton.jit(do_not_specialize=["nsteps"])


# ---- Elman RNN ------------------------------------------------------------------------------------------------------


@_step_kernel
def rnn_split_forward_kernel(xp_ptr, w_ptr, hs_ptr, sync_ptr, status_ptr, nsteps, B, H, patience, RELU: tl.constexpr,
                             PERSISTENT: tl.constexpr, LOWP: tl.constexpr, KP: tl.constexpr, HB: tl.constexpr,
                             BB: tl.constexpr):
    """Steps t0 .. t0+nsteps-1, xp_ptr and hs_ptr at slab t0: reads hs[t], writes this program's block of hs[t+1]."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    full_off = rows[:, None] * H + ks[None, :]
    w = _weight_slice(w_ptr, 0, H, units, ks, True, LOWP)
    go = tl.full((), 1, tl.int32)  # the last barrier's result: 1 while every program keeps up
    for s in tl.range(0, nsteps, num_stages=1):  # never pipelined: nothing is prefetched across a barrier
        h = _load_shared(hs_ptr + full_off, full, go)
        pre = tl.load(xp_ptr + own_off, mask=own, other=0.0) + _dot(h, w, LOWP)
        hs_ptr += B * H
        tl.store(hs_ptr + own_off, tl.maximum(pre, 0.0) if RELU else _tanh(pre), mask=own)
        xp_ptr += B * H
        go = _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT)


@_step_kernel
def rnn_split_backward_kernel(dout_ptr, w_ptr, hs_ptr, dg_ptr, norm_ptr, sync_ptr, status_ptr, nsteps, B, H, patience,
                              RELU: tl.constexpr, TRACK: tl.constexpr, PERSISTENT: tl.constexpr, LOWP: tl.constexpr,
                              KP: tl.constexpr, HB: tl.constexpr, BB: tl.constexpr):
    """Steps t0, t0-1, ... with dout, dg, norm at step t0 and hs at h_{t0+1}: dh_t = dout_t + dg[t+1] W; dg[t]."""
    rows, units, ks, own, full = _split_tile(B, H, KP, HB, BB)
    own_off = rows[:, None] * H + units[None, :]
    full_off = rows[:, None] * H + ks[None, :]
    w = _weight_slice(w_ptr, 0, H, units, ks, False, LOWP)
    go = tl.full((), 1, tl.int32)  # the last barrier's result: 1 while every program keeps up
    for s in tl.range(0, nsteps, num_stages=1):  # never pipelined: nothing is prefetched across a barrier
        dg_next = _load_shared(dg_ptr + B * H + full_off, full, go)
        dh = tl.load(dout_ptr + own_off, mask=own, other=0.0) + _dot(dg_next, w, LOWP)
        _store_sq_norm(norm_ptr, dh, rows, B, TRACK)
        h = tl.load(hs_ptr + own_off, mask=own, other=0.0)
        tl.store(dg_ptr + own_off, tl.where(h > 0, dh, 0.0) if RELU else dh * (1.0 - h * h), mask=own)
        dout_ptr -= B * H
        hs_ptr -= B * H
        dg_ptr -= B * H
        norm_ptr -= tl.num_programs(0) * B
        go = _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT)


# ---- LSTM -----------------------------------------------------------------------------------------------------------


@_step_kernel
def lstm_split_forward_kernel(xp_ptr, w_ptr, hs_ptr, cs_ptr, act_ptr, sync_ptr, status_ptr, nsteps, B, H, patience,
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
    go = tl.full((), 1, tl.int32)  # the last barrier's result: 1 while every program keeps up
    for s in tl.range(0, nsteps, num_stages=1):  # never pipelined: nothing is prefetched across a barrier
        h = _load_shared(hs_ptr + full_off, full, go)
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
        go = _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT)


@_step_kernel
def lstm_split_backward_kernel(dout_ptr, w_ptr, cs_ptr, act_ptr, dg_ptr, carry_ptr, norm_ptr, sync_ptr, status_ptr,
                               nsteps, B, H, patience, TRACK: tl.constexpr, PERSISTENT: tl.constexpr,
                               LOWP: tl.constexpr, KP: tl.constexpr, HB: tl.constexpr, BB: tl.constexpr):
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
    go = tl.full((), 1, tl.int32)  # the last barrier's result: 1 while every program keeps up
    for s in tl.range(0, nsteps, num_stages=1):  # never pipelined: nothing is prefetched across a barrier
        dh = tl.load(dout_ptr + own_off, mask=own, other=0.0)
        dh += (_dot(_load_shared(dg_ptr + next_off, full, go), w_i, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + H, full, go), w_f, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + 2 * H, full, go), w_g, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + 3 * H, full, go), w_o, LOWP))
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
        go = _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT)
    tl.store(carry_ptr + own_off, dc, mask=own)


# ---- GRU ------------------------------------------------------------------------------------------------------------


@_step_kernel
def gru_split_forward_kernel(xp_ptr, w_ptr, bhn_ptr, hs_ptr, act_ptr, sync_ptr, status_ptr, nsteps, B, H, patience,
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
    go = tl.full((), 1, tl.int32)  # the last barrier's result: 1 while every program keeps up
    for s in tl.range(0, nsteps, num_stages=1):  # never pipelined: nothing is prefetched across a barrier
        h = _load_shared(hs_ptr + full_off, full, go)
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
        go = _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT)


@_step_kernel
def gru_split_backward_kernel(dout_ptr, w_ptr, hs_ptr, act_ptr, dg_ptr, carry_ptr, norm_ptr, sync_ptr, status_ptr,
                              nsteps, B, H, patience, TRACK: tl.constexpr, PERSISTENT: tl.constexpr, LOWP: tl.constexpr,
                              KP: tl.constexpr, HB: tl.constexpr, BB: tl.constexpr):
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
    go = tl.full((), 1, tl.int32)  # the last barrier's result: 1 while every program keeps up
    for s in tl.range(0, nsteps, num_stages=1):  # never pipelined: nothing is prefetched across a barrier
        dh = tl.load(dout_ptr + own_off, mask=own, other=0.0) + carry
        dh += (_dot(_load_shared(dg_ptr + next_off, full, go), w_r, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + H, full, go), w_z, LOWP)
               + _dot(_load_shared(dg_ptr + next_off + 3 * H, full, go), w_n, LOWP))
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
        go = _step_done(sync_ptr, status_ptr, s, patience, PERSISTENT)
    tl.store(carry_ptr + own_off, carry, mask=own)


# ---- launchers ------------------------------------------------------------------------------------------------------


def cdiv_hidden(H):
    """NH: the number of hidden blocks (programs along the hidden dimension)."""
    return triton.cdiv(H, HIDDEN_BLOCK)


class BarrierTimeout(RuntimeError):
    """A persistent split kernel's step barrier gave up: its programs were not all resident at once (another kernel or
    process holding multiprocessors?). The launch ended within one wait; its outputs are not valid. `status`: what
    the first program to give up recorded (STATUS_FIELDS)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class GridNotResident(RuntimeError):
    """A persistent split launch that the GPU cannot hold at once: refused before it starts."""


# ---- launch plan: which mode and batch tile, from what is known to compile and fit -----------------------------------


@dataclasses.dataclass(frozen=True)
class Device:
    """What plan() needs to know of a GPU. `arch` is 10 * major + minor; shared memory in bytes."""

    name: str
    arch: int
    multiprocessors: int
    shared_per_block: int  # the most a block can opt in to
    shared_per_sm: int
    registers_per_sm: int = 65536
    threads_per_sm: int = 2048


H100_SXM = Device("H100 SXM", 90, 132, 232448, 233472)
H100_PCIE = Device("H100 PCIe", 90, 114, 232448, 233472)
A100 = Device("A100", 80, 108, 166912, 167936)
REFERENCE_DEVICES = (H100_SXM, H100_PCIE, A100)  # the devices docs/kernels.md and the launch-table test describe


@functools.cache
def device_info(index):
    """The Device for CUDA device `index`, from torch and Triton's driver (which reports the opt-in shared memory)."""
    props = torch.cuda.get_device_properties(index)
    triton_props = triton.runtime.driver.active.utils.get_device_properties(index)
    per_block = triton_props["max_shared_mem"]
    return Device(props.name, 10 * props.major + props.minor, props.multi_processor_count, per_block,
                  getattr(props, "shared_memory_per_multiprocessor", per_block + 1024),
                  getattr(props, "regs_per_multiprocessor", 65536),
                  getattr(props, "max_threads_per_multi_processor", 2048))


def programs_per_sm(registers, shared, num_warps, device):
    """How many programs of a compiled kernel one multiprocessor holds at once (threads, registers allocated per warp
    in units of 256, shared memory plus the 1 KiB the driver reserves per block)."""
    threads = 32 * num_warps
    registers_per_warp = -(-registers * 32 // 256) * 256
    by_registers = device.registers_per_sm // (registers_per_warp * num_warps) if registers else 32
    return min(device.threads_per_sm // threads, by_registers, device.shared_per_sm // (shared + 1024), 32)


BATCH_TILES = (16, 32, 64)
# Spill stores a thread that a configuration plan() may choose can have (compile report): a few hundred bytes stay in
# L1 and cost little next to a step's barrier; kilobytes (the 64-row tiles, the RNN's 32-row bf16 tiles) do not.
SPILL_BUDGET = 512
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELLS = {G: cell for cell, G in GATES.items()}


def _table_arch(arch):
    """The compiled arch whose figures hold for `arch`: sm_80 code for every 8.x (Triton emits the same kernels for
    8.0, 8.6, 8.7, 8.9), sm_90 for 9.0; None for others (no compile table)."""
    return 80 if arch // 10 == 8 else 90 if arch == 90 else None


def batch_tiles(device, G, KP, lowp):
    """The batch tiles whose forward and backward kernels, both modes, compiled for this device's arch under every
    supported Triton version within its shared memory and the spill budget (LAUNCH_TABLE, from the compile report).
    An arch with no table gets the smallest tile only; Triton then checks the shared memory at launch."""
    table = LAUNCH_TABLE.get(_table_arch(device.arch))
    if table is None:
        return BATCH_TILES[:1]
    kib = table.get((CELLS[G], lowp), {}).get(KP, (None,) * len(BATCH_TILES))
    return tuple(BB for BB, k in zip(BATCH_TILES, kib)
                 if k is not None and k * 1024 <= device.shared_per_block and k * 1024 + 1024 <= device.shared_per_sm)


TRITON_VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])


def launch_config(G, KP, BB, lowp, triton_version=TRITON_VERSION, arch=90):
    """Constexprs and launch options of a split kernel for a compiled arch (80 or 90) and Triton version. num_stages=1:
    the step loop is never software-pipelined (its loads must stay behind the barrier; a pipelined loop multi-buffers
    the dot operands past the shared memory)."""
    # More warps as the weight slices grow; with bf16/fp16 operands the LSTM/GRU kernels spill less at 8 warps than
    # 16. Under triton 3.2 two more take 8 (from 3.3 on, 16 warps spill <= 100 bytes there and 8 warps more), from
    # the compile reports: the RNN at KP = 1024 in bf16/fp16 (356 bytes a thread, against 944 at 16 warps) and, for
    # sm_80, the fp32 LSTM at KP = 512 (236 against 3064 in the persistent backward).
    old = triton_version < (3, 3)
    at_8 = (lowp and (G > 1 or (KP >= 1024 and old))) or (old and arch < 90 and G == 4 and KP >= 512 and not lowp)
    num_warps = 4 if KP <= 32 else 8 if KP <= 64 or at_8 else 16
    return dict(KP=KP, HB=HIDDEN_BLOCK, BB=BB, num_warps=num_warps, num_stages=1)


def plan(B, H, G, device, lowp=0):
    """(mode, grid, config) for a split launch over B rows, H hidden units, G gates, on `device` (a torch.device or a
    Device). "persistent" with the smallest batch tile that fits (batch_tiles) whose grid the GPU holds at once,
    counting one program per multiprocessor; else "stepwise" with the smallest tile. CPU (the interpreter): stepwise.
    Raises ValueError where no tile fits this GPU's shared memory."""
    KP, NH = max(16, triton.next_power_of_2(H)), cdiv_hidden(H)
    if not isinstance(device, Device):
        if device.type != "cuda":
            return "stepwise", (NH, triton.cdiv(B, BATCH_TILES[0])), launch_config(G, KP, BATCH_TILES[0], lowp)
        device = device_info(device.index if device.index is not None else torch.cuda.current_device())
    tiles = batch_tiles(device, G, KP, lowp)
    arch = _table_arch(device.arch) or device.arch
    if not tiles:
        raise ValueError(f"the {CELLS[G]} split kernels at H={H} (KP={KP}, LOWP={lowp}) need more shared memory than "
                         f"{device.name} (sm_{device.arch}) gives a block ({device.shared_per_block} bytes)")
    for BB in tiles:
        if NH * triton.cdiv(B, BB) <= device.multiprocessors:
            return "persistent", (NH, triton.cdiv(B, BB)), launch_config(G, KP, BB, lowp, arch=arch)
    return "stepwise", (NH, triton.cdiv(B, tiles[0])), launch_config(G, KP, tiles[0], lowp, arch=arch)


# ---- launches -------------------------------------------------------------------------------------------------------

#: Persistent launches: "auto" launches cooperatively where the installed Triton can (>= 3.3: the driver then
#: guarantees that every program is resident at once, or refuses the launch), "off" never.
COOPERATIVE = "auto"
#: How long a persistent kernel's barrier waits for the other programs of its batch tile before giving up (GPU).
BARRIER_TIMEOUT_S = 2.0
#: The interpreter has no clock: its barriers give up after this many polls.
INTERPRETER_POLLS = 1000


@functools.cache
def cooperative_launch_available():
    """True when the installed Triton takes launch_cooperative_grid=True (3.3 and later)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_cooperative_grid" in getattr(CUDAOptions, "__dataclass_fields__", {})


class _Status:
    """A device's barrier status line: zero until a persistent launch's barrier gives up, then what the first program
    to give up recorded (STATUS_FIELDS). Sticky on the device until read here. The first persistent launch of each
    kernel and grid is checked at once (one host sync); later ones by a non-blocking copy that the next persistent
    launch reads if it has landed, or by check_barriers(); nothing is read while a CUDA graph is being captured."""

    def __init__(self, device):
        self.device = device
        self.words = torch.zeros(LINE, dtype=torch.int32, device=device)
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(LINE, dtype=torch.int32, pin_memory=True) if self.cuda else None
        self.copied, self.copied_what = None, None
        self.checked = set()

    def after_launch(self, what, key):
        """`what`: (kernel name, programs) for the message; `key`: the launch's kernel, grid and config."""
        if self.cuda and torch.cuda.is_current_stream_capturing():
            return
        if not self.cuda or key not in self.checked:
            self.checked.add(key)
            self.check(what)
            return
        self.host.copy_(self.words, non_blocking=True)
        self.copied, self.copied_what = torch.cuda.Event(), what
        self.copied.record()

    def check_landed(self):
        """Raise for an earlier launch whose status copy has landed and shows a failure; never waits."""
        if self.copied is not None and not torch.cuda.is_current_stream_capturing() and self.copied.query():
            self.copied = None
            if self.host[0].item():
                self._raise(self.copied_what, self.host.tolist())

    def check(self, what=("a persistent split kernel", "its")):
        """Raise BarrierTimeout if any launch so far gave up (waits for the device)."""
        words = self.words.tolist()
        if words[0]:
            self._raise(what, words)

    def _raise(self, what, words):
        self.words.zero_()
        if self.host is not None:
            self.host.zero_()
        status = dict(zip(STATUS_FIELDS, words))
        raise BarrierTimeout(_timeout_message(*what, status), status)


def _timeout_message(name, programs, st):
    waited = "" if st["waited_us"] < 0 else f", {st['waited_us'] / 1e6:.2f} s"
    return (f"{name}: program ({st['program0']}, {st['program1']}) gave up at step {st['step']}'s barrier after "
            f"{st['polls']} polls{waited}, with {st['seen']} of {st['target']} arrivals; {st['left']} later barrier "
            f"wait(s) saw its flag and ended after {st['left_polls']} polls in all: not all {programs} programs "
            f"were resident (another process or kernel holding multiprocessors?); "
            f"SEQBENCH_SPLIT_MODE=stepwise runs one launch per step instead")


_statuses = {}


def _status(device):
    key = (device.type, device.index)
    if key not in _statuses:
        _statuses[key] = _Status(device)
    return _statuses[key]


def check_barriers(device=None):
    """Raise BarrierTimeout if a persistent launch on `device` (default: every device used) gave up; waits for the
    device. For launches whose failure was not yet reported: those inside a captured CUDA graph, and the last ones."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    for (kind, index), status in list(_statuses.items()):
        if device is None or (kind, index) == (device.type, device.index):
            status.check()


def _check_resident(kernel, args, options, grid):
    """Refuse a persistent launch whose grid the GPU cannot hold at once, judged from the compiled kernel's own
    registers, shared memory and warps (compiled here as the launch will use it; Triton caches it)."""
    device = args[0].device
    compiled = kernel.warmup(*args, grid=grid, **options)
    compiled._init_handles()  # loads the binary: n_regs, and Triton's own shared-memory check (OutOfResources)
    info = device_info(device.index)
    per_sm = programs_per_sm(compiled.n_regs, compiled.metadata.shared, compiled.metadata.num_warps, info)
    programs = grid[0] * grid[1]
    if programs > per_sm * info.multiprocessors:
        raise GridNotResident(
            f"{kernel.fn.__name__}: a persistent grid of {programs} programs, but {info.name} holds {per_sm} per "
            f"multiprocessor x {info.multiprocessors} ({compiled.n_regs} registers a thread, "
            f"{compiled.metadata.shared} bytes of shared memory, {compiled.metadata.num_warps} warps); "
            f"SEQBENCH_SPLIT_MODE=stepwise or auto runs it")


def _persistent(kernel, grid, cfg, T, pointers, sizes, constexprs):
    """One launch running all T steps, its programs meeting at a barrier after each."""
    device = pointers[0].device
    status = _status(device)
    if status.cuda:
        status.check_landed()
    counters = torch.zeros(grid[1] * LINE, dtype=torch.int32, device=device)  # one line per batch tile
    patience = INTERPRETER_POLLS if INTERPRET else int(BARRIER_TIMEOUT_S * 1e6)
    args = (*pointers, counters, status.words, T, *sizes, patience)
    options = dict(PERSISTENT=True, **constexprs, **cfg)
    cooperative = status.cuda and COOPERATIVE == "auto" and cooperative_launch_available()
    if cooperative:
        options["launch_cooperative_grid"] = True
    if status.cuda:
        _check_resident(kernel, args, options, grid)
    what = (kernel.fn.__name__, grid[0] * grid[1])
    try:
        kernel[grid](*args, **options)
    except RuntimeError as e:
        if cooperative and "cooperative" in str(e).lower():
            raise GridNotResident(f"{what[0]}: the driver refused the cooperative launch ({e}); "
                                  f"SEQBENCH_SPLIT_MODE=stepwise runs one launch per step instead") from e
        raise
    status.after_launch(what, (kernel.fn.__name__, grid, tuple(sorted(cfg.items()))))


def _run(kernel, mode, grid, cfg, T, at_step, sizes, walk_back=False, **constexprs):
    """Launch `kernel` over T steps on the tensors' device (whatever the current one). at_step(t) -> the pointer
    arguments at step t, sizes = (B, H); persistent: one launch from the first step; stepwise: one launch per step, in
    time order (reversed when walk_back)."""
    device = at_step(0)[0].device
    with on_device(device):
        if mode == "persistent":
            _persistent(kernel, grid, cfg, T, at_step(T - 1 if walk_back else 0), sizes, constexprs)
            return
        unused = _status(device).words  # the barrier's buffers: not read by a stepwise launch
        for t in (range(T - 1, -1, -1) if walk_back else range(T)):
            kernel[grid](*at_step(t), unused, unused, 1, *sizes, 0, PERSISTENT=False, **constexprs, **cfg)


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


# ---- launch table ---------------------------------------------------------------------------------------------------

# Generated by `python -m seqbench.kernels.compile_report --table results/bench/compile/sm*-triton*.json` from the committed
# compile reports; tests/kernels/test_compile_table.py checks it against them. Per compiled arch and (cell, LOWP): for
# each padded width KP, the shared memory in KiB of the batch tiles 16, 32, 64 (worst over Triton versions, directions
# and modes), None where a kernel spills past SPILL_BUDGET or does not fit the arch's reference device.
LAUNCH_TABLE = {
    80: {  # sm_80, A100 limits; triton 3.2.0, 3.6.0, 3.9.0
        ('gru', 0): {16: (5, 6, 7), 32: (8, 10, None), 64: (16, 20, None), 128: (32, 40, None), 256: (64, 80, None),
            512: (128, None, None)},
        ('gru', 1): {16: (4, 5, 8), 32: (5, 7, 11), 64: (10, 14, 22), 128: (20, 28, 44), 256: (40, 56, None), 512: (80,
            None, None)},
        ('gru', 2): {16: (4, 5, 8), 32: (5, 7, 11), 64: (10, 14, 22), 128: (20, 28, 44), 256: (40, 56, None), 512: (80,
            None, None)},
        ('lstm', 0): {16: (6, 7, 8), 32: (10, 12, 16), 64: (20, 24, None), 128: (40, 48, None), 256: (80, 96, None),
            512: (160, None, None)},
        ('lstm', 1): {16: (6, 8, 11), 32: (7, 9, 13), 64: (12, 16, 24), 128: (24, 32, None), 256: (48, None, None), 512:
            (96, None, None)},
        ('lstm', 2): {16: (6, 8, 11), 32: (7, 9, 13), 64: (12, 16, 24), 128: (24, 32, None), 256: (48, None, None), 512:
            (96, None, None)},
        ('rnn', 0): {16: (2, 4, 5), 32: (4, 6, 10), 64: (8, 12, None), 128: (16, 24, 40), 256: (32, 48, 80), 512: (64,
            96, None), 1024: (128, None, None)},
        ('rnn', 1): {16: (3, 5, 8), 32: (4, 6, 10), 64: (6, 10, 18), 128: (12, 20, 36), 256: (24, 40, 72), 512: (48, 80,
            None), 1024: (96, None, None)},
        ('rnn', 2): {16: (3, 5, 8), 32: (4, 6, 10), 64: (6, 10, 18), 128: (12, 20, 36), 256: (24, 40, 72), 512: (48, 80,
            None), 1024: (96, None, None)},
    },
    90: {  # sm_90, H100 SXM limits; triton 3.2.0, 3.6.0, 3.9.0
        ('gru', 0): {16: (5, 6, 7), 32: (8, 10, None), 64: (16, 20, None), 128: (32, 40, None), 256: (64, 80, None),
            512: (128, None, None)},
        ('gru', 1): {16: (4, 5, 10), 32: (5, 7, 12), 64: (10, 14, 22), 128: (20, 28, 44), 256: (40, 56, None), 512: (80,
            None, None)},
        ('gru', 2): {16: (4, 5, 10), 32: (5, 7, 12), 64: (10, 14, 22), 128: (20, 28, 44), 256: (40, 56, None), 512: (80,
            None, None)},
        ('lstm', 0): {16: (6, 7, 8), 32: (10, 12, 16), 64: (20, 24, None), 128: (40, 48, None), 256: (80, 96, None),
            512: (160, None, None)},
        ('lstm', 1): {16: (6, 8, 11), 32: (7, 9, 13), 64: (12, 16, 24), 128: (24, 32, None), 256: (48, 64, None), 512:
            (96, None, None)},
        ('lstm', 2): {16: (6, 8, 11), 32: (7, 9, 13), 64: (12, 16, 24), 128: (24, 32, None), 256: (48, 64, None), 512:
            (96, None, None)},
        ('rnn', 0): {16: (2, 4, 5), 32: (4, 6, 10), 64: (8, 12, 20), 128: (16, 24, 40), 256: (32, 48, 80), 512: (64, 96,
            160), 1024: (128, 192, None)},
        ('rnn', 1): {16: (3, 5, 8), 32: (4, 6, 10), 64: (6, 10, 18), 128: (12, 20, 36), 256: (24, 40, 72), 512: (48,
            None, None), 1024: (96, None, None)},
        ('rnn', 2): {16: (3, 5, 8), 32: (4, 6, 10), 64: (6, 10, 18), 128: (12, 20, 36), 256: (24, 40, 72), 512: (48,
            None, None), 1024: (96, None, None)},
    },
}
