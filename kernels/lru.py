"""The Linear Recurrent Unit (LRU) of Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De (2023), "Resurrecting
Recurrent Neural Networks for Long Sequences": a linear, time-invariant (LTI) recurrence with a complex diagonal
state matrix, the baseline that selective models are compared against.

One layer, with input and output width H and N complex state units:

    h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t)        λ_j = exp(-exp(ν_j) + i·exp(θ_j)),  γ_j = exp(γ_log_j)
    y_t = Re(C h_t) + D ⊙ x_t

B (N×H) and C (H×N) are complex, each held as a real and an imaginary part; ν, θ and γ_log are real (N,); D (H,).
The exponential parameterisation keeps |λ| < 1 (a stable recurrence) whatever the weights. Initialisation as the
paper's code: |λ| uniform on the ring [r_min, r_max] (in area), the phase uniform in [0, max_phase], γ = sqrt(1 -
|λ|²) (the normalisation that keeps the state's scale when |λ| → 1), B and C Gaussian with variance 1/(2H) and 1/N
per part, D standard normal.

The state is handled as a real tensor (B, 2N): the real parts, then the imaginary parts. Backends:
- "reference": the per-step loop in real arithmetic (the specification); a step_hook(layer, t, h) sees each h_t
  (B, 2N) there, so the gradient profile records ‖∂L/∂h_t‖ over both parts;
- "scan": the same recurrence in chunks: within a chunk of SCAN_CHUNK steps each state is a sum of powers of λ times
  the inputs (an exact (C, C) kernel of λ^(t-k), no growing exponentials since |λ| < 1), across chunks a carry; in
  complex arithmetic, float32 for half inputs.
There is no Triton kernel for it yet: a module asked for "triton" runs the scan and records why.

LRUStack stacks layers as the paper's and minGRU/minLSTM's blocks: x + LRU(LayerNorm(x)), then x + MLP(LayerNorm(.)).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import reference
from .minrnn import LoopOrScan, ResidualBlock, ResidualStack

SCAN_CHUNK = 16  # steps per chunk of the scan: its intra-chunk kernel holds SCAN_CHUNK² · N complex numbers
HALF_DTYPES = (torch.bfloat16, torch.float16)
NO_TRITON = "no Triton kernel for the LRU's complex diagonal recurrence yet: the torch scan ran"


class LRU(LoopOrScan, nn.Module):
    """One LRU layer, batch first: forward(x (B, T, H), h0 (B, 2N) or None = zeros, step_hook=None) -> (y (B, T, H),
    h_T (B, 2N)). See the module docstring."""

    no_triton = NO_TRITON

    def __init__(self, hidden_size: int, state_size: int, r_min: float = 0.9, r_max: float = 0.999,
                 max_phase: float = 2 * math.pi, backend: str = "reference"):
        super().__init__()
        if not 0 <= r_min < r_max <= 1:
            raise ValueError(f"the LRU's ring needs 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
        self.hidden_size, self.state_size = hidden_size, state_size
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        H, N = hidden_size, state_size
        self.nu_log, self.theta_log, self.gamma_log = (nn.Parameter(torch.empty(N)) for _ in range(3))
        self.B_re, self.B_im = nn.Parameter(torch.empty(N, H)), nn.Parameter(torch.empty(N, H))
        self.C_re, self.C_im = nn.Parameter(torch.empty(H, N)), nn.Parameter(torch.empty(H, N))
        self.D = nn.Parameter(torch.empty(H))
        self.backend = backend
        self.kernel_path = None  # set by every forward: "reference-loop", "scan-torch" or "fallback-scan: <why>"
        self.last_kernel = None  # the same, structured: {"backend": ..., "fallback": why, or None}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        N, H = self.state_size, self.hidden_size
        u1, u2 = torch.rand(N), torch.rand(N)
        self.nu_log.copy_(torch.log(-0.5 * torch.log(u1 * (self.r_max ** 2 - self.r_min ** 2) + self.r_min ** 2)))
        self.theta_log.copy_(torch.log(self.max_phase * u2))
        modulus = torch.exp(-torch.exp(self.nu_log))
        self.gamma_log.copy_(torch.log(torch.sqrt(1 - modulus ** 2)))
        for p in (self.B_re, self.B_im):
            p.copy_(torch.randn(N, H) / math.sqrt(2 * H))
        for p in (self.C_re, self.C_im):
            p.copy_(torch.randn(H, N) / math.sqrt(N))
        self.D.copy_(torch.randn(H))

    def extra_repr(self):
        return f"{self.hidden_size}, state_size={self.state_size}, backend={self.backend!r}"

    def coefficients(self, dtype):
        """λ's real and imaginary parts (N,) and γ (N,), in `dtype`."""
        modulus, phase = torch.exp(-torch.exp(self.nu_log.to(dtype))), torch.exp(self.theta_log.to(dtype))
        return modulus * torch.cos(phase), modulus * torch.sin(phase), torch.exp(self.gamma_log.to(dtype))

    def forward(self, x, h0=None, *, step_hook=None):
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must be (B, T, {self.hidden_size}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {tuple(x.shape)}")
        if h0 is None:
            h0 = x.new_zeros(B, 2 * self.state_size)
        elif not torch.is_tensor(h0) or tuple(h0.shape) != (B, 2 * self.state_size):
            got = tuple(h0.shape) if torch.is_tensor(h0) else type(h0).__name__
            raise ValueError(f"h0 must be a tensor of shape {(B, 2 * self.state_size)}, got {got}")
        work = torch.float32 if x.dtype in HALF_DTYPES else x.dtype
        xw, h0 = x.to(work), h0.to(work)
        u_re = F.linear(xw, self.B_re.to(work))
        u_im = F.linear(xw, self.B_im.to(work))
        a_re, a_im, gamma = self.coefficients(work)
        u_re, u_im = u_re * gamma, u_im * gamma
        path = self._choose_path(step_hook)
        if path == "reference":
            states = self._reference(a_re, a_im, u_re, u_im, h0, step_hook)
        else:
            states = self._scan(u_re, u_im, h0)
        N = self.state_size
        y = F.linear(states[..., :N], self.C_re.to(work)) - F.linear(states[..., N:], self.C_im.to(work))
        y = y + self.D.to(work) * xw
        return y.to(x.dtype), states[:, -1].to(x.dtype)

    def _reference(self, a_re, a_im, u_re, u_im, h0, step_hook):
        """The specification: h_t = λ h_{t-1} + γ B x_t, one step at a time, in real arithmetic."""
        N = self.state_size
        u = torch.cat([u_re, u_im], dim=-1).transpose(0, 1)  # (T, B, 2N)

        def step(u_t, state):
            h = state[0]
            re, im = h[:, :N], h[:, N:]
            return (torch.cat([a_re * re - a_im * im, a_re * im + a_im * re], dim=-1) + u_t,)

        return reference.run_layer(step, u, (h0,), step_hook, 0)[0].transpose(0, 1)

    def _scan(self, u_re, u_im, h0):
        """The same states in chunks (see the module docstring), in complex arithmetic."""
        B, T, N = u_re.shape
        C = min(SCAN_CHUNK, T)
        chunks = -(-T // C)
        u = torch.complex(u_re, u_im)
        if chunks * C != T:  # zeros after the end change no earlier state
            u = F.pad(u, (0, 0, 0, chunks * C - T))
        u = u.view(B, chunks, C, N)
        log_lam = torch.complex(-torch.exp(self.nu_log.to(u_re.dtype)), torch.exp(self.theta_log.to(u_re.dtype)))
        j = torch.arange(C + 1, device=u.device, dtype=u_re.dtype)
        powers = torch.exp(j[:, None] * log_lam)  # (C + 1, N): λ^0 .. λ^C
        t, k = torch.arange(C, device=u.device)[:, None], torch.arange(C, device=u.device)[None, :]
        kernel = powers[(t - k).clamp(min=0)] * (t >= k)[..., None]  # (C, C, N): λ^(t-k) for t >= k
        inside = torch.einsum("tkn,bckn->bctn", kernel, u)  # each chunk from a zero state
        carry = torch.complex(h0[:, :N], h0[:, N:])
        out = []
        for c in range(chunks):
            states = inside[:, c] + powers[1:, None, :].transpose(0, 1) * carry[:, None, :]  # + λ^(t+1) h_start
            out.append(states)
            carry = states[:, -1]
        h = torch.cat(out, dim=1)[:, :T]
        return torch.cat([h.real, h.imag], dim=-1)


class LRUStack(ResidualStack):
    """`layers` LRU blocks (minGRU's ResidualBlock around an LRU) and a final LayerNorm: forward(x (B, T, H), h0
    (layers, B, 2N) or None, step_hook=None) -> (out (B, T, H), h_T (layers, B, 2N)); step_hook(layer, t, h) sees
    each layer's state h_t (B, 2N)."""

    def __init__(self, hidden_size, state_size, layers, backend="reference", mlp_ratio=4, r_min=0.9, r_max=0.999):
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        self.hidden_size, self.state_size, self.num_layers = hidden_size, state_size, layers
        self.embed = nn.Identity()
        self.blocks = nn.ModuleList(
            ResidualBlock(LRU(hidden_size, state_size, r_min=r_min, r_max=r_max, backend=backend), hidden_size,
                          mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden_size)
