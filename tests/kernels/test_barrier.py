"""The persistent split kernels' step barrier when it cannot be met, through the Triton interpreter (which runs programs
one after another, so with several hidden blocks a batch tile's first program waits for programs that have not started):
the first wait gives up after its patience and records where and after how many polls, every later wait sees the flag
and ends without polling, and the launcher raises BarrierTimeout with those figures, in seconds, then clears the flag.
Also the residency arithmetic the GPU launcher refuses a grid with."""

import time

import pytest
import torch

import triton
import triton.language as tl

from seqbench.kernels import fused, triton_split
from seqbench.kernels.triton_split import H100_PCIE, H100_SXM, BarrierTimeout, _grid_sync, programs_per_sm

from .test_fused import make_inputs, needs_kernels, run
from .test_split import split_module

POLLS = 200  # the interpreter's patience here: a first wait polls this often, later ones not at all


@triton.jit
def unmeetable_barrier(count_ptr, status_ptr, patience, STEPS: tl.constexpr):
    """STEPS barriers whose target is one more than the grid: none can be met."""
    for s in range(STEPS):
        _grid_sync(count_ptr, status_ptr, tl.num_programs(0) * (s + 1) + 1, s, patience)


def split_buffers(cell, T, B, H):
    """Arguments of the cell's split forward and backward launchers, random where read, NaN where written."""
    g = torch.Generator().manual_seed(0)
    G = triton_split.GATES[cell]
    randn = lambda *shape: torch.randn(shape, generator=g)  # noqa: E731
    nan = lambda *shape: torch.full(shape, float("nan"))  # noqa: E731
    w = randn(G * H, H) * 0.1
    dg = nan(T + 1, B, 4 * H if cell != "rnn" else H)
    dg[T] = 0
    if cell == "rnn":
        return ((randn(T, B, H), w, randn(T + 1, B, H), False),
                (randn(T, B, H), w, randn(T + 1, B, H), dg, None, False))
    if cell == "lstm":
        return ((randn(T, B, 4 * H), w, randn(T + 1, B, H), randn(T + 1, B, H), nan(T, B, 4 * H)),
                (randn(T, B, H), w, randn(T + 1, B, H), randn(T, B, 4 * H).sigmoid(), dg, randn(B, H), None))
    return ((randn(T, B, 3 * H), w, randn(H), randn(T + 1, B, H), nan(T, B, 4 * H)),
            (randn(T, B, H), w, randn(T + 1, B, H), randn(T, B, 4 * H).sigmoid(), dg, torch.zeros(B, H), None))


@pytest.fixture
def patience(monkeypatch):
    monkeypatch.setattr(triton_split, "INTERPRETER_POLLS", POLLS)


@needs_kernels
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_barrier_that_cannot_be_met_ends_the_launch_after_one_wait(patience, cell, direction):
    """H = 33: three hidden blocks; B = 17: two batch tiles, so six programs; T = 8 steps. Program (0, 0) gives up at
    step 0 after exactly POLLS polls; every later wait (its own seven, and every other program's) sees the flag at its
    first read and polls zero times. Before the flag, each of those waits polled its full patience."""
    T, B, H = 8, 17, 33
    launch = getattr(triton_split, f"{cell}_{direction}")
    args = split_buffers(cell, T, B, H)[direction == "backward"]
    start = time.monotonic()
    with pytest.raises(BarrierTimeout, match="not all 6 programs were resident") as caught:
        launch(*args, "persistent")
    elapsed = time.monotonic() - start
    st = caught.value.status
    assert (st["step"], st["polls"], st["program0"], st["program1"]) == (0, POLLS, 0, 0), st
    assert st["seen"] == 1 and st["target"] == 3, st  # only itself had arrived of its tile's three
    assert st["left"] >= 7 and st["left_polls"] == 0, st  # later waits: at least program (0, 0)'s own 7, no polling
    assert f"after {POLLS} polls" in str(caught.value)
    assert elapsed < 60, f"{elapsed:.1f} s"  # the interpreter's pace on a shared 2-core machine; a GPU: ~2 s
    print(f"{cell} {direction}: BarrierTimeout after {elapsed:.1f} s: {caught.value}")


@needs_kernels
def test_waits_after_the_first_give_up_do_not_poll():
    """The barrier alone: 4 programs, 5 steps, targets never met. In the interpreter program 0 waits POLLS polls at
    step 0 and gives up; every other wait (4 x 5 - 1) sees the flag at its first read. (The GPU test runs this kernel
    with %globaltimer.)"""
    status = torch.zeros(triton_split.LINE, dtype=torch.int32)
    counter = torch.zeros(triton_split.LINE, dtype=torch.int32)
    unmeetable_barrier[(4,)](counter, status, POLLS, STEPS=5)
    st = dict(zip(triton_split.STATUS_FIELDS, status.tolist()))
    assert st == {**st, "flag": 1, "step": 0, "polls": POLLS, "program0": 0, "seen": 1, "target": 5, "left": 19,
                  "left_polls": 0, "waited_us": -1}, st


@needs_kernels
def test_the_module_raises_and_the_flag_is_cleared(patience, monkeypatch):
    """Through the drop-in module: BarrierTimeout from the persistent forward; afterwards the same device's status is
    clear, so a persistent launch that can complete (one hidden block per tile) runs and matches the stepwise one."""
    monkeypatch.setattr(fused, "POISON_BUFFERS", True)
    monkeypatch.setattr(fused, "SPLIT_MODE", "persistent")
    module = split_module("lstm", 33, 1)
    x, _ = make_inputs("lstm", 2, 2, 33, 1)
    with pytest.raises(BarrierTimeout, match="not all 3 programs were resident"):
        module(x)
    assert not triton_split._status(x.device).words.any()
    x, hx = make_inputs("lstm", 3, 2, 9, 1, with_hx=True)
    results = {}
    for mode in ("persistent", "stepwise"):
        monkeypatch.setattr(fused, "SPLIT_MODE", mode)
        results[mode] = run(split_module("lstm", 9, 1), x, hx)
    for name, value in results["persistent"].items():
        assert torch.equal(value, results["stepwise"][name]), name


@pytest.mark.parametrize("registers,shared,warps,device,want", [
    (128, 163840, 16, H100_SXM, 1),  # the LSTM at KP = 512: one program a multiprocessor
    (64, 65536, 16, H100_SXM, 2),  # 2 x 512 threads x 64 registers = the register file
    (65, 65536, 16, H100_SXM, 1),  # 72 registers allocated a thread: one
    (40, 16384, 4, H100_SXM, 12),  # registers: 65536 / (4 warps x 1280); shared would allow 13, threads 16
    (32, 0, 4, H100_PCIE, 16),  # 2048 threads / 128
    (32, 116224, 4, H100_SXM, 1),  # shared memory: 2 x (116224 + 1024) > 233472
])
def test_programs_per_multiprocessor(registers, shared, warps, device, want):
    assert programs_per_sm(registers, shared, warps, device) == want


def test_cooperative_launch_is_detected_from_the_installed_triton():
    import triton

    major, minor = (int(v) for v in triton.__version__.split(".")[:2])
    assert triton_split.cooperative_launch_available() == ((major, minor) >= (3, 3))
