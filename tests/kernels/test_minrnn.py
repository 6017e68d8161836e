"""minGRU / minLSTM (kernels.minrnn): the torch log-space scan and the Triton scan kernels (through the interpreter on
CPU) against the float64 reference step loop, to the tolerances of the other kernels: outputs 1e-5 and every gradient
1e-4 relative in float32."""

import warnings

import pytest
import torch

from seqbench.kernels import _support, minrnn
from seqbench.kernels.testing import rel_err

from .test_fused import RTOL_GRAD, RTOL_OUT

triton_scan = minrnn.load_triton()[0]
needs_kernels = pytest.mark.skipif(triton_scan is None or not (triton_scan.INTERPRET or torch.cuda.is_available()),
                                   reason="the Triton scan kernels need a GPU or TRITON_INTERPRET=1")
KINDS = ["gru", "lstm"]
PATHS = {"reference": "reference-loop", "scan": "scan-torch", "triton": "fused-triton"}


def layer(kind, I, H, seed=0, bias=True):
    torch.manual_seed(seed)
    return minrnn.LAYERS[kind](I, H, bias=bias, dtype=torch.float64)


def run(module, backend, x, h0=None, dtype=torch.float32, w=None):
    """Output, last state and the gradients of x, h0 and every parameter for the loss <out, w>, in `dtype`."""
    m = minrnn.LAYERS[module.kind](module.input_size, module.hidden_size, bias=module.bias is not None,
                                   backend=backend, dtype=dtype)
    m.load_state_dict(module.state_dict())
    x = x.detach().to(dtype).requires_grad_()
    h = None if h0 is None else h0.detach().to(dtype).requires_grad_()
    out, last = m(x, h)
    w = torch.ones_like(out) if w is None else w.to(dtype)
    inputs = [x, *([h] if h is not None else []), *m.parameters()]
    grads = torch.autograd.grad((out * w).sum(), inputs)
    return m, {"out": out, "last": last, **{f"d{i}": g for i, g in enumerate(grads)}}


def check(kind, B, T, I, H, backend, with_h0=False, seed=0):
    module = layer(kind, I, H, seed)
    torch.manual_seed(seed + 1)
    x, w = torch.randn(B, T, I, dtype=torch.float64), torch.randn(B, T, H, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64) if with_h0 else None  # negative values included
    _, want = run(module, "reference", x, h0, torch.float64, w)
    m, got = run(module, backend, x, h0, torch.float32, w)
    assert m.kernel_path == PATHS[backend]
    for name in want:
        err = rel_err(want[name], got[name])
        assert err <= (RTOL_GRAD if name.startswith("d") else RTOL_OUT), (name, err)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("B, T, I, H, with_h0", [
    (3, 37, 5, 7, False),    # T past the scan's 16-step blocks, not a multiple of them
    (2, 1, 4, 16, True),     # one step
    (1, 16, 3, 130, True),   # batch 1; H past the kernels' 128-unit block, not a power of two
    (4, 64, 8, 33, True),
])
@pytest.mark.parametrize("backend", ["scan", pytest.param("triton", marks=needs_kernels)])
def test_matches_the_float64_reference(kind, B, T, I, H, with_h0, backend):
    check(kind, B, T, I, H, backend, with_h0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ["reference", "scan", pytest.param("triton", marks=needs_kernels)])
def test_the_last_state_continues_the_sequence(kind, backend):
    module = layer(kind, 4, 6).float()
    module.backend = backend
    x = torch.randn(2, 40, 4)
    whole, _ = module(x)
    first, h = module(x[:, :25])
    rest, _ = module(x[:, 25:], h)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, rtol=1e-5, atol=1e-6)


def test_the_default_initial_state_is_the_papers():
    module = layer("gru", 3, 4)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.equal(module(x)[0], module(x, torch.full((2, 4), minrnn.DEFAULT_H0, dtype=torch.float64))[0])


@needs_kernels
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_inputs_scan_in_float32(kind):
    """bf16 activations and weights, fp32 state. Against the float64 reference on the same bf16-rounded inputs and
    weights, what remains is bf16's rounding of the intermediate values (the coefficients a_t, b_t, the output and the
    gradients: 8 bits of mantissa, 2**-8 ~ 4e-3 each), not an error that grows along the recurrence."""
    module = layer(kind, 8, 16)
    module.load_state_dict({k: v.to(torch.bfloat16).double() for k, v in module.state_dict().items()})
    x, w = (torch.randn(2, 50, n, dtype=torch.float64).to(torch.bfloat16).double() for n in (8, 16))
    _, want = run(module, "reference", x, None, torch.float64, w)
    m, got = run(module, "triton", x, None, torch.bfloat16, w)
    assert m.kernel_path == "fused-triton" and got["out"].dtype == torch.bfloat16
    errors = {name: rel_err(want[name], got[name]) for name in want}
    assert max(errors.values()) <= 2e-2, errors


@needs_kernels
def test_double_backward_through_the_triton_scan_matches_the_others():
    """create_graph=True rebuilds the backward from differentiable scans: the gradient of a gradient agrees with the
    step loop's and the torch scan's (autograd through their ops) in float32."""
    results = {}
    for backend in ("reference", "scan", "triton"):
        module = layer("lstm", 3, 5).float()
        module.backend = backend
        x = torch.randn(2, 20, 3, generator=torch.Generator().manual_seed(0)).requires_grad_()
        out, _ = module(x)
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        results[backend] = torch.autograd.grad(gx.pow(2).sum(), [x, module.weight])
    for backend in ("scan", "triton"):
        for a, b in zip(results["reference"], results[backend]):
            assert rel_err(a, b) <= 1e-4, backend


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_hook_runs_the_loop_and_sees_every_state(kind):
    module = layer(kind, 3, 4).float()
    module.backend = "scan"
    seen = []

    def hook(layer_index, t, h):
        seen.append((layer_index, t))
        return h

    x = torch.randn(2, 6, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out, _ = module(x, step_hook=hook)
    assert seen == [(0, t) for t in range(6)]
    assert module.kernel_path.startswith("fallback-reference: step_hook given")
    module.backend = "reference"
    torch.testing.assert_close(out, module(x)[0])


@needs_kernels
def test_what_the_kernels_cannot_take_falls_back_to_the_torch_scan_and_says_why():
    module = layer("gru", 3, 4)  # float64: the kernels compute in float32
    module.backend = "triton"
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    _support._warned.clear()
    with pytest.warns(RuntimeWarning, match="float64"):
        out, _ = module(x)
    assert module.kernel_path.startswith("fallback-scan: dtype torch.float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per reason
        module(x)
    module.backend = "reference"
    torch.testing.assert_close(out, module(x)[0], rtol=1e-12, atol=1e-12)
    module = layer("gru", 3, 4).float()
    module.backend = "triton"
    module(torch.randn(0, 5, 3))
    assert module.kernel_path == "fallback-scan: batch size 0"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 3])
def test_the_stack_is_one_model_on_every_backend(kind, layers):
    torch.manual_seed(0)
    stack = minrnn.MinRNNStack(kind, 5, 8, layers)
    x = torch.randn(2, 19, 5)
    outs = {}
    for backend in ("reference", "scan", *(("triton",) if needs_kernels.args[0] is False else ())):
        stack.backend = backend
        outs[backend] = stack(x)[0]
        assert stack.kernel_path == PATHS[backend]
    for backend, out in outs.items():
        torch.testing.assert_close(out, outs["reference"], rtol=1e-5, atol=1e-5)
    states = []
    stack.backend = "reference"
    stack(x, step_hook=lambda k, t, h: states.append((k, t)) or h)
    assert states == [(k, t) for k in range(layers) for t in range(19)]


@pytest.mark.parametrize("bad, message", [
    (lambda m: m(torch.randn(2, 5)), "x must be (B, T, 3)"),
    (lambda m: m(torch.randn(2, 0, 3)), "at least one time step"),
    (lambda m: m(torch.randn(2, 5, 3), torch.zeros(3, 4)), "h0 must be a tensor of shape (2, 4)"),
    (lambda m: m(torch.randn(2, 5, 3, dtype=torch.float64)), "does not match"),
    (lambda m: setattr(m, "backend", "cuda"), "backend must be one of"),
])
def test_bad_inputs_are_named(bad, message):
    module = minrnn.MinGRU(3, 4)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bad(module)


def test_the_chunked_scan_keeps_float32_accuracy_at_long_lengths():
    """The whole-sequence log-space formula loses accuracy with T; in 16-step blocks it stays at a short scan's level
    (measured against float64; the docstring of log_space_scan gives the figures)."""
    module = layer("gru", 8, 8)
    x = torch.randn(2, 2048, 8, dtype=torch.float64)
    pre = torch.nn.functional.linear(x, module.weight, module.bias)
    log_a, log_b = minrnn.log_coefficients("gru", pre)
    h0 = torch.full((2, 8), 0.5, dtype=torch.float64)
    exact = minrnn.log_space_scan(log_a, log_b, h0)
    errors = {chunk: rel_err(exact, minrnn.log_space_scan(log_a.float(), log_b.float(), h0.float(), chunk))
              for chunk in (None, minrnn.SCAN_CHUNK)}
    assert errors[minrnn.SCAN_CHUNK] < 1e-6 and errors[minrnn.SCAN_CHUNK] * 10 < errors[None], errors
