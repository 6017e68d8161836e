"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio, Hajimirsadeghi 2024, "Were RNNs All We Needed?", arXiv:2410.01201).

Both drop every dependence of the gates on h_{t-1}, so a layer is the elementwise linear recurrence

    h_t = a_t * h_{t-1} + b_t,   with a_t, b_t functions of x_t alone,

which a parallel scan computes in O(log T) depth instead of a T-step loop. With pre = x_t W^T + bias (one Linear for
all gates) and the paper's positive candidate activation g(v) = v + 0.5 for v >= 0, sigmoid(v) for v < 0:

    minGRU:  z_t = sigmoid(pre_z),  h~_t = g(pre_h),  h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM: f_t = sigmoid(pre_f),  i_t = sigmoid(pre_i),  h~_t = g(pre_h),
             f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t),  h_t = f'_t * h_{t-1} + i'_t * h~_t

(minLSTM with the paper's length-independent normalisation of the gates, so f' + i' = 1). Three backends compute the
same math; each module has one parameter layout, so a state_dict moves between them unchanged:

- "reference": the specification, a plain per-step loop in the module's dtype (float64 included), with `step_hook`
  like kernels.reference's modules (each new h_t passes through step_hook(0, t, h) before anything uses it, so the
  harness can add zero probes and read dL/dh_t).
- "scan": the paper's log-space parallel scan (its appendix B) in pure torch: log a_t and log b_t come straight from
  the pre-activations through softplus and log_g, and h_t = exp(a*_t + logcumsumexp_{s<=t}(log b_s - a*_s)) with
  a*_t = sum_{s<=t} log a_s, run within blocks of 16 steps that a linear-space parallel scan joins, because over a
  whole long sequence that formula loses float32 accuracy in proportion to T (log_space_scan has the measurements).
  Runs wherever torch does; half-precision inputs are scanned in float32.
- "triton": the Linear layer and the coefficients a_t, b_t stay in torch; the scan over T is one Triton launch
  (kernels.triton_scan), parallel over (batch row, block of hidden units), with fp32 state and fp32 accumulation,
  and its backward is one reverse launch. Wrapped in an autograd.Function (double backward is exact: it reruns the
  scan differentiably). Where the kernels cannot run it falls back to the torch scan and says why (below).

The initial state. The paper's parallel code feeds log_g(h_0) into the scan, so the zero h_0 of its examples starts the
recurrence at g(0) = 0.5. Here `h0` is the state h_0 itself (not passed through g, so `forward(x2, h_T)` continues a
sequence exactly), and the default h0=None is that same paper state, 0.5 in every unit (`DEFAULT_H0`). The scan adds
h0's contribution exp(a*_t) * h0 linearly instead of taking log(h0), so any real h0, negative or zero included, gives
the reference's h_t; for positive h0 this is the paper's computation.

Every forward records what ran in `module.kernel_path` (also readable as `last_path`, the name kernels.fused uses):
"reference-loop", "scan-torch", "fused-triton", or "fallback-<what ran>: <why>" -- "fallback-reference: step_hook
given" for a non-reference backend asked for a step_hook, and for the triton backend "fallback-scan: <why>" when
triton is not importable, on CPU tensors without TRITON_INTERPRET=1 (set before the kernels are first loaded), on
another device type, for float64 (the kernels compute in float32), for batch size 0, or inside a torch.func transform
or forward-mode AD (the autograd.Function has no vmap or jvp rule). Each fallback reason is warned once.

`scan_timings()` times the reference loop against the torch scan (forward + backward) with torch.utils.benchmark;
`python -m seqbench.kernels.minrnn` prints that table.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import reference
from ._support import custom_operator, triton_loader, unsupported_transform, warn_once

KINDS = ("gru", "lstm")
BACKENDS = ("reference", "scan", "triton")
#: a backend of this module by the name the harness records it under (its `scan` is the torch backend)
_RAN_AS = {"reference": "reference", "scan": "torch", "triton": "triton"}
DEFAULT_H0 = 0.5  # g(0): the state the paper's log-space code starts from when given a zero h_0
HALF_DTYPES = (torch.bfloat16, torch.float16)
SCAN_CHUNK = 16  # block length of the "scan" backend's log-space scan (see log_space_scan)


# ---- the math shared by every backend -------------------------------------------------------------------------------


def g(x):
    """The paper's candidate activation: x + 0.5 for x >= 0, sigmoid(x) below; continuous, always positive."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x):
    """log g(x) without forming g: log(x + 0.5) for x >= 0, -softplus(-x) = log sigmoid(x) below. The relu keeps the
    unused branch finite for negative x, so its gradient is not NaN."""
    return torch.where(x >= 0, torch.log(torch.relu(x) + 0.5), -F.softplus(-x))


def minlstm_gates(pre_f, pre_i):
    """minLSTM's normalised gates (f', i') = (f, i) / (f + i) with f = sigmoid(pre_f), i = sigmoid(pre_i)."""
    f, i = torch.sigmoid(pre_f), torch.sigmoid(pre_i)
    return f / (f + i), i / (f + i)


def mingru_cell(x, h, weight, bias=None):
    """One minGRU step, the specification: x (B, I), h (B, H) -> h' (B, H). weight (2H, I) rows: z, then h~."""
    pre_z, pre_h = F.linear(x, weight, bias).chunk(2, dim=-1)
    z = torch.sigmoid(pre_z)
    return (1 - z) * h + z * g(pre_h)


def minlstm_cell(x, h, weight, bias=None):
    """One minLSTM step, the specification: x (B, I), h (B, H) -> h' (B, H). weight (3H, I) rows: f, i, then h~."""
    pre_f, pre_i, pre_h = F.linear(x, weight, bias).chunk(3, dim=-1)
    f, i = minlstm_gates(pre_f, pre_i)
    return f * h + i * g(pre_h)


CELLS = {"gru": mingru_cell, "lstm": minlstm_cell}


def _lstm_log_ratio(pre_f, pre_i):
    """log(i / f) = log sigmoid(pre_i) - log sigmoid(pre_f); then f' = sigmoid(-d), i' = sigmoid(d)."""
    return F.softplus(-pre_f) - F.softplus(-pre_i)


def log_coefficients(kind, pre):
    """(log a, log b) of h_t = a_t h_{t-1} + b_t from the pre-activations pre (..., G*H), computed in log space from
    the start as in the paper's appendix: minGRU log a = log(1 - z) = -softplus(pre_z), log b = log z + log g(pre_h);
    minLSTM log a = log f' = -softplus(d), log b = log i' + log g(pre_h) with d = log(i / f)."""
    if kind == "gru":
        pre_z, pre_h = pre.chunk(2, dim=-1)
        return -F.softplus(pre_z), -F.softplus(-pre_z) + log_g(pre_h)
    pre_f, pre_i, pre_h = pre.chunk(3, dim=-1)
    d = _lstm_log_ratio(pre_f, pre_i)
    return -F.softplus(d), -F.softplus(-d) + log_g(pre_h)


def coefficients(kind, pre):
    """(a, b) of h_t = a_t h_{t-1} + b_t, in linear space for the Triton scan: minGRU a = 1 - z = sigmoid(-pre_z)
    (no cancellation near z = 1), b = z * g(pre_h); minLSTM a = f' = sigmoid(-d), b = i' * g(pre_h)."""
    if kind == "gru":
        pre_z, pre_h = pre.chunk(2, dim=-1)
        return torch.sigmoid(-pre_z), torch.sigmoid(pre_z) * g(pre_h)
    pre_f, pre_i, pre_h = pre.chunk(3, dim=-1)
    d = _lstm_log_ratio(pre_f, pre_i)
    return torch.sigmoid(-d), torch.sigmoid(d) * g(pre_h)


def log_space_scan(log_a, log_b, h0, chunk=None):
    """h_t = a_t h_{t-1} + b_t for every t from log a, log b (B, T, H) and h0 (B, H) -> h (B, T, H).

    The paper's scan (appendix B, after Heinsen 2023): with a*_t = sum_{s<=t} log a_s,
    h_t = exp(a*_t) h0 + exp(a*_t + logcumsumexp_{s<=t}(log b_s - a*_s)). The b part stays in log space until the
    end; h0 enters linearly, so it may have any sign (the paper prepends log h0 to log b, which needs h0 > 0).

    chunk=None runs that formula over the whole sequence at once, exactly as the paper does. Its float32 error grows
    with |a*_T|, i.e. with T: h_t = sum_s exp(a*_t - a*_s) b_s is dominated by s near t, yet each exponent is the
    difference of two sums of up to T terms, and the gradients of log a come out of reverse cumulative sums that cancel
    almost entirely. Measured against float64 (gates from a random Linear layer): at T = 257 outputs err 4e-6 but the
    bias gradient 3e-4 to 1e-3; at T = 4096, 6e-5 and 0.1. With chunk=C the formula runs within blocks of C steps
    (all blocks at once) from a zero state, and the blocks are joined by a second parallel scan, in linear space, over
    their end states (`_chunk_carry`): h_t = h_loc_t + exp(a*_t - a*_start) * (state entering the block). The error
    then stays at the level of a C-step scan whatever T is: with C = 16 (`SCAN_CHUNK`, what the "scan" backend uses)
    about 3e-7 for outputs and 3e-6 for every gradient at T = 257, 1024 and 4096 alike, at no cost in speed on CPU.
    """
    B, T, H = log_a.shape
    if chunk is None or T <= chunk:
        a_star = torch.cumsum(log_a, dim=1)
        h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
        return h + torch.exp(a_star) * h0.unsqueeze(1)
    if T % chunk:  # the last T % chunk steps: one short block, entered from the state the full blocks end in (not
        # padding: padded steps would get zero gradients, on which logcumsumexp's double backward gives NaN)
        main = T - T % chunk
        head = log_space_scan(log_a[:, :main], log_b[:, :main], h0, chunk)
        tail = log_space_scan(log_a[:, main:], log_b[:, main:], head[:, -1], None)
        return torch.cat((head, tail), dim=1)
    N = T // chunk
    log_a, log_b = log_a.reshape(B, N, chunk, H), log_b.reshape(B, N, chunk, H)
    a_star = torch.cumsum(log_a, dim=2)
    local = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=2))  # each block's states from a zero start
    decay = torch.exp(a_star)  # product of a over the block up to each step
    ends = _chunk_carry(decay[:, :, -1], local[:, :, -1], h0)  # the true state at the end of every block
    entering = torch.cat((h0.unsqueeze(1), ends[:, :-1]), dim=1)  # (B, N, H): the state each block starts from
    return (local + decay * entering.unsqueeze(2)).reshape(B, T, H)


def _chunk_carry(A, Bv, h0):
    """s_n = A_n s_{n-1} + Bv_n from s_{-1} = h0, for A, Bv (B, N, H) -> every s_n (B, N, H): a Hillis-Steele scan
    in linear space, log2(N) rounds of composing each (A, Bv) pair with the one d steps back. Every factor is a
    product of a's in (0, 1] and every term a product of positives (plus h0's term), so nothing cancels."""
    N = A.shape[1]
    Bv = torch.cat((A[:, :1] * h0.unsqueeze(1) + Bv[:, :1], Bv[:, 1:]), dim=1)
    d = 1
    while d < N:
        Bv = torch.cat((Bv[:, :d], A[:, d:] * Bv[:, :-d] + Bv[:, d:]), dim=1)
        A = torch.cat((A[:, :d], A[:, d:] * A[:, :-d]), dim=1)
        d *= 2
    return Bv


# ---- the Triton path: the scan as an autograd.Function over custom operators ----------------------------------------

load_triton = triton_loader("triton_scan")


def _scan_forward_fake(a, b, h0):
    return a.new_empty(a.shape, dtype=torch.float32)


@custom_operator("minrnn_scan_forward", _scan_forward_fake)
def _scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """a, b (B, T, H), h0 (B, H) fp32 -> every state h (B, T, H) fp32."""
    return load_triton()[0].scan_forward(a, b, h0)


def _scan_backward_fake(dout, a, h, h0):
    return (a.new_empty(a.shape, dtype=torch.float32), a.new_empty(a.shape, dtype=torch.float32),
            h0.new_empty(h0.shape, dtype=torch.float32))


@custom_operator("minrnn_scan_backward", _scan_backward_fake)
def _scan_backward(dout: torch.Tensor, a: torch.Tensor, h: torch.Tensor,
                   h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/dh (B, T, H), a, the saved fp32 states h and h0 -> (da, db, dh0), fp32."""
    return load_triton()[0].scan_backward(dout, a, h, h0)


class LinearScan(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t through the Triton kernels: a, b (B, T, H) in float32/bfloat16/float16 and h0 (B, H)
    -> h (B, T, H) in a's dtype (a copy: never aliases the fp32 states saved for backward). Gradients come back in
    each input's dtype. Under create_graph=True the backward is rebuilt from differentiable LinearScan calls (the
    reverse scan is the same recurrence run backwards), so higher derivatives are exact."""

    @staticmethod
    def forward(ctx, a, b, h0):
        a, b = a.contiguous(), b.contiguous()
        h0_32 = h0.float().contiguous()
        h = _scan_forward(a, b, h0_32)
        ctx.save_for_backward(a, b, h0, h)
        return h.to(a.dtype, copy=True)

    @staticmethod
    def backward(ctx, dout):
        a, b, h0, h = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _differentiable_scan_grads(a, b, h0, dout)
        da, db, dh0 = _scan_backward(dout.to(a.dtype).contiguous(), a, h, h0.float().contiguous())
        return da.to(a.dtype), db.to(b.dtype), dh0.to(h0.dtype)


def _differentiable_scan_grads(a, b, h0, dout):
    """(da, db, dh0) of the linear scan as differentiable functions of a, b, h0 and dout: G = the reverse scan of dout
    with coefficients a_{t+1}, da_t = G_t h_{t-1}, db_t = G_t, dh0 = a_0 G_0."""
    h = LinearScan.apply(a, b, h0)
    a_next = F.pad(a[:, 1:], (0, 0, 0, 1))  # a_{t+1}, 0 past the end
    grad = LinearScan.apply(a_next.flip(1), dout.to(a.dtype).flip(1), torch.zeros_like(h0)).flip(1)
    h_prev = torch.cat((h0.to(h.dtype).unsqueeze(1), h[:, :-1]), dim=1)
    return grad * h_prev, grad.to(b.dtype), (a[:, 0] * grad[:, 0]).to(h0.dtype)


# ---- modules --------------------------------------------------------------------------------------------------------


class BackendChoice:
    """A layer's `backend` (one of BACKENDS: reference, scan, triton), checked when set, and `last_path`, the name
    kernels.fused's modules give `kernel_path`. Shared by minGRU/minLSTM and the LRU (kernels.lru)."""

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {value!r}")
        self._backend = value

    @property
    def last_path(self):
        return self.kernel_path


class LoopOrScan(BackendChoice):
    """A layer computed by its step loop ("reference") or a scan in torch ("scan"), with no Triton kernel of its own
    (the LRU, Mamba): "triton" runs the scan, and a step_hook the loop, each recorded with why. Subclasses set
    `no_triton`, the reason given."""

    no_triton: str

    def _choose_path(self, step_hook) -> str:
        """"reference" or "scan", recording kernel_path and last_kernel (and warning once per fallback reason)."""
        reason = None
        if step_hook is not None and self.backend != "reference":
            path, reason = "reference", "step_hook given (it needs every h_t of the step loop)"
        elif self.backend == "triton":
            path, reason = "scan", self.no_triton
        else:
            path = self.backend
        if reason is not None:
            self.kernel_path = f"fallback-{path}: {reason}"
            name = f"{type(self).__module__.removeprefix('seqbench.')}.{type(self).__name__}"
            warn_once(f"{name} (backend {self.backend!r}) runs the "
                      f"{'reference step loop' if path == 'reference' else 'torch scan'}: {reason}")
        else:
            self.kernel_path = {"reference": "reference-loop", "scan": "scan-torch"}[path]
        self.last_kernel = {"backend": _RAN_AS[path], "fallback": reason}
        return path


class _MinRNN(BackendChoice, nn.Module):
    """One minGRU/minLSTM layer; subclasses set `kind` and `gates`. Parameters: `weight` (gates * H, I) and `bias`
    (gates * H,) (None when bias=False), one Linear for all gates, initialised as nn.Linear(I, gates * H) -- the
    same distribution as the paper's separate Linear layers, which all have fan-in I."""

    kind = None
    gates = None
    num_layers = 1  # what the harness reads off a recurrent core
    batch_first = True
    kernel_path = None  # set by every forward; see the module docstring
    #: the same, structured (set by every forward): {"backend": "reference", "torch" (the scan) or "triton",
    #: "fallback": why another than the configured one ran, or None}
    last_kernel = None

    def __init__(self, input_size, hidden_size, bias=True, backend="reference", device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.backend = backend
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(self.gates * hidden_size, input_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.gates * hidden_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Linear's init: kaiming_uniform(a=sqrt(5)) on the weight, i.e. uniform(+-1/sqrt(I)), and the bias too."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.input_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias is not None}, backend={self.backend!r}"

    def forward(self, x, h0=None, *, step_hook=None):
        """x (B, T, I), batch first; h0 (B, H) or None for the paper's initial state (DEFAULT_H0 everywhere).

        Returns (out, h_T): every state h_1..h_T as out (B, T, H) and the last one (B, H), in x's dtype.
        step_hook(layer, t, h) -> h (layer is always 0 here) replaces each new h_t (B, H) before anything uses it; it
        needs the step loop, so any backend given one runs the reference loop (recorded in kernel_path).
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be (B, T, {self.input_size}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {tuple(x.shape)}")
        if h0 is None:
            h0 = x.new_full((B, self.hidden_size), DEFAULT_H0)
        elif not torch.is_tensor(h0) or tuple(h0.shape) != (B, self.hidden_size):
            got = tuple(h0.shape) if torch.is_tensor(h0) else type(h0).__name__
            raise ValueError(f"h0 must be a tensor of shape {(B, self.hidden_size)}, got {got}")
        for t in (h0, self.weight, self.bias):
            if t is not None and t.dtype != x.dtype:
                raise ValueError(f"{type(self).__name__}: x dtype {x.dtype} does not match the dtype {t.dtype} of h0 "
                                 f"or a parameter")
        path = self._choose_path(x, step_hook)
        if path == "reference":
            out = self._reference(x, h0, step_hook)
        elif path == "scan":
            out = self._scan(x, h0)
        else:
            out = self._triton(x, h0)
        return out, out[:, -1].clone()

    def fallback_reason(self, x, step_hook=None):
        """Why the configured backend cannot run `x` as asked, or None: a step_hook for a non-reference backend, and
        for "triton" everything the kernels cannot take (see the module docstring)."""
        if step_hook is not None and self.backend != "reference":
            return "step_hook given (it needs every h_t of the step loop)"
        if self.backend != "triton":
            return None
        triton_scan, why = load_triton()
        if triton_scan is None:
            return why
        if x.device.type == "cpu" and not triton_scan.INTERPRET:
            return "CPU tensors, and TRITON_INTERPRET=1 was not set when the kernels were loaded"
        if x.device.type not in ("cuda", "cpu"):
            return f"device type {x.device.type!r} is not supported by the Triton kernels"
        if x.dtype not in triton_scan.INPUT_DTYPES:
            return f"dtype {x.dtype}: the scan kernels compute in float32"
        if x.shape[0] == 0:
            return "batch size 0"
        return unsupported_transform("the scan's autograd.Function has")

    def _choose_path(self, x, step_hook):
        """"reference", "scan" or "triton", recording kernel_path (and warning once per fallback reason)."""
        reason = self.fallback_reason(x, step_hook)
        if reason is not None:
            path = "reference" if step_hook is not None else "scan"
            self.kernel_path = f"fallback-{path}: {reason}"
            self.last_kernel = {"backend": _RAN_AS[path], "fallback": reason}
            warn_once(f"kernels.minrnn.{type(self).__name__} (backend {self.backend!r}) runs the "
                       f"{'reference step loop' if path == 'reference' else 'torch scan'}: {reason}")
            return path
        self.kernel_path = {"reference": "reference-loop", "scan": "scan-torch", "triton": "fused-triton"}[self.backend]
        self.last_kernel = {"backend": _RAN_AS[self.backend], "fallback": None}
        return self.backend

    def _reference(self, x, h0, step_hook):
        """The specification: one cell step per t (kernels.reference.run_layer, which also applies step_hook)."""
        cell = CELLS[self.kind]
        steps = reference.run_layer(lambda x_t, s: (cell(x_t, s[0], self.weight, self.bias),), x.transpose(0, 1),
                                    (h0,), step_hook, 0)
        return steps[0].transpose(0, 1)

    def _scan(self, x, h0):
        """The torch log-space scan; half-precision inputs are projected in their dtype and scanned in float32."""
        pre = F.linear(x, self.weight, self.bias)
        if pre.dtype in HALF_DTYPES:
            pre = pre.float()
        log_a, log_b = log_coefficients(self.kind, pre)
        return log_space_scan(log_a, log_b, h0.to(pre.dtype), SCAN_CHUNK).to(x.dtype)

    def _triton(self, x, h0):
        """Coefficients in torch (in x's dtype), the scan through the Triton kernels (fp32 state)."""
        a, b = coefficients(self.kind, F.linear(x, self.weight, self.bias))
        return LinearScan.apply(a, b, h0)


class MinGRU(_MinRNN):
    """minGRU: h_t = (1 - z_t) h_{t-1} + z_t g(pre_h). weight rows (2H): z, then h~. See the module docstring."""

    kind, gates = "gru", 2


class MinLSTM(_MinRNN):
    """minLSTM with normalised gates: h_t = f'_t h_{t-1} + i'_t g(pre_h). weight rows (3H): f, i, then h~. See the
    module docstring."""

    kind, gates = "lstm", 3


LAYERS = {"gru": MinGRU, "lstm": MinLSTM}


class ResidualBlock(nn.Module):
    """A residual block around a recurrent layer `rnn` (forward(x, h0, step_hook) -> (out, h_T)): x + rnn(LayerNorm(x)),
    then + MLP(LayerNorm(.)). The blocks of minGRU/minLSTM's stack and of the LRU's (kernels.lru)."""

    def __init__(self, rnn: nn.Module, hidden_size: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.rnn = rnn
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_ratio * hidden_size), nn.GELU(),
                                 nn.Linear(mlp_ratio * hidden_size, hidden_size))

    def forward(self, x, h0, step_hook):
        out, h_n = self.rnn(self.norm1(x), h0, step_hook=step_hook)
        x = x + out
        return x + self.mlp(self.norm2(x)), h_n


class MinRNNBlock(ResidualBlock):
    """One residual block of MinRNNStack: x + minRNN(LayerNorm(x)), then + MLP(LayerNorm(.))."""

    def __init__(self, kind, hidden_size, backend, mlp_ratio, bias):
        super().__init__(LAYERS[kind](hidden_size, hidden_size, bias=bias, backend=backend), hidden_size, mlp_ratio)


class ResidualStack(nn.Module):
    """What stacks of ResidualBlocks share: `embed` (a Linear to the stream's width, or identity), `blocks`, a final
    `norm`; the backend of every layer, the path each took and forward(x, h0=None, step_hook=None) -> (out, h_T)
    with h_T stacked over the layers; step_hook(layer, t, h) sees each layer's own state."""

    @property
    def backend(self):
        return self.blocks[0].rnn.backend

    @backend.setter
    def backend(self, value):
        for block in self.blocks:
            block.rnn.backend = value

    @property
    def kernel_path(self):
        """The layers' kernel_path, or each layer's in order joined by '; ' when they differ."""
        paths = list(dict.fromkeys(block.rnn.kernel_path for block in self.blocks))
        return paths[0] if len(paths) == 1 else "; ".join(f"layer {k}: {block.rnn.kernel_path}"
                                                          for k, block in enumerate(self.blocks))

    last_path = kernel_path

    @property
    def last_kernel(self):
        """The layers' last_kernel (None before a forward), or where layers differ, each layer's joined by '; '."""
        kernels = [block.rnn.last_kernel for block in self.blocks]
        if None in kernels or all(k == kernels[0] for k in kernels):
            return None if None in kernels else kernels[0]
        return {key: "; ".join(f"layer {i}: {k[key]}" for i, k in enumerate(kernels) if k[key] is not None) or None
                for key in ("backend", "fallback")}

    def forward(self, x, h0=None, *, step_hook=None):
        x = self.embed(x)
        finals = []
        for k, block in enumerate(self.blocks):
            hook = None if step_hook is None else (lambda _, t, h, k=k: step_hook(k, t, h))
            x, h_n = block(x, None if h0 is None else h0[k], hook)
            finals.append(h_n)
        return self.norm(x), torch.stack(finals)


class MinRNNStack(ResidualStack):
    """`layers` minGRU/minLSTM layers stacked the way the paper stacks them for its sequence tasks: each layer is a
    pre-norm residual block, x = x + minRNN(LayerNorm(x)) followed by x = x + MLP(LayerNorm(x)).

    Choices made here (the paper describes its blocks in words, not as code): LayerNorm as the normalisation, an MLP of
    width mlp_ratio * H (4) with GELU, no dropout and no convolution, a Linear from input_size to hidden_size in front
    when they differ (identity otherwise), and a final LayerNorm on the output. forward(x, h0=None, step_hook=None):
    x (B, T, input_size), h0 (layers, B, H) or None -> (out (B, T, H), h_T (layers, B, H)); step_hook(layer, t, h) sees
    each layer's own recurrent state h_t (before the residual and the MLP).
    """

    def __init__(self, kind, input_size, hidden_size, layers, backend="reference", mlp_ratio=4, bias=True):
        super().__init__()
        if kind not in LAYERS:
            raise ValueError(f"kind must be one of {', '.join(LAYERS)}, got {kind!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        self.kind, self.input_size, self.hidden_size, self.num_layers = kind, input_size, hidden_size, layers
        self.embed = nn.Linear(input_size, hidden_size) if input_size != hidden_size else nn.Identity()
        self.blocks = nn.ModuleList(MinRNNBlock(kind, hidden_size, backend, mlp_ratio, bias) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden_size)


# ---- timings --------------------------------------------------------------------------------------------------------


def scan_timings(lengths=(64, 256, 1024, 4096), B=8, H=64, kinds=KINDS, device="cpu", min_run_time=0.5):
    """Forward + backward wall time of the reference step loop against the torch log-space scan (torch.utils.benchmark,
    median of blocked runs), one layer with input_size = H, float32. Returns one dict per (kind, T) with both medians
    in milliseconds and their ratio."""
    from torch.utils import benchmark

    rows = []
    for kind in kinds:
        torch.manual_seed(0)
        module = LAYERS[kind](H, H, device=device)
        for T in lengths:
            x = torch.randn(B, T, H, device=device, requires_grad=True)
            times = {}
            for backend in ("reference", "scan"):
                module.backend = backend

                def step():
                    out, _ = module(x)
                    out.sum().backward()
                timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads(),
                                        label=f"min{kind.upper()}", sub_label=f"T={T}", description=backend)
                times[backend] = timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
            rows.append(dict(kind=kind, T=T, B=B, H=H, reference_ms=times["reference"], scan_ms=times["scan"],
                             speedup=times["reference"] / times["scan"]))
    return rows


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 forward+backward, B=8, H=I=64")
    print(f"{'model':8} {'T':>5} {'reference ms':>13} {'scan ms':>9} {'speedup':>8}")
    for row in scan_timings():
        print(f"min{row['kind'].upper():5} {row['T']:>5} {row['reference_ms']:>13.2f} {row['scan_ms']:>9.2f} "
              f"{row['speedup']:>7.1f}x")
