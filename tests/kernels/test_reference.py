"""The reference RNN/LSTM/GRU match torch.nn in float64 (outputs, final states, every gradient), load state dicts both
ways, initialise like torch, and their step_hook probes read the total gradient dL/dh_t."""

import math

import pytest
import torch
from torch import nn

from seqbench.kernels import as_reference, reference
from seqbench.kernels.testing import assert_close

RTOL = 1e-10
I = 5  # input features
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
REF = {"rnn": reference.RNN, "lstm": reference.LSTM, "gru": reference.GRU}
ARCHS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def build(arch, H, L, *, ref=False, seed=0, dtype=torch.float64, **kwargs):
    """A torch.nn (or, with ref=True, reference) module; arch is 'lstm', 'gru', 'rnn-tanh' or 'rnn-relu'."""
    kind, _, act = arch.partition("-")
    if act:
        kwargs["nonlinearity"] = act
    torch.manual_seed(seed)
    return (REF if ref else TORCH)[kind](I, H, L, dtype=dtype, **kwargs)


def make_inputs(arch, B, T, H, L, batch_first=False, with_hx=False, seed=1):
    """Float64 leaves: x (T, B, I) / (B, T, I) / unbatched (T, I) if B is None, and hx (None, h0, or (h0, c0))."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    x = randn(T, I) if B is None else randn(B, T, I) if batch_first else randn(T, B, I)
    if not with_hx:
        return x, None
    hx = tuple(randn(L, H) if B is None else randn(L, B, H) for _ in range(2 if arch == "lstm" else 1))
    return x, hx if arch == "lstm" else hx[0]


def as_tuple(states):
    return states if isinstance(states, tuple) else (states,)


def run(module, x, hx):
    """Forward plus gradients of a fixed random linear loss on output and final states, all keyed by name."""
    out, finals = module(x, hx)
    finals = as_tuple(finals)
    g = torch.Generator().manual_seed(2)
    loss = sum((torch.randn(t.shape, generator=g, dtype=t.dtype) * t).sum() for t in (out, *finals))
    leaves = {"dinput": x}
    leaves.update({f"d{s}0": v for s, v in zip("hc", as_tuple(hx))} if hx is not None else {})
    leaves.update({f"d{n}": p for n, p in module.named_parameters()})
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {"output": out, **{f"{s}_n": v for s, v in zip("hc", finals)}, **dict(zip(leaves, grads))}


def case(arch, B, T, H, L, *, bf=False, hx=False, bias=True):
    tags = [arch, "unbatched" if B is None else f"B{B}", f"T{T}", f"H{H}", f"L{L}"]
    tags += ["bf"] * bf + ["hx"] * hx + ["nobias"] * (not bias)
    return pytest.param(arch, B, T, H, L, bf, hx, bias, id="-".join(tags))


CASES = [
    case("lstm", 3, 17, 33, 2, bf=True, hx=True),
    case("lstm", 1, 1, 7, 1),
    case("lstm", 5, 9, 4, 2, bias=False),
    case("lstm", None, 6, 5, 2, hx=True),
    case("gru", 3, 17, 33, 2, bf=True),
    case("gru", 1, 1, 7, 1, hx=True),
    case("gru", 4, 8, 5, 2, bf=True, hx=True, bias=False),
    case("gru", None, 5, 6, 1),
    case("rnn-tanh", 3, 17, 33, 2, hx=True),
    case("rnn-tanh", 1, 1, 3, 1, bf=True),
    case("rnn-tanh", None, 7, 4, 2, bf=True, hx=True),
    case("rnn-relu", 5, 11, 9, 2, bf=True, hx=True),
    case("rnn-relu", 2, 4, 6, 1, bias=False),
]


@pytest.mark.parametrize("arch,B,T,H,L,batch_first,with_hx,bias", CASES)
def test_matches_torch_nn(arch, B, T, H, L, batch_first, with_hx, bias):
    torch_mod = build(arch, H, L, bias=bias, batch_first=batch_first)
    ref_mod = as_reference(torch_mod)
    x, hx = make_inputs(arch, B, T, H, L, batch_first, with_hx)
    want, got = run(torch_mod, x, hx), run(ref_mod, x, hx)
    assert got.keys() == want.keys()
    assert got["output"].shape == ((T, H) if B is None else (B, T, H) if batch_first else (T, B, H))
    for name in want:
        assert_close(name, want[name], got[name], RTOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_default_init_matches_torch(arch):
    H = 37
    torch_mod = build(arch, H, 2, dtype=None, seed=3)
    ref_mod = build(arch, H, 2, dtype=None, seed=3, ref=True)
    want, got = torch_mod.state_dict(), ref_mod.state_dict()
    assert list(got) == list(want)  # names and registration order
    bound = 1 / math.sqrt(H)
    for name, p in got.items():
        assert p.shape == want[name].shape and p.dtype == torch.float32, name
        assert p.abs().max() <= bound and p.abs().max() > 0.8 * bound, name
        assert torch.equal(p, want[name]), f"{name}: same seed should draw the same numbers as torch.nn"


@pytest.mark.parametrize("arch", ARCHS)
def test_load_state_dict_both_ways(arch):
    x, _ = make_inputs(arch, 3, 6, 8, 2)
    torch_mod, ref_mod = build(arch, 8, 2, seed=0), build(arch, 8, 2, seed=1, ref=True)
    assert not torch.equal(torch_mod.weight_hh_l1, ref_mod.weight_hh_l1)
    ref_mod.load_state_dict(torch_mod.state_dict())
    assert_close("torch -> reference output", torch_mod(x)[0], ref_mod(x)[0], RTOL)

    other = build(arch, 8, 2, seed=2, ref=True)
    torch_mod.load_state_dict(other.state_dict())
    assert_close("reference -> torch output", other(x)[0], torch_mod(x)[0], RTOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_as_reference_copies_config_and_weights(arch):
    torch_mod = build(arch, 6, 2, bias=False, batch_first=True)
    ref_mod = as_reference(torch_mod)
    assert type(ref_mod) is REF[arch.split("-")[0]]
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "nonlinearity", "proj_size"):
        assert getattr(ref_mod, attr, None) == getattr(torch_mod, attr, None), attr
    assert ref_mod.weight_ih_l0.dtype == torch.float64 and ref_mod.weight_ih_l0.device == torch_mod.weight_ih_l0.device
    assert all(torch.equal(a, b) for a, b in zip(ref_mod.state_dict().values(), torch_mod.state_dict().values()))
    with torch.no_grad():
        ref_mod.weight_hh_l0.zero_()
    assert torch_mod.weight_hh_l0.abs().sum() > 0, "weights must be copied, not shared"

    again = as_reference(ref_mod)  # a reference module is accepted too
    assert again is not ref_mod and torch.equal(again.weight_ih_l1, ref_mod.weight_ih_l1)


@pytest.mark.parametrize("make,match", [
    pytest.param(lambda: nn.LSTM(3, 4, bidirectional=True), "bidirectional", id="bidirectional"),
    pytest.param(lambda: nn.GRU(3, 4, num_layers=2, dropout=0.5), "dropout", id="dropout"),
    pytest.param(lambda: nn.LSTM(3, 4, proj_size=2), "proj_size", id="proj_size"),
    pytest.param(lambda: nn.Linear(3, 4), "Linear", id="not-recurrent"),
])
def test_as_reference_rejects(make, match):
    with pytest.raises(ValueError, match=match):
        as_reference(make())


@pytest.mark.parametrize("cls,kwargs,argument", [
    (reference.LSTM, {"bidirectional": True}, "bidirectional"),
    (reference.GRU, {"num_layers": 2, "dropout": 0.2}, "dropout"),
    (reference.LSTM, {"proj_size": 2}, "proj_size"),
    (reference.RNN, {"nonlinearity": "sigmoid"}, "nonlinearity"),
    (reference.RNN, {"num_layers": 0}, "num_layers"),
], ids=["bidirectional", "dropout", "proj_size", "nonlinearity", "num_layers"])
def test_unsupported_arguments_raise(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls(3, 4, **kwargs)


@pytest.mark.parametrize("x_shape,hx,match", [
    ((2, 3, 3, 4), None, "input"),
    ((5, 2, 4), None, "input"),  # wrong feature size
    ((0, 2, 3), None, "time step"),
    ((5, 2, 3), torch.zeros(1, 2, 4), "hx"),  # LSTM hx must be (h0, c0)
    ((5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)), "hx"),  # wrong batch
    ((5, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)), "hx"),  # unbatched input wants (num_layers, H)
], ids=["4d-input", "features", "empty", "hx-not-tuple", "hx-batch", "hx-unbatched"])
def test_bad_forward_arguments_raise(x_shape, hx, match):
    with pytest.raises(ValueError, match=match):
        reference.LSTM(3, 4)(torch.zeros(x_shape), hx)


# ---- step_hook ----------------------------------------------------------------------------------------------------


def probe_hook(probes, seen):
    """A step_hook that adds a zero probe requiring grad to every h_t, remembering probe and hooked h by (layer, t)."""
    def hook(layer, t, h):
        seen[layer, t] = h
        probes[layer, t] = torch.zeros_like(h, requires_grad=True)
        return h + probes[layer, t]
    return hook


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_hook_changes_nothing_and_sees_every_step(arch):
    B, T, H, L = 3, 5, 4, 2
    module = build(arch, H, L, ref=True, batch_first=True)
    x, hx = make_inputs(arch, B, T, H, L, batch_first=True, with_hx=True)
    calls = []
    hooked = module(x, hx, step_hook=lambda layer, t, h: calls.append((layer, t, h.shape)) or h)
    plain = module(x, hx)
    assert calls == [(k, t, (B, H)) for k in range(L) for t in range(T)]
    for a, b in zip((hooked[0], *as_tuple(hooked[1])), (plain[0], *as_tuple(plain[1]))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_at_last_step_is_grad_of_h_n(arch):
    B, T, H, L = 2, 6, 5, 2
    module = build(arch, H, L, ref=True)
    x, _ = make_inputs(arch, B, T, H, L)
    probes = {}
    _, finals = module(x, step_hook=probe_hook(probes, {}))
    h_n = as_tuple(finals)[0]
    loss = (h_n ** 3).sum()  # uses h_n only (not c_n), nonlinearly
    (want,) = torch.autograd.grad(loss, h_n, retain_graph=True)
    loss.backward()
    assert_close("probe grad at (last layer, T-1)", want[L - 1], probes[L - 1, T - 1].grad, RTOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_grad_is_total_derivative(arch):
    """Probe grads equal dL/dh_t of the cell's own output (so nothing bypasses the hook) and match a central finite
    difference of the loss when h_t is nudged along a random direction."""
    B, T, H, L = 2, 5, 4, 2
    module = build(arch, H, L, ref=True)
    x, hx = make_inputs(arch, B, T, H, L, with_hx=True)
    w = torch.randn((T, B, H), generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def loss_fn(step_hook):
        out, finals = module(x, hx, step_hook=step_hook)
        return (w * out).sum() + sum((s ** 2).sum() for s in as_tuple(finals))

    probes, seen = {}, {}
    loss = loss_fn(probe_hook(probes, seen))
    keys = list(seen)
    totals = torch.autograd.grad(loss, [seen[k] for k in keys], retain_graph=True)
    loss.backward()
    for key, total in zip(keys, totals):
        assert_close(f"probe grad {key} vs autograd dL/dh_t", total, probes[key].grad, RTOL)

    g, eps = torch.Generator().manual_seed(6), 1e-6
    with torch.no_grad():
        for (layer, t), probe in probes.items():
            v = torch.randn((B, H), generator=g, dtype=torch.float64)
            nudge = lambda s: lambda k, u, h: h + s * v if (k, u) == (layer, t) else h  # noqa: E731
            fd = (loss_fn(nudge(eps)) - loss_fn(nudge(-eps))) / (2 * eps)
            assert_close(f"finite difference at {(layer, t)}", fd, (probe.grad * v).sum(), 1e-6)


def test_lstm_hook_touches_h_not_c():
    B, T, H, L = 3, 4, 5, 2
    module = build("lstm", H, L, ref=True)
    x, _ = make_inputs("lstm", B, T, H, L)
    delta = torch.full((B, H), 0.25, dtype=torch.float64)
    out0, (h0, c0) = module(x)
    out1, (h1, c1) = module(x, step_hook=lambda k, t, h: h + delta if (k, t) == (L - 1, T - 1) else h)
    assert torch.equal(c1, c0), "the hook must not change the cell state"
    assert torch.equal(out1[:-1], out0[:-1]) and torch.equal(h1[:-1], h0[:-1])
    assert_close("hooked output[-1]", out0[-1] + delta, out1[-1], 1e-15)
    assert torch.equal(h1[-1], out1[-1])


def test_hook_must_return_same_shape():
    module = reference.GRU(3, 4)
    with pytest.raises(ValueError, match="step_hook"):
        module(torch.zeros(2, 1, 3), step_hook=lambda k, t, h: h[:, :2])
