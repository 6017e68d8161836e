"""The fused Triton RNN/LSTM/GRU (through the Triton interpreter on CPU) match the float64 reference loop and torch.nn
in outputs and every gradient, write every element they own, are bitwise deterministic, report ||dL/dh_t||, and fall
back to the reference loop with a recorded reason where they cannot run."""

import warnings

import pytest
import torch
from torch import nn

from seqbench import kernels
from seqbench.kernels import _support, as_reference, fused, reference
from seqbench.kernels.testing import assert_close

I = 5  # input features
RTOL_OUT, RTOL_GRAD = 1e-5, 1e-4  # float32 kernels against float64 references
# Half-precision modules against float64 on the same values, outputs and every gradient: each dtype's own tolerance,
# about 3.4x the worst relative error measured over this file's and test_split.py's half-precision cases through the
# interpreter (triton 3.9, torch 2.13 CPU): float16 4.0e-4 (outputs) and 6.0e-4 (gradients), bfloat16 5.6e-3 and
# 5.8e-3. A float16 module whose recurrent dot operands were rounded to bfloat16 instead errs 2.8e-3 to 8.7e-3 per case.
RTOL_HALF = {torch.float16: 2e-3, torch.bfloat16: 1e-2}  # bf16: the 1e-2 the kernels were specified to
FUSED = {"rnn": kernels.RNN, "lstm": kernels.LSTM, "gru": kernels.GRU}
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
REF = {"rnn": reference.RNN, "lstm": reference.LSTM, "gru": reference.GRU}
ARCHS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def kernels_runnable():
    triton_rnn, why = fused.load_triton()
    if triton_rnn is None:
        return False, why
    if not torch.cuda.is_available() and not triton_rnn.INTERPRET:
        return False, "no CUDA and TRITON_INTERPRET=1 was not set when the kernels were loaded"
    return True, ""


_ok, _why = kernels_runnable()
needs_kernels = pytest.mark.skipif(not _ok, reason=f"fused kernels cannot run here: {_why}")


@pytest.fixture(autouse=True)
def poison_buffers(monkeypatch):
    """Every buffer a kernel must fill starts as NaN, so an unwritten element fails assert_close's finiteness check."""
    monkeypatch.setattr(fused, "POISON_BUFFERS", True)


def build(arch, H, L, *, cls=None, seed=0, dtype=torch.float32, device="cpu", **kwargs):
    """A fused module (or `cls`, e.g. torch.nn.LSTM); arch is 'lstm', 'gru', 'rnn-tanh' or 'rnn-relu'."""
    kind, _, act = arch.partition("-")
    if act:
        kwargs["nonlinearity"] = act
    torch.manual_seed(seed)
    return (cls or FUSED)[kind](I, H, L, dtype=dtype, device=device, **kwargs)


def twin(module, classes, dtype=torch.float64):
    """A module from `classes` (TORCH or REF) with module's config and a copy of its weights, in `dtype`."""
    kind = type(module).__name__.lower()
    kwargs = {"nonlinearity": module.nonlinearity} if kind == "rnn" else {}
    out = classes[kind](module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
                    batch_first=module.batch_first, dtype=dtype, device=module.weight_hh_l0.device, **kwargs)
    out.load_state_dict(module.state_dict())
    return out


def make_inputs(arch, B, T, H, L, batch_first=False, with_hx=False, seed=1, dtype=torch.float32, device="cpu"):
    """Leaves x ((T, B, I), (B, T, I) or unbatched (T, I) if B is None) and hx (None, h0, or (h0, c0))."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(shape, generator=g).to(device, dtype).requires_grad_()  # noqa: E731
    x = randn(T, I) if B is None else randn(B, T, I) if batch_first else randn(T, B, I)
    if not with_hx:
        return x, None
    hx = tuple(randn(L, H) if B is None else randn(L, B, H) for _ in range(2 if arch == "lstm" else 1))
    return x, hx if arch == "lstm" else hx[0]


def cast(x, hx, dtype):
    """Fresh leaves holding the same values in `dtype`."""
    leaf = lambda t: t.detach().to(dtype).requires_grad_()  # noqa: E731
    return leaf(x), None if hx is None else leaf(hx) if torch.is_tensor(hx) else tuple(map(leaf, hx))


def as_tuple(states):
    return states if isinstance(states, tuple) else (states,)


def loss_of(out, finals):
    """A fixed random linear loss on output and final states; its weights are exact in bfloat16, so a module in any
    dtype receives the same output gradients."""
    g = torch.Generator().manual_seed(2)
    return sum((torch.randn(t.shape, generator=g).bfloat16().to(t) * t).sum() for t in (out, *as_tuple(finals)))


def run(module, x, hx):
    """Forward plus gradients of `loss_of`, all keyed by name."""
    out, finals = module(x, hx)
    finals = as_tuple(finals)
    loss = loss_of(out, finals)
    leaves = {"dinput": x}
    leaves.update({f"d{s}0": v for s, v in zip("hc", as_tuple(hx))} if hx is not None else {})
    leaves.update({f"d{n}": p for n, p in module.named_parameters()})
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {"output": out, **{f"{s}_n": v for s, v in zip("hc", finals)}, **dict(zip(leaves, grads))}


def reference_grad_norms(module, x, hx):
    """||dL/dh_t|| (num_layers, T, B) of `loss_of` from the float64 reference loop: the norms of zero probes added to
    every h_t, whose gradients are the total derivatives dL/dh_t (through later steps and the next layer)."""
    probes = {}

    def hook(layer, t, h):
        probes[layer, t] = torch.zeros_like(h, requires_grad=True)
        return h + probes[layer, t]

    loss_of(*as_reference(module).double()(*cast(x, hx, torch.float64), step_hook=hook)).backward()
    T = len({t for _, t in probes})
    return torch.stack([torch.stack([probes[k, t].grad.norm(dim=-1) for t in range(T)])
                        for k in range(module.num_layers)])


def assert_all_close(want, got, rtol_out, rtol_grad, what):
    assert got.keys() == want.keys()
    for name in want:
        assert_close(f"{what}: {name}", want[name], got[name], rtol_grad if name.startswith("d") else rtol_out)


def case(arch, B, T, H, L, *, bf=False, hx=False, bias=True, slow=False):
    tags = [arch, "unbatched" if B is None else f"B{B}", f"T{T}", f"H{H}", f"L{L}"]
    tags += ["bf"] * bf + ["hx"] * hx + ["nobias"] * (not bias)
    return pytest.param(arch, B, T, H, L, bf, hx, bias, id="-".join(tags), marks=[pytest.mark.slow] if slow else [])


# B=17 and B=19 span two batch tiles of 16; H=17 and 33 pad to 32 and 64.
CASES = [
    case("lstm", 3, 17, 33, 2, bf=True, hx=True, slow=True),
    case("lstm", 1, 1, 5, 1),
    case("lstm", 17, 1, 16, 2, hx=True),
    case("lstm", 17, 3, 6, 2, hx=True),
    case("lstm", 5, 4, 17, 2, bias=False),
    case("lstm", None, 3, 5, 1, bf=True, hx=True),
    case("gru", 3, 17, 33, 2, hx=True, slow=True),
    case("gru", 1, 1, 7, 1, hx=True),
    case("gru", 19, 3, 5, 2, bf=True),
    case("gru", 4, 4, 17, 1, bf=True, hx=True, bias=False),
    case("gru", None, 3, 6, 2),
    case("rnn-tanh", 3, 17, 33, 2, bf=True, slow=True),
    case("rnn-tanh", 1, 1, 3, 1, hx=True),
    case("rnn-tanh", 17, 4, 5, 2, bf=True, hx=True, bias=False),
    case("rnn-relu", 5, 5, 9, 2, hx=True),
    case("rnn-relu", None, 3, 4, 1, bf=True),
    case("rnn-relu", 17, 1, 16, 2, bf=True, hx=True),
]


@needs_kernels
@pytest.mark.parametrize("arch,B,T,H,L,batch_first,with_hx,bias", CASES)
def test_matches_reference_and_torch(arch, B, T, H, L, batch_first, with_hx, bias):
    module = build(arch, H, L, bias=bias, batch_first=batch_first)
    x, hx = make_inputs(arch, B, T, H, L, batch_first, with_hx)
    got = run(module, x, hx)
    assert module.last_path == "fused-triton"
    assert got["output"].shape == ((T, H) if B is None else (B, T, H) if batch_first else (T, B, H))
    assert all(t.dtype == torch.float32 for t in got.values())
    for name, classes in (("reference", REF), ("torch.nn", TORCH)):
        want = run(twin(module, classes), *cast(x, hx, torch.float64))
        assert_all_close(want, got, RTOL_OUT, RTOL_GRAD, f"vs float64 {name}")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_half_precision_in_and_out(arch, dtype):
    """Half-precision parameters and inputs: recurrent products from operands rounded to the dtype, fp32 state and
    sums, outputs and gradients in the dtype, close to float64 on the same values within the dtype's tolerance."""
    module = build(arch, 6, 2, dtype=dtype, batch_first=True)
    x, hx = make_inputs(arch, 3, 4, 6, 2, batch_first=True, with_hx=True, dtype=dtype)
    got = run(module, x, hx)
    assert module.last_path == "fused-triton"
    assert all(t.dtype == dtype for t in got.values())
    want = run(as_reference(module).double(), *cast(x, hx, torch.float64))
    assert_all_close(want, got, RTOL_HALF[dtype], RTOL_HALF[dtype], f"{dtype} vs float64 reference")


@needs_kernels
@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_are_bitwise_deterministic(arch):
    module = build(arch, 9, 2)
    x, hx = make_inputs(arch, 18, 5, 9, 2, with_hx=True)
    first, second = run(module, x, hx), run(module, x, hx)
    for name in first:
        assert torch.equal(first[name], second[name]), name


@needs_kernels
@pytest.mark.parametrize("arch", ARCHS)
def test_grad_norms_are_total_gradients(arch):
    """track_grad_norms: the backward kernels' ||dL/dh_t|| per (layer, t, batch row) equals the norm of the reference
    loop's probe gradients, which are the total derivatives dL/dh_t (through later steps and the next layer)."""
    B, T, H, L = 3, 4, 5, 2
    module = build(arch, H, L)
    module.track_grad_norms = True
    x, hx = make_inputs(arch, B, T, H, L, with_hx=True)
    run(module, x, hx)
    assert module.grad_norms.shape == (L, T, B)
    assert_close("grad_norms", reference_grad_norms(module, x, hx), module.grad_norms, RTOL_GRAD)


# ---- drop-in: construction, state dicts, fallbacks (tests/kernels/test_dropin.py has the rest) -------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_same_parameters_and_init_as_torch(arch):
    ours, theirs = build(arch, 7, 2, seed=3), build(arch, 7, 2, seed=3, cls=TORCH)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # names and registration order
    for (name, p), q in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(p, q), f"{name}: the same seed should draw the same numbers as torch.nn"


@needs_kernels
@pytest.mark.parametrize("arch", ARCHS)
def test_load_state_dict_both_ways(arch):
    x, _ = make_inputs(arch, 3, 4, 6, 2)
    ours, theirs = build(arch, 6, 2, seed=0), build(arch, 6, 2, seed=1, cls=TORCH)
    ours.load_state_dict(theirs.state_dict())
    assert_close("torch -> fused output", theirs(x)[0], ours(x)[0], RTOL_OUT)
    other = build(arch, 6, 2, seed=2)
    theirs.load_state_dict(other.state_dict())
    assert_close("fused -> torch output", other(x)[0], theirs(x)[0], RTOL_OUT)
    assert type(as_reference(ours)) is getattr(reference, type(ours).__name__)


def no_triton(monkeypatch):
    monkeypatch.setattr(fused, "load_triton", lambda: (None, "triton is not importable (ImportError: test)"))


def no_interpreter(monkeypatch):
    triton_rnn, _ = fused.load_triton()
    if triton_rnn is None:
        pytest.skip("triton is not importable")
    monkeypatch.setattr(triton_rnn, "INTERPRET", False)


# Each reason is checked after the ones before it (step_hook, triton, device, dtype, size), so most need triton.
@pytest.mark.parametrize("arch,H,setup,dtype,hooked,why", [
    pytest.param("lstm", 513, None, torch.float32, False, "hidden_size=513 is above the split kernels' limit 512",
                 id="lstm-H513", marks=needs_kernels),
    pytest.param("gru", 513, None, torch.float32, False, "hidden_size=513 is above the split kernels' limit 512",
                 id="gru-H513", marks=needs_kernels),
    pytest.param("rnn-tanh", 1025, None, torch.float32, False, "above the split kernels' limit 1024", id="rnn-H1025",
                 marks=needs_kernels),
    pytest.param("gru", 4, no_triton, torch.float32, False, "triton is not importable", id="no-triton"),
    pytest.param("lstm", 4, no_interpreter, torch.float32, False, "TRITON_INTERPRET", id="cpu-no-interpreter"),
    pytest.param("rnn-relu", 4, None, torch.float64, False, "float64", id="float64", marks=needs_kernels),
    pytest.param("lstm", 4, None, torch.float32, True, "step_hook", id="step_hook"),
])
def test_fallback_runs_reference_and_records_why(monkeypatch, arch, H, setup, dtype, hooked, why):
    if setup is not None:
        setup(monkeypatch)
    monkeypatch.setattr(_support, "_warned", set())
    module = build(arch, H, 2, dtype=dtype)
    x, hx = make_inputs(arch, 3, 2, H, 2, with_hx=True, dtype=dtype)
    hook = (lambda k, t, h: h) if hooked else None
    with pytest.warns(RuntimeWarning, match=why):
        out, finals = module(x, hx, step_hook=hook)
    assert module.last_path.startswith("fallback-reference: ") and why in module.last_path
    ref_out, ref_finals = as_reference(module)(x, hx)
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(as_tuple(finals), as_tuple(ref_finals)))


@needs_kernels
def test_warns_once_per_reason(monkeypatch):
    monkeypatch.setattr(_support, "_warned", set())
    module = build("gru", 5, 1, dtype=torch.float64)
    x, _ = make_inputs("gru", 2, 2, 5, 1, dtype=torch.float64)
    with pytest.warns(RuntimeWarning):
        module(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(x)  # same reason: recorded in last_path, not warned again
    assert module.last_path.startswith("fallback-reference: dtype torch.float64")
