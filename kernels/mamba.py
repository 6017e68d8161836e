"""A selective state-space layer: the S6 block of Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Section 3 and Algorithm 2), in plain PyTorch.

One layer, with input and output width H, inner width E = expand·H and N state units per inner channel:

    (u, z) = W_in x_t                                  two E-wide halves
    u = SiLU(causal depthwise conv1d(u))               kernel d_conv, per channel
    (δ, B_t, C_t) = W_x u_t                            δ: dt_rank wide; B_t, C_t: N wide (input-dependent)
    Δ_t = softplus(W_dt δ + b_dt)                      E wide: each channel's step size
    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t         h_t: E×N; A = -exp(A_log) (E×N), the ZOH of A and the
                                                        simplified (Euler) discretisation of B, as the paper's code
    y_t = h_t C_t + D ⊙ u_t;   out = W_out (y_t ⊙ SiLU(z_t))

Δ, B and C depend on the input: that selection is what an LTI model (kernels.lru, S4) lacks. Initialisation as the
reference implementation (mamba_ssm): A_log = log(1..N) in every channel (S4D-real), D = 1, W_dt uniform in
±dt_rank^-1/2, and b_dt such that softplus(b_dt) is log-uniform in [dt_min, dt_max] = [0.001, 0.1].

The state is handled flattened, (B, E·N). Backends:
- "reference": the per-step loop (the specification); a step_hook(layer, t, h) sees each h_t (B, E·N);
- "scan": the same recurrence in about 2·sqrt(T) sequential steps: all chunks of about sqrt(T) steps run their
  steps at once from a zero state, then the start states are carried from chunk to chunk, scaled by exp of the
  running Δ·A sums (never above 1: the sums only fall). Not a work-efficient parallel scan: a fused kernel would be.
There is no fused kernel here (the mamba_ssm package's CUDA kernels are not used): "triton" runs the scan, saying so.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import reference
from .minrnn import LoopOrScan, ResidualStack

SCAN_CHUNK = 64  # the longest chunk of the scan (chunks are about sqrt(T) long)
HALF_DTYPES = (torch.bfloat16, torch.float16)
NO_TRITON = "no fused kernel for the selective scan here: the torch scan ran"


class Mamba(LoopOrScan, nn.Module):
    """One S6 layer, batch first: forward(x (B, T, H), h0 (B, E·N) or None = zeros, step_hook=None) -> (y (B, T, H),
    h_T (B, E·N)). The convolution starts from zeros (no carried convolution state). See the module docstring."""

    no_triton = NO_TRITON

    def __init__(self, hidden_size: int, state_size: int = 16, expand: int = 2, d_conv: int = 4,
                 dt_rank: int | None = None, dt_min: float = 0.001, dt_max: float = 0.1, backend: str = "reference"):
        super().__init__()
        H, N, E = hidden_size, state_size, expand * hidden_size
        R = dt_rank or math.ceil(H / 16)
        self.hidden_size, self.state_size, self.inner_size, self.dt_rank, self.d_conv = H, N, E, R, d_conv
        self.in_proj = nn.Linear(H, 2 * E, bias=False)
        self.conv = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, H, bias=False)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.backend = backend
        self.kernel_path = None  # set by every forward: "reference-loop", "scan-torch" or "fallback-...: <why>"
        self.last_kernel = None  # the same, structured

    def extra_repr(self):
        return (f"{self.hidden_size}, state_size={self.state_size}, inner={self.inner_size}, dt_rank={self.dt_rank}, "
                f"backend={self.backend!r}")

    def selection(self, x):
        """The input-dependent parts of the recurrence, in x's dtype: the gate SiLU(z) (B, T, E), the conv output u
        (B, T, E), Δ (B, T, E), B_t and C_t (B, T, N)."""
        u, z = self.in_proj(x).chunk(2, dim=-1)
        T = x.shape[1]
        u = F.silu(self.conv(u.transpose(1, 2))[..., :T].transpose(1, 2))  # causal: the first T outputs
        delta, B, C = self.x_proj(u).split([self.dt_rank, self.state_size, self.state_size], dim=-1)
        return F.silu(z), u, F.softplus(self.dt_proj(delta)), B, C

    def forward(self, x, h0=None, *, step_hook=None):
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must be (B, T, {self.hidden_size}), got {tuple(x.shape)}")
        Bsz, T, _ = x.shape
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {tuple(x.shape)}")
        size = self.inner_size * self.state_size
        if h0 is None:
            h0 = x.new_zeros(Bsz, size)
        elif not torch.is_tensor(h0) or tuple(h0.shape) != (Bsz, size):
            got = tuple(h0.shape) if torch.is_tensor(h0) else type(h0).__name__
            raise ValueError(f"h0 must be a tensor of shape {(Bsz, size)}, got {got}")
        work = torch.float32 if x.dtype in HALF_DTYPES else x.dtype
        gate, u, delta, B, C = (t.to(work) for t in self.selection(x))
        A = -torch.exp(self.A_log.to(work))  # (E, N)
        log_a = delta[..., None] * A  # (B, T, E, N): log of exp(Δ A), at most 0
        b = (delta * u)[..., None] * B[:, :, None, :]  # (B, T, E, N)
        path = self._choose_path(step_hook)
        if path == "reference":
            states = self._reference(log_a, b, h0.to(work), step_hook)
        else:
            states = self._scan(log_a, b, h0.to(work))
        y = (states * C[:, :, None, :]).sum(-1) + self.D.to(work) * u  # (B, T, E)
        out = self.out_proj((y * gate).to(x.dtype))
        return out, states[:, -1].flatten(1).to(x.dtype)

    def _reference(self, log_a, b, h0, step_hook):
        """The specification: h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t, one step at a time -> (B, T, E, N)."""
        Bsz, T, E, N = b.shape
        a = torch.exp(log_a).flatten(2).transpose(0, 1)  # (T, B, E·N)
        inputs = torch.cat([a, b.flatten(2).transpose(0, 1)], dim=-1)

        def step(ab_t, state):
            a_t, b_t = ab_t[:, :E * N], ab_t[:, E * N:]
            return (a_t * state[0] + b_t,)

        states = reference.run_layer(step, inputs, (h0,), step_hook, 0)[0]  # (T, B, E·N)
        return states.transpose(0, 1).view(Bsz, T, E, N)

    def _scan(self, log_a, b, h0):
        """The same states with about 2·sqrt(T) sequential steps instead of T: the sequence is cut into chunks of C
        steps; every chunk runs its C steps from a zero state at once (one step for all chunks together), then each
        chunk adds its start state carried in from the chunk before, scaled by exp(S_t), S the running sum of log a
        within the chunk (exp(S_t) <= 1). Memory: a few times the states, as the loop's."""
        Bsz, T, E, N = b.shape
        C = max(1, min(SCAN_CHUNK, math.isqrt(T)))
        chunks = -(-T // C)
        if chunks * C != T:  # steps after the end change no earlier state
            log_a, b = F.pad(log_a, (0, 0, 0, 0, 0, chunks * C - T)), F.pad(b, (0, 0, 0, 0, 0, chunks * C - T))
        a, b = torch.exp(log_a).view(Bsz, chunks, C, E, N), b.view(Bsz, chunks, C, E, N)
        state, inside = torch.zeros_like(b[:, :, 0]), []
        for t in range(C):  # every chunk from a zero state, all chunks at once
            state = a[:, :, t] * state + b[:, :, t]
            inside.append(state)
        inside = torch.stack(inside, dim=2)  # (B, chunks, C, E, N)
        decay = torch.exp(log_a.view(Bsz, chunks, C, E, N).cumsum(2))  # exp(S_t): a chunk's start state at step t
        carry, out = h0.view(Bsz, E, N), []
        for c in range(chunks):
            states = inside[:, c] + decay[:, c] * carry[:, None]
            out.append(states)
            carry = states[:, -1]
        return torch.cat(out, dim=1)[:, :T]


class MambaBlock(nn.Module):
    """x + Mamba(LayerNorm(x)): the Mamba architecture's block (no MLP: the gated S6 layer is the whole mixer)."""

    def __init__(self, rnn: Mamba):
        super().__init__()
        self.norm = nn.LayerNorm(rnn.hidden_size)
        self.rnn = rnn

    def forward(self, x, h0, step_hook):
        out, h_n = self.rnn(self.norm(x), h0, step_hook=step_hook)
        return x + out, h_n


class MambaStack(ResidualStack):
    """`layers` Mamba blocks and a final LayerNorm: forward(x (B, T, H), h0 (layers, B, E·N) or None,
    step_hook=None) -> (out (B, T, H), h_T (layers, B, E·N)); step_hook(layer, t, h) sees each layer's state."""

    def __init__(self, hidden_size, layers, state_size=16, expand=2, d_conv=4, backend="reference"):
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        self.hidden_size, self.num_layers = hidden_size, layers
        self.embed = nn.Identity()
        self.blocks = nn.ModuleList(MambaBlock(Mamba(hidden_size, state_size, expand, d_conv, backend=backend))
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.state_size = self.blocks[0].rnn.inner_size * state_size  # the values of each layer's state h_t
