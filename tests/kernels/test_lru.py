"""The LRU (kernels.lru): the real-arithmetic step loop against an independent complex float64 loop of the paper's
equations, the chunked scan against the loop (outputs, final states, every gradient), the initialisation, the
step_hook and the fallbacks, and bad input."""

import math
import warnings

import pytest
import torch

from seqbench.kernels.lru import LRU, LRUStack, NO_TRITON, SCAN_CHUNK


def layer(H=6, N=5, seed=0, **kw):
    torch.manual_seed(seed)
    return LRU(H, N, **kw).double()


def complex_loop(m: LRU, x: torch.Tensor, h0: torch.Tensor | None = None):
    """The paper's equations, written apart from the module: h_t = λ h_{t-1} + γ (B x_t), y_t = Re(C h_t) + D x_t."""
    lam = torch.exp(torch.complex(-torch.exp(m.nu_log), torch.exp(m.theta_log)))
    gamma = torch.exp(m.gamma_log)
    Bc, Cc = torch.complex(m.B_re, m.B_im), torch.complex(m.C_re, m.C_im)
    N = m.state_size
    h = torch.zeros(x.shape[0], N, dtype=torch.complex128) if h0 is None else torch.complex(h0[:, :N], h0[:, N:])
    ys = []
    for t in range(x.shape[1]):
        h = lam * h + gamma * (x[:, t].to(torch.complex128) @ Bc.T)
        ys.append((h @ Cc.T).real + m.D * x[:, t])
    return torch.stack(ys, 1), torch.cat([h.real, h.imag], -1)


@pytest.mark.parametrize("T", [1, 7, SCAN_CHUNK, 3 * SCAN_CHUNK + 5])
@pytest.mark.parametrize("backend", ["reference", "scan"])
def test_both_backends_compute_the_papers_equations(backend, T):
    m = layer(backend=backend)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, T, 6, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 10, generator=g, dtype=torch.float64)
    for start in (None, h0):
        y, h = m(x, start)
        y_ref, h_ref = complex_loop(m, x, start)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)


def test_the_scan_has_the_loops_gradients_in_float64_and_is_close_in_float32():
    m = layer(H=8, N=12, seed=2)
    x = torch.randn(2, 2 * SCAN_CHUNK + 3, 8, dtype=torch.float64, requires_grad=True)
    grads = {}
    for backend in ("reference", "scan"):
        m.backend = backend
        y, h = m(x)
        loss = (y * torch.linspace(-1, 1, y.shape[1], dtype=torch.float64)[:, None]).sum() + h.pow(2).sum()
        grads[backend] = torch.autograd.grad(loss, [x, *m.parameters()])
    for a, b in zip(grads["reference"], grads["scan"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    single = layer(H=8, N=12, seed=2).float()
    single.backend = "scan"
    y32, _ = single(x.detach().float())
    m.backend = "reference"
    torch.testing.assert_close(y32.double(), m(x.detach())[0], rtol=1e-4, atol=1e-4)


def test_the_initialisation_puts_lambda_on_its_ring_and_normalises_it():
    m = LRU(16, 400, r_min=0.5, r_max=0.9)
    a_re, a_im, gamma = m.coefficients(torch.float64)
    modulus = torch.hypot(a_re, a_im)
    assert modulus.min() >= 0.5 - 1e-6 and modulus.max() <= 0.9 + 1e-6
    torch.testing.assert_close(gamma, torch.sqrt(1 - modulus ** 2))
    # uniform in area on the ring: |λ|² is uniform on [r_min², r_max²] (Kolmogorov-Smirnov at the 0.001 level)
    area = ((modulus ** 2 - 0.25) / (0.81 - 0.25)).sort().values
    ks = (area - torch.arange(1, 401, dtype=torch.float64) / 400).abs().max().item()
    assert ks < 1.95 / math.sqrt(400)
    with torch.no_grad():  # any ν keeps the recurrence stable: |λ| = exp(-exp(ν)) < 1
        m.nu_log.fill_(-30.0)
    assert torch.hypot(*m.coefficients(torch.float64)[:2]).max() <= 1
    assert sum(p.numel() for p in m.parameters()) == 3 * 400 + 4 * 400 * 16 + 16


def test_a_step_hook_sees_every_state_and_other_backends_fall_back_saying_why():
    m = layer()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    seen = []
    m.backend = "scan"
    with warnings.catch_warnings():  # warned once per process (kernels._support.warn_once)
        warnings.simplefilter("ignore")
        m(x, step_hook=lambda layer, t, h: seen.append((layer, t, tuple(h.shape))) or h)
    assert seen == [(0, t, (2, 10)) for t in range(5)]
    assert m.last_kernel == {"backend": "reference", "fallback": "step_hook given (it needs every h_t of the step loop)"}
    m.backend = "triton"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m(x)
    assert m.last_kernel == {"backend": "torch", "fallback": NO_TRITON} and m.kernel_path.startswith("fallback-scan")
    m.backend = "reference"
    m(x)
    assert m.last_kernel == {"backend": "reference", "fallback": None} and m.kernel_path == "reference-loop"


def test_a_stack_passes_each_layers_state_to_the_hook_and_reports_one_path():
    torch.manual_seed(0)
    stack = LRUStack(6, 4, layers=2, backend="reference").double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    seen = set()
    out, finals = stack(x, step_hook=lambda layer, t, h: seen.add(layer) or h)
    assert out.shape == (2, 5, 6) and finals.shape == (2, 2, 8) and seen == {0, 1}
    assert stack.kernel_path == "reference-loop" and stack.last_kernel["backend"] == "reference"


def test_bad_input_is_refused_with_what_was_expected():
    m = layer()
    with pytest.raises(ValueError, match=r"x must be \(B, T, 6\)"):
        m(torch.randn(2, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h0 must be a tensor of shape \(2, 10\)"):
        m(torch.randn(2, 3, 6, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="r_min < r_max"):
        LRU(4, 4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        LRU(4, 4, backend="cuda")
