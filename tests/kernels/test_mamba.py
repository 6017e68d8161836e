"""Mamba's S6 layer (kernels.mamba): the step loop against an independent float64 loop of the paper's equations,
the chunked scan against the loop (outputs, final states, every gradient), causality, the initialisation, the
step_hook and the fallbacks, and bad input."""

import math
import warnings

import pytest
import torch
from torch.nn import functional as F

from seqbench.kernels.mamba import NO_TRITON, Mamba, MambaStack


def layer(H=8, N=4, seed=0, **kw):
    torch.manual_seed(seed)
    return Mamba(H, N, **kw).double()


def paper_loop(m: Mamba, x: torch.Tensor, h0: torch.Tensor | None = None):
    """Algorithm 2 of the paper, written apart from the module: per step, Δ = softplus(W_dt δ + b), Ā = exp(Δ A),
    B̄ = Δ B, h = Ā h + B̄ u, y = C h + D u, out = W_out (y · SiLU(z))."""
    E, N, R = m.inner_size, m.state_size, m.dt_rank
    u, z = (x @ m.in_proj.weight.T).chunk(2, dim=-1)
    T = x.shape[1]
    conv = torch.stack([sum(m.conv.weight[:, 0, m.d_conv - 1 - j] * (u[:, t - j] if t - j >= 0 else 0)
                            for j in range(m.d_conv)) + m.conv.bias for t in range(T)], dim=1)
    u = F.silu(conv)
    A = -torch.exp(m.A_log)
    h = torch.zeros(x.shape[0], E, N, dtype=x.dtype) if h0 is None else h0.view(x.shape[0], E, N)
    outs = []
    for t in range(T):
        sel = u[:, t] @ m.x_proj.weight.T
        delta, B, C = sel[:, :R], sel[:, R:R + N], sel[:, R + N:]
        dt = F.softplus(delta @ m.dt_proj.weight.T + m.dt_proj.bias)  # (batch, E)
        h = torch.exp(dt[..., None] * A) * h + (dt * u[:, t])[..., None] * B[:, None, :]
        y = (h * C[:, None, :]).sum(-1) + m.D * u[:, t]
        outs.append((y * F.silu(z[:, t])) @ m.out_proj.weight.T)
    return torch.stack(outs, 1), h.flatten(1)


@pytest.mark.parametrize("T", [1, 6, 17, 70])
@pytest.mark.parametrize("backend", ["reference", "scan"])
def test_both_backends_compute_the_papers_equations(backend, T):
    m = layer(backend=backend)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, 8, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, m.inner_size * m.state_size, generator=g, dtype=torch.float64)
    for start in (None, h0):
        y, h = m(x, start)
        y_ref, h_ref = paper_loop(m, x, start)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)


def test_the_scan_has_the_loops_gradients_and_the_output_is_causal():
    m = layer(H=6, N=3, seed=2)
    x = torch.randn(2, 40, 6, dtype=torch.float64, requires_grad=True)
    grads = {}
    for backend in ("reference", "scan"):
        m.backend = backend
        y, h = m(x)
        loss = (y * torch.linspace(-1, 1, 40, dtype=torch.float64)[:, None]).sum() + h.pow(2).sum()
        grads[backend] = torch.autograd.grad(loss, [x, *m.parameters()])
    for a, b in zip(grads["reference"], grads["scan"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    later = x.detach().clone()
    later[:, 25:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(m(x.detach())[0][:, :25], m(later)[0][:, :25])
        assert not torch.allclose(m(x.detach())[0][:, 25:], m(later)[0][:, 25:])


def test_the_initialisation_is_the_reference_implementations():
    m = Mamba(32, 16)
    assert (m.inner_size, m.dt_rank) == (64, 2)
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1, 17.0).repeat(64, 1))  # S4D-real
    assert torch.equal(m.D, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert m.dt_proj.weight.abs().max() <= 2 ** -0.5


def test_a_step_hook_sees_every_state_and_other_backends_fall_back_saying_why():
    m = layer()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    seen = []
    m.backend = "scan"
    with warnings.catch_warnings():  # warned once per process
        warnings.simplefilter("ignore")
        m(x, step_hook=lambda layer, t, h: seen.append((t, tuple(h.shape))) or h)
        assert seen == [(t, (2, 64)) for t in range(5)]
        assert m.last_kernel["backend"] == "reference" and "step_hook" in m.last_kernel["fallback"]
        m.backend = "triton"
        m(x)
    assert m.last_kernel == {"backend": "torch", "fallback": NO_TRITON}
    torch.manual_seed(0)
    stack = MambaStack(8, layers=2, state_size=4).double()
    out, finals = stack(x)
    assert out.shape == (2, 5, 8) and finals.shape == (2, 2, 64) and stack.state_size == 64


def test_bad_input_is_refused_with_what_was_expected():
    m = layer()
    with pytest.raises(ValueError, match=r"x must be \(B, T, 8\)"):
        m(torch.randn(2, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h0 must be a tensor of shape \(2, 64\)"):
        m(torch.randn(2, 3, 8, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be one of"):
        Mamba(4, 2, backend="cuda")
