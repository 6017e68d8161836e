"""The split kernels (hidden units spread over programs that meet every step), through the Triton interpreter: the
stepwise mode against the float64 reference loop and torch.nn in outputs and every gradient, at small sizes forced onto
the split path (max_fused_hidden = 0) so that several hidden blocks and batch tiles interact; the persistent mode's
barrier where the interpreter can run it (one hidden block per batch tile; its time-out is in test_barrier.py); the path
the auto mode takes above the one-program limit; determinism and ||dL/dh_t||."""

import pytest
import torch

from seqbench.kernels import as_reference, fused

from .test_fused import (REF, RTOL_GRAD, RTOL_HALF, RTOL_OUT, TORCH, assert_all_close, build, cast, make_inputs,
                         needs_kernels, reference_grad_norms, run, twin)

pytestmark = needs_kernels


@pytest.fixture(autouse=True)
def poison_buffers(monkeypatch):
    monkeypatch.setattr(fused, "POISON_BUFFERS", True)


@pytest.fixture
def split_mode(monkeypatch):
    def set_mode(mode):
        monkeypatch.setattr(fused, "SPLIT_MODE", mode)
    return set_mode


def split_module(arch, H, L, **kwargs):
    module = build(arch, H, L, **kwargs)
    module.max_fused_hidden = 0  # every size takes the split kernels
    return module


def case(arch, B, T, H, L, *, bf=False, hx=False, bias=True):
    tags = [arch, "unbatched" if B is None else f"B{B}", f"T{T}", f"H{H}", f"L{L}"]
    tags += ["bf"] * bf + ["hx"] * hx + ["nobias"] * (not bias)
    return pytest.param(arch, B, T, H, L, bf, hx, bias, id="-".join(tags))


# H=33 spans three hidden blocks of 16 (the last one 1 unit wide); B=17 two batch tiles; T=1 a single step.
CASES = [
    case("lstm", 3, 4, 33, 2, hx=True),
    case("lstm", 17, 2, 20, 1, bf=True),
    case("lstm", 1, 1, 5, 1, hx=True, bias=False),
    case("gru", 17, 3, 33, 1, hx=True),
    case("gru", 2, 3, 20, 2, bf=True, bias=False),
    case("gru", None, 2, 7, 2),
    case("rnn-tanh", 5, 3, 33, 2, bf=True, hx=True),
    case("rnn-relu", 17, 2, 17, 1),
    case("rnn-relu", 1, 1, 3, 2, hx=True, bias=False),
]


@pytest.mark.parametrize("arch,B,T,H,L,batch_first,with_hx,bias", CASES)
def test_stepwise_matches_reference_and_torch(split_mode, arch, B, T, H, L, batch_first, with_hx, bias):
    split_mode("stepwise")
    module = split_module(arch, H, L, bias=bias, batch_first=batch_first)
    x, hx = make_inputs(arch, B, T, H, L, batch_first, with_hx)
    got = run(module, x, hx)
    assert module.last_path == "fused-triton-split-stepwise"
    for name, classes in (("reference", REF), ("torch.nn", TORCH)):
        want = run(twin(module, classes), *cast(x, hx, torch.float64))
        assert_all_close(want, got, RTOL_OUT, RTOL_GRAD, f"split vs float64 {name}")


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-tanh"])
def test_persistent_barrier_with_one_block_per_tile(split_mode, arch):
    """H <= 16: one hidden block, so each program waits only on itself and the interpreter can run the barrier code;
    B = 19 gives two batch tiles, each with its own counter. Same numbers as the stepwise mode, bitwise."""
    x, hx = make_inputs(arch, 19, 3, 9, 2, with_hx=True)
    results = {}
    for mode in ("persistent", "stepwise"):
        split_mode(mode)
        module = split_module(arch, 9, 2)
        results[mode] = run(module, x, hx)
        assert module.last_path == f"fused-triton-split-{mode}"
    for name, value in results["persistent"].items():
        assert torch.equal(value, results["stepwise"][name]), name
    want = run(twin(module, REF), *cast(x, hx, torch.float64))
    assert_all_close(want, results["persistent"], RTOL_OUT, RTOL_GRAD, "persistent vs float64 reference")


@pytest.mark.parametrize("arch,H", [("lstm", 65), ("gru", 65), ("rnn-tanh", 129)])
def test_auto_takes_the_split_kernels_above_the_one_program_limit(split_mode, arch, H):
    """The natural sizes just past each one-program limit; on CPU (no multiprocessors to be resident on) the auto mode
    is stepwise."""
    split_mode("auto")
    module = build(arch, H, 1)
    x, hx = make_inputs(arch, 2, 2, H, 1, with_hx=True)
    got = run(module, x, hx)
    assert module.last_path == "fused-triton-split-stepwise"
    want = run(twin(module, REF), *cast(x, hx, torch.float64))
    assert_all_close(want, got, RTOL_OUT, RTOL_GRAD, f"{arch} H={H} vs float64 reference")


def test_unknown_split_mode_is_an_error(split_mode):
    split_mode("sometimes")
    module = split_module("gru", 5, 1)
    with pytest.raises(ValueError, match="SPLIT_MODE='sometimes' .SEQBENCH_SPLIT_MODE.: expected one of auto, persistent, stepwise"):
        module(make_inputs("gru", 2, 2, 5, 1)[0])


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-relu"])
def test_split_gradients_are_bitwise_deterministic(split_mode, arch):
    split_mode("stepwise")
    module = split_module(arch, 20, 2)
    x, hx = make_inputs(arch, 18, 3, 20, 2, with_hx=True)
    first, second = run(module, x, hx), run(module, x, hx)
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-tanh"])
def test_split_grad_norms_are_total_gradients(split_mode, arch):
    """||dL/dh_t|| summed over two hidden blocks' shares equals the reference loop's probe gradient norm."""
    split_mode("stepwise")
    B, T, H, L = 3, 3, 20, 2
    module = split_module(arch, H, L)
    module.track_grad_norms = True
    x, hx = make_inputs(arch, B, T, H, L, with_hx=True)
    run(module, x, hx)
    assert module.grad_norms.shape == (L, T, B)
    want = reference_grad_norms(module, x, hx)
    torch.testing.assert_close(module.grad_norms.double(), want, rtol=RTOL_GRAD, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-tanh"])
def test_split_half_precision_in_and_out(split_mode, arch, dtype):
    """Half-precision modules: recurrent products from operands rounded to the dtype, fp32 state and sums, results in
    the dtype."""
    split_mode("stepwise")
    module = split_module(arch, 20, 2, dtype=dtype)
    x, hx = make_inputs(arch, 3, 4, 20, 2, with_hx=True, dtype=dtype)
    got = run(module, x, hx)
    assert all(t.dtype == dtype for t in got.values())
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    assert_all_close(want, got, RTOL_HALF[dtype], RTOL_HALF[dtype], f"split {dtype} vs float64 reference")
