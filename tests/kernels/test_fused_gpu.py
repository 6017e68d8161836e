"""The fused kernels compiled on a CUDA GPU: long sequences (T = 1024) in float32, bfloat16 and float16 against the
float64 reference loop on the same values, every gradient, bitwise-deterministic gradients over many batch tiles, and
||dL/dh_t||; the split kernels' persistent mode (programs meeting at a barrier every step, which the interpreter cannot
run) at sizes up to their limits, and against their stepwise mode. Skipped where CUDA is absent (the interpreter runs
the same kernels in test_fused.py and test_split.py)."""

import pytest
import torch

from kernels import as_reference

from .test_fused import assert_all_close, build, cast, make_inputs, reference_grad_norms, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

T_LONG = 1024
# Looser than the interpreter tests' 1e-5 / 1e-4: fp32 rounding of 1024 recurrent steps and of 20k-row gradient GEMMs.
RTOL_OUT_LONG, RTOL_GRAD_LONG = 1e-4, 1e-3
# Sizes at the fused limits and awkward ones below them; B = 20 spans two batch tiles.
SIZES = [pytest.param("lstm", 64, id="lstm-H64"), pytest.param("lstm", 33, id="lstm-H33"),
         pytest.param("gru", 64, id="gru-H64"), pytest.param("gru", 17, id="gru-H17"),
         pytest.param("rnn-tanh", 128, id="rnn-tanh-H128"), pytest.param("rnn-relu", 33, id="rnn-relu-H33")]


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """The torch GEMMs beside the kernels follow torch's float32 matmul precision: keep them IEEE (no TF32)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("arch,H", SIZES)
def test_long_sequence_float32(arch, H):
    module = build(arch, H, 2, device="cuda", batch_first=True)
    x, hx = make_inputs(arch, 20, T_LONG, H, 2, batch_first=True, with_hx=True, device="cuda")
    got = run(module, x, hx)
    assert module.last_path == "fused-triton"
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    assert_all_close(want, got, RTOL_OUT_LONG, RTOL_GRAD_LONG, f"{arch} H={H} T={T_LONG} fp32")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("arch,H", SIZES)
def test_long_sequence_half_precision(arch, H, dtype):
    """Half-precision parameters and inputs: fp32 inside, so only the boundary roundings differ from float64."""
    module = build(arch, H, 2, device="cuda", dtype=dtype)
    x, hx = make_inputs(arch, 20, T_LONG, H, 2, with_hx=True, device="cuda", dtype=dtype)
    got = run(module, x, hx)
    assert module.last_path == "fused-triton"
    assert all(t.dtype == dtype for t in got.values())
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    assert_all_close(want, got, 1e-2, 1e-2, f"{arch} H={H} T={T_LONG} {dtype}")


DETERMINISM = [pytest.param(arch, 64, 300, 2, "fused-triton", id=f"{arch}-H64-B300")
               for arch in ("lstm", "gru", "rnn-tanh")]
# B = 256 at H = 512: 4 batch tiles of 64 rows x 32 hidden blocks, persistent
DETERMINISM += [pytest.param(arch, 512, 256, 1, "fused-triton-split-persistent", id=f"{arch}-H512-B256")
                for arch in ("lstm", "gru", "rnn-relu")]


@pytest.mark.parametrize("arch,H,B,L,path", DETERMINISM)
def test_gradients_are_bitwise_deterministic(arch, H, B, L, path):
    module = build(arch, H, L, device="cuda")
    x, hx = make_inputs(arch, B, 256, H, L, with_hx=True, device="cuda")  # B = 300: 19 batch tiles of 16
    first, second = run(module, x, hx), run(module, x, hx)
    assert module.last_path == path
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("H", [33, 200], ids=["H33", "H200-split"])
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-relu"])
def test_grad_norms_are_total_gradients(arch, H):
    B, T, L = 5, 64, 2
    module = build(arch, H, L, device="cuda")
    module.track_grad_norms = True
    x, hx = make_inputs(arch, B, T, H, L, with_hx=True, device="cuda")
    run(module, x, hx)
    assert module.last_path.startswith("fused-triton-split-" if H > 128 else "fused-triton")
    want = reference_grad_norms(module, x, hx)
    torch.testing.assert_close(module.grad_norms.double(), want, rtol=1e-4, atol=1e-6)


# ---- split kernels (hidden sizes above the one-program limits) ------------------------------------------------------

SPLIT_SIZES = [pytest.param("lstm", 512, id="lstm-H512"), pytest.param("lstm", 100, id="lstm-H100"),
               pytest.param("gru", 512, id="gru-H512"), pytest.param("gru", 257, id="gru-H257"),
               pytest.param("rnn-tanh", 1024, id="rnn-tanh-H1024"), pytest.param("rnn-relu", 200, id="rnn-relu-H200")]


@pytest.fixture
def split_mode(monkeypatch):
    from kernels import fused

    def set_mode(mode):
        monkeypatch.setattr(fused, "SPLIT_MODE", mode)
    return set_mode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("arch,H", SPLIT_SIZES)
def test_split_long_sequence(arch, H, dtype):
    """B = 64 at these sizes fits the H100/H200 multiprocessors at once, so the auto mode runs persistent."""
    module = build(arch, H, 2, device="cuda", dtype=dtype)
    x, hx = make_inputs(arch, 64, T_LONG, H, 2, with_hx=True, device="cuda", dtype=dtype)
    got = run(module, x, hx)
    assert module.last_path == "fused-triton-split-persistent"
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    rtol_out, rtol_grad = (RTOL_OUT_LONG, RTOL_GRAD_LONG) if dtype == torch.float32 else (1e-2, 1e-2)
    assert_all_close(want, got, rtol_out, rtol_grad, f"{arch} H={H} T={T_LONG} {dtype}")


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-tanh"])
def test_split_persistent_equals_stepwise(split_mode, arch):
    """The two launch modes run the same step body on the same tiles: the same numbers."""
    module = build(arch, 256, 2, device="cuda")
    x, hx = make_inputs(arch, 64, 128, 256, 2, with_hx=True, device="cuda")
    results = {}
    for mode in ("persistent", "stepwise"):
        split_mode(mode)
        results[mode] = run(module, x, hx)
        assert module.last_path == f"fused-triton-split-{mode}"
    for name, value in results["persistent"].items():
        torch.testing.assert_close(value, results["stepwise"][name], rtol=1e-6, atol=0, msg=name)
