"""Recurrent layers per backend, forward+backward: pytest-benchmark over the shapes of `seqbench bench`.

On a GPU: B=64, T=1024, H in 64..512, float32 and bfloat16, timed with CUDA synchronisation and the GPU recorded in
machine info. On a CPU (CI, `--benchmark-disable`) the same code runs once at tiny sizes, the Triton kernels through
the interpreter, so every correctness check still executes. No number is recorded for a kernel that fails its check:
the check runs before timing, and every timed round's own output and gradients are checked again (untimed, in the
round's teardown), so a kernel that goes wrong once warm, or a timed call that differs from the checked one, fails.
"""

import pytest
import torch

from seqbench.harness.bench import TOLERANCE, build, check, forward_backward, make_inputs
from seqbench.kernels import as_reference
from seqbench.kernels.testing import rel_err

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
SHAPES = ([(64, 1024, h) for h in (64, 128, 256, 512)] if GPU else [(3, 5, 8)])  # (B, T, H)
DTYPES = ["float32", "bfloat16"] if GPU else ["float32"]


def sync():
    if GPU:
        torch.cuda.synchronize()


def max_rel_err(want, got) -> float:
    """Largest relative error of the output and every gradient, each an (output, grads) pair from forward_backward."""
    want, got = (want[0], *want[1]), (got[0], *got[1])
    assert len(got) == len(want), f"{len(got)} tensors, reference {len(want)}"
    return max(rel_err(r, g) for r, g in zip(want, got))


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
    want = forward_backward(reference, x.double(), w.double())
    xd = x.to(getattr(torch, dtype))
    timed = {}

    def step():
        timed["result"] = forward_backward(module, xd, w)
        sync()

    def still_correct():  # untimed; an error in a teardown marks the benchmark failed, so its number is not saved
        err = max_rel_err(want, timed.pop("result"))
        assert err <= TOLERANCE[dtype], f"{cell}/{backend}: relative error {err:.2e} in a timed round"

    benchmark.pedantic(step, teardown=still_correct, rounds=20 if GPU else 3, warmup_rounds=3 if GPU else 1)
    if "result" in timed:  # --benchmark-disable calls step once, without the teardown
        still_correct()
