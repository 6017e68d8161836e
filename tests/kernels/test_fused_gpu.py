"""The fused kernels compiled on a CUDA GPU: long sequences (T = 1024) in float32, bfloat16 and float16 against the
float64 reference loop on the same values, every gradient, bitwise-deterministic gradients over many batch tiles, and
||dL/dh_t||; the split kernels' persistent mode (programs meeting at a barrier every step, which the interpreter cannot
run) at sizes up to their limits, and against their stepwise mode. Skipped where CUDA is absent (the interpreter runs
the same kernels in test_fused.py and test_split.py)."""

import itertools
import time

import pytest
import torch

from seqbench.kernels import as_reference, fused, triton_split

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


DETERMINISM = [pytest.param(arch, 64, 300, 2, id=f"{arch}-H64-B300") for arch in ("lstm", "gru", "rnn-tanh")]
# B = 256 at H = 512: 32 hidden blocks; the GRU and RNN fit 64-row tiles (128 programs, persistent on an H100), the
# LSTM's 64-row tile does not fit the shared memory, so it runs stepwise.
DETERMINISM += [pytest.param(arch, 512, 256, 1, id=f"{arch}-H512-B256") for arch in ("lstm", "gru", "rnn-relu")]


def planned_path(module, x):
    """The path `module` must record for input x: the one-program kernels, or the split plan for this GPU."""
    if module.hidden_size <= module.max_fused_hidden:
        return "fused-triton"
    gates = module.weight_hh_l0.shape[0] // module.hidden_size
    batch = x.shape[0] if module.batch_first else x.shape[1]
    return "fused-triton-split-" + triton_split.plan(batch, module.hidden_size, gates, x.device,
                                                      fused._lowp(x.dtype))[0]


@pytest.mark.parametrize("arch,H,B,L", DETERMINISM)
def test_gradients_are_bitwise_deterministic(arch, H, B, L):
    module = build(arch, H, L, device="cuda")
    x, hx = make_inputs(arch, B, 256, H, L, with_hx=True, device="cuda")  # B = 300: 19 batch tiles of 16
    first, second = run(module, x, hx), run(module, x, hx)
    assert module.last_path == planned_path(module, x)
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
    from seqbench.kernels import fused

    def set_mode(mode):
        monkeypatch.setattr(fused, "SPLIT_MODE", mode)
    return set_mode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("arch,H", SPLIT_SIZES)
def test_split_long_sequence(arch, H, dtype):
    """B = 64: persistent on an H100/H200 at these sizes (at most 64 hidden blocks x 4 batch tiles of 16)."""
    module = build(arch, H, 2, device="cuda", dtype=dtype)
    x, hx = make_inputs(arch, 64, T_LONG, H, 2, with_hx=True, device="cuda", dtype=dtype)
    got = run(module, x, hx)
    assert module.last_path == planned_path(module, x)
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


# ---- every launch plan the split kernels can take on this GPU -------------------------------------------------------

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Per padded width KP, hidden sizes from its fewest hidden blocks to its most; every batch size up to 256.
PLAN_H = sorted({H for KP in (128, 256, 512, 1024) for H in (KP // 2 + 1, 3 * KP // 4, KP)} | {65, 100})
PLAN_B = range(1, 257)


def plan_paths():
    """One (arch, H, B, dtype) for each distinct launch plan the split kernels can choose on this GPU at H = 65..1024,
    B <= 256: (cell, mode, padded width, batch tile, operand precision); the smallest B * H that takes it."""
    if not torch.cuda.is_available():
        return []
    device, seen, cases = torch.device("cuda"), set(), []
    limits = {"rnn-tanh": fused.RNN, "lstm": fused.LSTM, "gru": fused.GRU}
    sizes = sorted(itertools.product(PLAN_H, PLAN_B), key=lambda hb: (hb[0] * hb[1], hb))
    for (arch, module), (name, dtype), (H, B) in itertools.product(limits.items(), DTYPES.items(), sizes):
        if not module.max_fused_hidden < H <= module.max_split_hidden:
            continue
        G = {"rnn-tanh": 1, "lstm": 4, "gru": 3}[arch]
        mode, _, cfg = triton_split.plan(B, H, G, device, fused._lowp(dtype))
        path = (arch, mode, cfg["KP"], cfg["BB"], name)  # one compiled kernel pair and launch mode
        if path not in seen:
            seen.add(path)
            cases.append(pytest.param(arch, H, B, dtype, mode,
                                      id=f"{arch}-{mode}-KP{cfg['KP']}-BB{cfg['BB']}-H{H}-B{B}-{name}"))
    return cases


@pytest.mark.parametrize("arch,H,B,dtype,mode", plan_paths())
def test_every_launch_plan_at_t1024(arch, H, B, dtype, mode):
    """T = 1024, one layer, against the float64 reference loop: every plan this GPU's split kernels can choose."""
    module = build(arch, H, 1, device="cuda", dtype=dtype)
    x, hx = make_inputs(arch, B, T_LONG, H, 1, with_hx=True, device="cuda", dtype=dtype)
    got = run(module, x, hx)
    assert module.last_path == f"fused-triton-split-{mode}"
    triton_split.check_barriers()
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    rtol_out, rtol_grad = (RTOL_OUT_LONG, RTOL_GRAD_LONG) if dtype == torch.float32 else (1e-2, 1e-2)
    assert_all_close(want, got, rtol_out, rtol_grad, f"{arch} H={H} B={B} T={T_LONG} {dtype} {mode}")


@pytest.mark.parametrize("cooperative", ["auto", "off"])
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn-tanh"])
def test_cooperative_and_plain_launches_agree(monkeypatch, arch, cooperative):
    """The persistent mode with and without a cooperative launch (where this Triton has one): the same numbers as the
    stepwise mode, bitwise."""
    if cooperative == "auto" and not triton_split.cooperative_launch_available():
        pytest.skip("this Triton has no cooperative launch (< 3.3)")
    monkeypatch.setattr(triton_split, "COOPERATIVE", cooperative)
    module = build(arch, 512, 1, device="cuda")
    x, hx = make_inputs(arch, 48, 256, 512, 1, with_hx=True, device="cuda")  # 32 x 3 programs: fits 108+ SMs
    results = {}
    for mode in ("persistent", "stepwise"):
        monkeypatch.setattr(fused, "SPLIT_MODE", mode)
        results[mode] = run(module, x, hx)
        assert module.last_path == f"fused-triton-split-{mode}"
    triton_split.check_barriers()
    for name, value in results["persistent"].items():
        assert torch.equal(value, results["stepwise"][name]), name


def test_a_grid_the_gpu_cannot_hold_is_refused_before_it_starts(monkeypatch):
    """Persistent forced on a grid of 32 x 64 programs (H = 512, B = 1024): refused from the compiled kernel's
    resources, before any launch."""
    monkeypatch.setattr(fused, "SPLIT_MODE", "persistent")
    module = build("lstm", 512, 1, device="cuda")
    x, _ = make_inputs("lstm", 1024, 8, 512, 1, device="cuda")
    with pytest.raises(triton_split.GridNotResident, match="holds 1 per multiprocessor"):
        module(x)


def test_a_cooperative_launch_the_gpu_cannot_hold_is_refused(monkeypatch):
    """The residency check bypassed, a persistent grid of 2048 programs launched cooperatively: the driver refuses it
    at once (GridNotResident), rather than the barrier finding out."""
    if not triton_split.cooperative_launch_available():
        pytest.skip("this Triton has no cooperative launch (< 3.3)")
    monkeypatch.setattr(triton_split, "_check_resident", lambda *args: None)
    monkeypatch.setattr(fused, "SPLIT_MODE", "persistent")
    module = build("lstm", 512, 1, device="cuda")
    x, _ = make_inputs("lstm", 1024, 8, 512, 1, device="cuda")
    with pytest.raises(triton_split.GridNotResident, match="refused the cooperative launch"):
        module(x)


def test_the_barrier_gives_up_on_time_and_later_waits_do_not_wait():
    """The persistent kernels' barrier on the GPU (test_barrier.py runs the same kernel in the interpreter): 64
    programs, 100 steps, a target never met. The waits of step 0 give up after BARRIER_TIMEOUT_S of %globaltimer (and
    at least MIN_POLLS polls); every wait of the 99 later steps sees the flag at its first read. One patience in all,
    not 100."""
    from .test_barrier import unmeetable_barrier

    status = torch.zeros(triton_split.LINE, dtype=torch.int32, device="cuda")
    counter = torch.zeros(triton_split.LINE, dtype=torch.int32, device="cuda")
    start = time.monotonic()
    unmeetable_barrier[(64,)](counter, status, 500_000, STEPS=100)  # patience 0.5 s
    torch.cuda.synchronize()
    elapsed = time.monotonic() - start
    st = dict(zip(triton_split.STATUS_FIELDS, status.tolist()))
    print(f"{elapsed:.2f} s: {st}")
    assert st["flag"] == 1 and st["step"] == 0 and st["polls"] >= 4096 and 500_000 <= st["waited_us"] < 1_000_000
    assert st["left"] >= 64 * 99 and st["left_polls"] == 0, st
    assert elapsed < 3


def test_no_host_sync_after_the_first_launch_and_graph_capture(monkeypatch):
    """After the first (checked) persistent launch of a configuration, later ones do not synchronize the host, so a
    CUDA graph can capture the persistent forward; its replay gives the eager numbers and check_barriers() passes."""
    monkeypatch.setattr(fused, "SPLIT_MODE", "persistent")
    module = build("gru", 256, 1, device="cuda").requires_grad_(False)
    x = torch.randn(64, 16, 5, device="cuda")
    eager = module(x)[0].clone()  # the first launch: checked at once
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        module(x)  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = module(x)[0]
    graph.replay()
    torch.cuda.synchronize()
    triton_split.check_barriers()
    assert torch.equal(captured, eager)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_split_launches_follow_the_tensors_device():
    """A module on cuda:1 while cuda:0 is current: the kernels run on cuda:1 (Triton launches on the current device)."""
    module = build("lstm", 200, 1, device="cuda:1")
    x, hx = make_inputs("lstm", 8, 32, 200, 1, with_hx=True, device="cuda:1")
    with torch.cuda.device(0):
        got = run(module, x, hx)
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    assert_all_close(want, got, RTOL_OUT_LONG, RTOL_GRAD_LONG, "lstm on cuda:1")
