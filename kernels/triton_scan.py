"""Triton kernels for the elementwise linear recurrence h_t = a_t * h_{t-1} + b_t (minGRU, minLSTM: kernels.minrnn).

The recurrence couples nothing across batch rows or hidden units, so every (batch row, block of hidden units) is an
independent program that walks the time axis once, keeping its block of h in registers: one read of a_t and b_t and one
write of h_t per step, no on-chip matmul, no atomics (results are bitwise reproducible). The gates themselves (the
Linear layers and the sigmoid / g nonlinearities that make a and b) stay in torch; only the scan is a kernel.

Backward is the same recurrence run in reverse. With G_t = dL/dh_t in total (through every later step),
    G_t = dout_t + a_{t+1} G_{t+1}   (G_{T-1} = dout_{T-1}),
    dL/db_t = G_t,   dL/da_t = G_t * h_{t-1},   dL/dh_0 = a_0 G_0,
so one reverse launch reads dout, a and the saved h and writes da and db, again with nothing shared between programs.

Layouts: a, b, dout (B, T, H) contiguous, in float32, bfloat16 or float16 (loaded and converted to fp32); h0 (B, H)
float32; the states h (B, T, H) and every gradient the kernels write are float32, as is every sum. Offsets are int64,
so tensors past 2**31 elements are addressed correctly. Only APIs present since triton 3.2 are used.
"""

import os

import torch
import triton
import triton.language as tl

#: True when TRITON_INTERPRET=1 was set before this module was imported (the kernels then run on CPU tensors through
#: Triton's interpreter, as in kernels.triton_rnn).
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

#: Hidden units per program, at most; smaller hidden sizes take the next power of two (>= 16).
MAX_BLOCK = 128


@triton.jit
def _offsets(T, H, BLOCK: tl.constexpr):
    """This program's batch row and hidden block: (offset of step 0 in a (B, T, H) tensor, offset in a (B, H) tensor,
    column mask)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < H
    return row * T * H + cols, row * H + cols, mask


@triton.jit
def scan_forward_kernel(a_ptr, b_ptr, h0_ptr, h_ptr, T, H, BLOCK: tl.constexpr):
    """h_t = a_t * h_{t-1} + b_t for t = 0..T-1 from h_{-1} = h0; writes every h_t (fp32)."""
    off, off0, mask = _offsets(T, H, BLOCK)
    h = tl.load(h0_ptr + off0, mask=mask, other=0.0).to(tl.float32)
    for _ in range(T):
        a = tl.load(a_ptr + off, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + off, mask=mask, other=0.0).to(tl.float32)
        h = a * h + b
        tl.store(h_ptr + off, h, mask=mask)
        off += H


@triton.jit
def scan_backward_kernel(dout_ptr, a_ptr, h_ptr, h0_ptr, da_ptr, db_ptr, dh0_ptr, T, H, BLOCK: tl.constexpr):
    """Reverse time: G_t = dout_t + a_{t+1} G_{t+1}; writes db_t = G_t, da_t = G_t * h_{t-1} and dh0 = a_0 G_0."""
    off, off0, mask = _offsets(T, H, BLOCK)
    off += (T - 1) * H  # step T-1; walks back one step per iteration
    carry = tl.zeros((BLOCK,), dtype=tl.float32)  # a_{t+1} G_{t+1}
    for _ in range(T - 1):  # steps T-1 .. 1, whose h_{t-1} is a saved state
        grad = tl.load(dout_ptr + off, mask=mask, other=0.0).to(tl.float32) + carry
        h_prev = tl.load(h_ptr + off - H, mask=mask, other=0.0)
        tl.store(db_ptr + off, grad, mask=mask)
        tl.store(da_ptr + off, grad * h_prev, mask=mask)
        carry = tl.load(a_ptr + off, mask=mask, other=0.0).to(tl.float32) * grad
        off -= H
    # step 0, whose h_{t-1} is h0
    grad = tl.load(dout_ptr + off, mask=mask, other=0.0).to(tl.float32) + carry
    tl.store(db_ptr + off, grad, mask=mask)
    tl.store(da_ptr + off, grad * tl.load(h0_ptr + off0, mask=mask, other=0.0), mask=mask)
    tl.store(dh0_ptr + off0, tl.load(a_ptr + off, mask=mask, other=0.0).to(tl.float32) * grad, mask=mask)


# ---- launchers ------------------------------------------------------------------------------------------------------

INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check(tensors, dtypes, what):
    for t in tensors:
        if t.dtype not in dtypes or not t.is_contiguous():
            raise ValueError(f"the scan kernels need contiguous {what} tensors, got {t.dtype} with strides {t.stride()}")


def _launch(B, H):
    """The grid (batch rows, hidden blocks) and the block size: H's next power of two, between 16 and MAX_BLOCK."""
    block = min(MAX_BLOCK, max(16, triton.next_power_of_2(H)))
    return (B, triton.cdiv(H, block)), dict(BLOCK=block, num_warps=1 if block <= 32 else 2 if block <= 64 else 4)


def scan_forward(a, b, h0):
    """a, b (B, T, H) in float32/bfloat16/float16, h0 (B, H) float32 -> h (B, T, H) float32."""
    B, T, H = a.shape
    if b.shape != a.shape or h0.shape != (B, H):
        raise ValueError(f"scan_forward: a {tuple(a.shape)}, b {tuple(b.shape)}, h0 {tuple(h0.shape)} do not match")
    _check((a, b), INPUT_DTYPES, "float32/bfloat16/float16")
    _check((h0,), (torch.float32,), "float32")
    h = torch.empty(B, T, H, dtype=torch.float32, device=a.device)
    if h.numel():
        grid, cfg = _launch(B, H)
        with torch.cuda.device_of(a):
            scan_forward_kernel[grid](a, b, h0, h, T, H, **cfg)
    return h


def scan_backward(dout, a, h, h0):
    """dL/dh (B, T, H) (any of the input dtypes), a (B, T, H), the saved h (B, T, H) and h0 (B, H) float32 ->
    (da, db, dh0), all float32."""
    B, T, H = a.shape
    _check((dout, a), INPUT_DTYPES, "float32/bfloat16/float16")
    _check((h, h0), (torch.float32,), "float32")
    da = torch.empty(B, T, H, dtype=torch.float32, device=a.device)
    db = torch.empty_like(da)
    dh0 = torch.empty(B, H, dtype=torch.float32, device=a.device)
    if da.numel():
        grid, cfg = _launch(B, H)
        with torch.cuda.device_of(a):
            scan_backward_kernel[grid](dout, a, h, h0, da, db, dh0, T, H, **cfg)
    else:
        dh0.zero_()
    return da, db, dh0
