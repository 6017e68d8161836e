"""Recurrent layers per backend, forward+backward: pytest-benchmark over the shapes of `seqbench bench`.

On a GPU: B=64, T=1024, H in 64..512, float32 and bfloat16, timed with CUDA synchronisation and the GPU recorded in
machine info. On a CPU (CI, `--benchmark-disable`) the same code runs once at tiny sizes, the Triton kernels through
the interpreter, so every correctness check still executes. No number is recorded for a kernel that fails its check.
"""

import pytest
import torch

from harness.bench import TOLERANCE, build, check, forward_backward, make_inputs
from kernels import as_reference

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
SHAPES = ([(64, 1024, h) for h in (64, 128, 256, 512)] if GPU else [(3, 5, 8)])  # (B, T, H)
DTYPES = ["float32", "bfloat16"] if GPU else ["float32"]


def sync():
    if GPU:
        torch.cuda.synchronize()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,H", SHAPES, ids=[f"B{b}-T{t}-H{h}" for b, t, h in SHAPES])
@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_forward_backward(benchmark, cell, backend, B, T, H, dtype):
    if backend == "reference" and GPU and H > 128:
        pytest.skip("the reference step loop is the specification, timed at small sizes only")
    state, x, w = make_inputs(cell, B, T, H, DEVICE, dtype)
    module = build(cell, backend, state, H, DEVICE, getattr(torch, dtype))
    reference = as_reference(build(cell, "torch", state, H, DEVICE, torch.float32)).double()
    err = check(module, reference, x, w, dtype)
    assert err <= TOLERANCE[dtype], f"{cell}/{backend}: relative error {err:.2e}: not timed"
    benchmark.group = f"{cell}-B{B}-T{T}-H{H}-{dtype}"
    benchmark.extra_info.update(path=getattr(module, "last_path", None) or backend, max_rel_err=err,
                                device=torch.cuda.get_device_name() if GPU else "cpu", tokens=B * T)
    xd = x.to(getattr(torch, dtype))

    def step():
        forward_backward(module, xd, w)
        sync()

    benchmark.pedantic(step, rounds=20 if GPU else 3, warmup_rounds=3 if GPU else 1)
