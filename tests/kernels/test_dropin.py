"""kernels.RNN/LSTM/GRU as drop-in torch.nn modules: PyTorch's own module test samples (module_db) and the user code
that used to crash or go silently wrong (PackedSequence, autocast, double backward, torch.func, torch.compile, batch
size 0, in-place ops on outputs, dropout, isinstance-keyed code, torch's argument checks). Each case matches torch.nn
(outputs and every gradient) or raises a clear error, and the path it took is the one recorded in `last_path`."""

import copy
import io
import re
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence

from seqbench import kernels
from seqbench.kernels import _support, fused
from seqbench.kernels.testing import assert_close

from .test_fused import RTOL_GRAD, RTOL_OUT, needs_kernels

KINDS = ["rnn", "lstm", "gru"]
FUSED = {"rnn": kernels.RNN, "lstm": kernels.LSTM, "gru": kernels.GRU}
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
RTOL_BF16 = 1e-2  # autocast to bfloat16 against float32 torch.nn, as tests/kernels/test_fused.py's RTOL_HALF


@pytest.fixture(autouse=True)
def quiet_and_poisoned(monkeypatch):
    """Every kernel buffer starts as NaN (an unwritten element fails assert_close), and fallback warnings are off, as
    is the interpreter's numpy warning for the exp(1e4) that pins an LSTM gate past a packed sequence's end."""
    monkeypatch.setattr(fused, "POISON_BUFFERS", True)
    monkeypatch.setattr(_support, "_warned", set())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "kernels.* runs the reference step loop", RuntimeWarning)
        warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
        yield


def pair(kind, *args, seed=0, dtype=torch.float32, **kwargs):
    """(ours, theirs): a kernels module and its torch.nn twin with the same weights."""
    torch.manual_seed(seed)
    theirs = TORCH[kind](*args, dtype=dtype, **kwargs)
    ours = FUSED[kind](*args, dtype=dtype, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def tensors(x):
    """The tensors in a (nested) module output or input, PackedSequences by their data."""
    if torch.is_tensor(x):
        return [x]
    if isinstance(x, PackedSequence):
        return [x.data]
    return [t for item in x for t in tensors(item)]


def fresh(x, dtype=None):
    """A fresh leaf copy of every tensor in x (in `dtype` if given), same structure."""
    if torch.is_tensor(x):
        return x.detach().to(dtype or x.dtype).requires_grad_(x.is_floating_point())
    if isinstance(x, PackedSequence):
        return x._replace(data=fresh(x.data, dtype))
    return type(x)(fresh(item, dtype) for item in x)


def outputs_and_grads(module, *inputs, loss_of=None):
    """Every output tensor, then the gradients of a fixed random linear loss on them (weights exact in bfloat16, so
    every dtype gets the same output gradients) w.r.t. every input tensor and every parameter, keyed by name."""
    outs = tensors(module(*inputs))
    g = torch.Generator().manual_seed(2)
    weight = lambda o: torch.randn(o.shape, generator=g).bfloat16().to(o)  # noqa: E731
    loss = loss_of(outs) if loss_of else sum((weight(o) * o).sum() for o in outs)
    leaves = {f"dinput{k}": t for k, t in enumerate(tensors(inputs))}
    # torch.compile's wrapper names parameters _orig_mod.<name>
    leaves.update({f"d{name.removeprefix('_orig_mod.')}": p for name, p in module.named_parameters()})
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    result = {f"output{k}": o for k, o in enumerate(outs)}
    result.update({name: torch.zeros_like(t) if g is None else g for (name, t), g in zip(leaves.items(), grads)})
    return result


def assert_matches(want, got, what, rtol_out=RTOL_OUT, rtol_grad=RTOL_GRAD):
    assert list(got) == list(want), what
    for name in want:
        assert_close(f"{what}: {name}", want[name], got[name], rtol_grad if name.startswith("d") else rtol_out)


# ---- PyTorch's own module test samples --------------------------------------------------------------------------

# Drawn in a child process: torch.testing._internal.common_utils freezes torch.backends flags on import (which would
# break later tests that set them) and needs expecttest, which it only subclasses (a stand-in serves if it is absent).
SAMPLER = """
import sys, types, unittest, torch
try:
    import expecttest  # noqa: F401
except ImportError:
    sys.modules["expecttest"] = types.SimpleNamespace(TestCase=unittest.TestCase)
from torch.testing._internal.common_modules import module_db
torch.manual_seed(0)  # the samplers draw random values: the same ones on every run of the suite
samples = []
for info in module_db:
    if info.module_cls in (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU):
        for dtype in (torch.float32, torch.float64):
            for s in info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True):
                samples.append({"kind": info.module_cls.__name__.lower(), "dtype": str(dtype),
                                "args": s.constructor_input.args, "kwargs": s.constructor_input.kwargs,
                                "inputs": s.forward_input.args, "forward_kwargs": s.forward_input.kwargs})
torch.save(samples, sys.argv[1])
import os
os._exit(0)  # the file is closed; skip tearing down torch.testing's modules (seconds)
"""


@pytest.fixture(scope="module")
def module_db_samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("module_db") / "samples.pt"
    subprocess.run([sys.executable, "-c", SAMPLER, str(path)], check=True, timeout=300)
    return torch.load(path, weights_only=True)


@needs_kernels
@pytest.mark.parametrize("dtype", [pytest.param("torch.float32", id="fp32", marks=pytest.mark.slow),
                                   pytest.param("torch.float64", id="fp64")])
@pytest.mark.parametrize("kind", KINDS)
def test_module_db_samples_match_torch(module_db_samples, kind, dtype):
    """Every nn.RNN/LSTM/GRU sample of torch's module_db (unbatched inputs, with and without hx, bias, batch_first,
    bidirectional, proj_size): outputs, final states and every gradient against torch.nn in float64 on the same values.
    float32 runs the kernels (proj_size the reference loop); float64 always the reference loop."""
    samples = [s for s in module_db_samples if s["kind"] == kind and s["dtype"] == dtype]
    assert len(samples) >= 16
    for s in samples:
        assert not s["forward_kwargs"]
        ours, theirs = pair(kind, *s["args"], dtype=getattr(torch, dtype.split(".")[1]), **s["kwargs"])
        got = outputs_and_grads(ours, *fresh(s["inputs"]))
        want = outputs_and_grads(theirs.double(), *fresh(s["inputs"], torch.float64))
        what = f"module_db {kind} {s['kwargs']} {dtype}"
        if dtype == "torch.float64":
            assert ours.last_path.startswith("fallback-reference: "), what
            assert ours.last_kernel == {"backend": "reference",
                                        "fallback": ours.last_path.removeprefix("fallback-reference: ")}, what
            assert_matches(want, got, what, 1e-12, 1e-12)
        else:
            assert ours.last_path == ("fallback-reference: proj_size=2 (the kernels have no projection)"
                                      if s["kwargs"].get("proj_size") else "fused-triton"), what
            assert_matches(want, got, what)


# ---- the torch.nn module itself: class, attributes, constructor and forward checks --------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_is_the_torch_module(kind):
    """isinstance holds, so init and other code keyed on the torch.nn classes treats ours the same; torch's
    attributes, repr and pickling work; a dtype change is picked up as torch.nn picks it up."""
    ours, theirs = pair(kind, 3, 4, 2, bidirectional=True)
    assert isinstance(ours, nn.RNNBase) and isinstance(ours, TORCH[kind])
    assert repr(ours) == repr(theirs)
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [[tuple(p.shape) for p in layer] for layer in ours.all_weights] == \
        [[tuple(p.shape) for p in layer] for layer in theirs.all_weights]
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters()))
    ours.flatten_parameters()
    for model in (ours, nn.Sequential(ours)):  # a typical isinstance-keyed init, applied to a bare or nested module
        for m in model.modules():
            if isinstance(m, nn.LSTM) or isinstance(m, nn.RNNBase):
                nn.init.zeros_(m.weight_hh_l1)
    assert not ours.weight_hh_l1.any()
    x = torch.randn(2, 1, 3)
    out = ours(x)[0]
    for copied in (copy.deepcopy(ours), torch.load(saved(ours), weights_only=False)):
        assert type(copied) is type(ours) and torch.equal(copied(x)[0], out)
    ours.double()
    assert ours._flat_weights[0].dtype == torch.float64
    assert ours(x.double())[0].dtype == torch.float64


def saved(module):
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("kind,kwargs", [
    ("lstm", {"bias": "False"}), ("gru", {"batch_first": "False"}), ("rnn", {"dropout": 1.5}),
    ("rnn", {"dropout": True}), ("lstm", {"hidden_size": 0}), ("gru", {"num_layers": 0}),
    ("rnn", {"nonlinearity": "sigmoid"}), ("lstm", {"proj_size": 4}),
], ids=["bias-str", "batch_first-str", "dropout-1.5", "dropout-bool", "hidden-0", "layers-0", "nonlinearity",
        "proj_size-eq-hidden"])
def test_constructor_rejects_what_torch_rejects(kind, kwargs):
    """Arguments torch.nn refuses raise the same exception type and message (bias="False" is not taken as True)."""
    config = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(Exception) as theirs:
        TORCH[kind](**config)
    with pytest.raises(type(theirs.value), match="^" + re.escape(str(theirs.value)) + "$"):
        FUSED[kind](**config)


@pytest.mark.parametrize("call,message", [
    (lambda m: m(torch.randn(2, 3, 3, 3)), "Expected input to be 2D or 3D, got 4D"),
    (lambda m: m(torch.randn(4, 2, 5)), "input.size(-1) must be equal to input_size. Expected 3, got 5"),
    (lambda m: m(torch.randn(0, 2, 3)), "Expected sequence length to be larger than 0"),
    (lambda m: m(torch.randn(4, 2, 3).double()), "input dtype (torch.float64) does not match weight dtype"),
    (lambda m: m(torch.randn(4, 2, 3), torch.zeros(2, 3, 4)), "Expected hidden size (2, 2, 4), got [2, 3, 4]"),
    (lambda m: m(torch.randn(4, 3), torch.zeros(2, 1, 4)), "hx should also be 2-D but got 3-D"),
], ids=["4d-input", "input-size", "no-steps", "dtype", "hx-batch", "unbatched-3d-hx"])
def test_forward_rejects_what_torch_rejects(call, message):
    """Calls torch.nn refuses raise the same exception type, with the same message."""
    ours, theirs = pair("gru", 3, 4, 2)
    with pytest.raises((ValueError, RuntimeError), match=re.escape(message)) as want:
        call(theirs)
    with pytest.raises(type(want.value), match=re.escape(message)):
        call(ours)


def test_hx_of_another_dtype_raises():
    with pytest.raises(ValueError, match="does not match"):
        kernels.LSTM(3, 4)(torch.randn(2, 1, 3), (torch.zeros(1, 1, 4).double(), torch.zeros(1, 1, 4).double()))


# ---- PackedSequence ---------------------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("kind,bidirectional,split,enforce_sorted", [
    ("lstm", False, False, False), ("lstm", True, False, True), ("lstm", False, True, False),
    ("lstm", True, True, False), ("gru", True, False, False), ("gru", False, True, True),
    ("rnn", False, False, True), ("rnn", True, True, False),
], ids=["lstm-uni", "lstm-bi-sorted", "lstm-uni-split", "lstm-bi-split", "gru-bi", "gru-uni-split-sorted",
        "rnn-uni-sorted", "rnn-bi-split"])
def test_packed_sequence_matches_torch(monkeypatch, kind, bidirectional, split, enforce_sorted):
    """Variable-length batches (sorted or not) with hx: the packed output, each sequence's h_n (and c_n) at its own
    length and every gradient as torch.nn's, through the one-program and the split (stepwise) kernels."""
    ours, theirs = pair(kind, 3, 5, 2, bidirectional=bidirectional)
    if split:
        ours.max_fused_hidden = 0
        monkeypatch.setattr(fused, "SPLIT_MODE", "stepwise")
    torch.manual_seed(1)
    seqs = [torch.randn(n, 3) for n in (4, 1, 5, 2, 4)]
    hx = torch.randn(2 * (1 + bidirectional), len(seqs), 5)
    hx = (hx, torch.randn_like(hx)) if kind == "lstm" else hx
    packed = pack_sequence(sorted(seqs, key=len, reverse=True) if enforce_sorted else seqs, enforce_sorted)
    got = outputs_and_grads(ours, fresh(packed), fresh(hx))
    assert ours.last_path == ("fused-triton-split-stepwise" if split else "fused-triton")
    assert ours.last_kernel == {"backend": "triton", "fallback": None}
    assert_matches(outputs_and_grads(theirs, fresh(packed), fresh(hx)), got, f"packed {kind}")


@needs_kernels
@pytest.mark.parametrize("kind", KINDS)
def test_variable_length_pipeline(kind):
    """The usual pipeline: embed, pack_padded_sequence(batch_first, unsorted), the module, pad_packed_sequence, a
    head; a PackedSequence output with the input's batch_sizes and permutation, and the same loss gradients."""
    ours, theirs = pair(kind, 4, 6, 2, batch_first=True)
    tokens, lengths = torch.randint(0, 10, (5, 7)), torch.tensor([3, 7, 1, 5, 7])
    torch.manual_seed(2)
    embed, head = nn.Embedding(10, 4), nn.Linear(6, 2)
    results = {}
    for name, core in (("ours", ours), ("theirs", theirs)):
        packed = pack_padded_sequence(embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        out, _ = core(packed)
        padded, out_lengths = pad_packed_sequence(out, batch_first=True)
        assert torch.equal(out.batch_sizes, packed.batch_sizes) and torch.equal(out.sorted_indices,
                                                                                packed.sorted_indices)
        loss = head(padded).square().sum()
        params = [embed.weight, *core.parameters(), *head.parameters()]
        results[name] = {"output": padded, "lengths": out_lengths.float(),
                         **{f"d{k}": g for k, g in enumerate(torch.autograd.grad(loss, params))}}
    assert_matches(results["theirs"], results["ours"], f"pipeline {kind}")


# ---- autocast, batch size 0, in-place ops on outputs --------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("kind", KINDS)
def test_autocast_runs_in_the_autocast_dtype(kind):
    """Under autocast the module computes in the autocast dtype, as cuDNN's autocast kernel does (input, states and
    weights cast to it): outputs and states in bfloat16, gradients in the parameters' float32, all close to float32
    torch.nn. (torch's CPU GRU returns float32 there; cuDNN returns the autocast dtype, as here on every device.)"""
    ours, theirs = pair(kind, 3, 5, 2, batch_first=True)
    x = torch.randn(3, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = outputs_and_grads(ours, fresh(x))
    assert ours.last_path == "fused-triton"
    assert all(t.dtype == (torch.bfloat16 if name.startswith("output") else torch.float32) for name, t in got.items())
    want = outputs_and_grads(theirs, fresh(x))
    assert_matches({k: v.to(got[k].dtype) for k, v in want.items()}, got, f"autocast {kind}", RTOL_BF16, RTOL_BF16)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_size_zero(kind):
    ours, theirs = pair(kind, 3, 4, 2)
    x = torch.randn(5, 0, 3)
    got = outputs_and_grads(ours, fresh(x), loss_of=lambda outs: sum(o.sum() for o in outs))
    assert ours.last_path == "fallback-reference: batch size 0"
    want = outputs_and_grads(theirs, fresh(x), loss_of=lambda outs: sum(o.sum() for o in outs))
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert all(not v.any() for v in got.values())


@needs_kernels
@pytest.mark.parametrize("kind", KINDS)
def test_in_place_ops_on_outputs(kind):
    """Outputs never alias what backward reads: in-place ops on output and h_n give torch's gradients (torch.nn's
    own LSTM refuses the output one on CPU; the result here is that of the same ops out of place)."""
    ours, theirs = pair(kind, 3, 5, 2)
    x = torch.randn(4, 3, 3)

    def loss_of(module, in_place):
        out, h = module(x)
        h = h[0] if kind == "lstm" else h
        if in_place:
            out.mul_(2)
            h.add_(1)
        else:
            out, h = out * 2, h + 1
        return (out.square().sum() + h.square().sum())

    got = torch.autograd.grad(loss_of(ours, True), list(ours.parameters()))
    want = torch.autograd.grad(loss_of(theirs, kind != "lstm"), list(theirs.parameters()))
    for name, a, b in zip(dict(ours.named_parameters()), want, got):
        assert_close(f"in-place {kind}: d{name}", a, b, RTOL_GRAD)


# ---- dropout --------------------------------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_eval_and_zero_are_exact(kind):
    """dropout > 0 is accepted; in eval mode it changes nothing (same as torch.nn), and dropout = 0 in training mode
    gives bitwise what eval mode gives."""
    ours, theirs = pair(kind, 3, 5, 3, dropout=0.5)
    x = torch.randn(4, 2, 3)
    ours.eval(), theirs.eval()
    assert_matches(outputs_and_grads(theirs, fresh(x)), outputs_and_grads(ours, fresh(x)), f"dropout eval {kind}")
    no_dropout = FUSED[kind](3, 5, 3)
    no_dropout.load_state_dict(ours.state_dict())
    assert torch.equal(no_dropout.train()(x)[0], no_dropout.eval()(x)[0])


@needs_kernels
@pytest.mark.parametrize("cls", [kernels.RNN, nn.RNN], ids=["kernels", "torch"])
def test_dropout_between_layers_statistics(cls):
    """The same semantics as torch.nn (the same check passes for both): in training mode each layer's output but the
    last's is zeroed with probability p and the rest scaled by 1/(1-p). Seen through a second layer that copies its
    input: relu(I x + 0 h), with the first layer's outputs positive."""
    p, H = 0.3, 8
    module = cls(4, H, 2, nonlinearity="relu", dropout=p)
    with torch.no_grad():
        module.weight_ih_l0.uniform_(0.1, 1.0), module.bias_ih_l0.fill_(0.1)
        module.weight_hh_l0.zero_(), module.bias_hh_l0.zero_()
        module.weight_ih_l1.copy_(torch.eye(H)), module.weight_hh_l1.zero_()
        module.bias_ih_l1.zero_(), module.bias_hh_l1.zero_()
    x = torch.rand(20, 50, 4)
    kept = module.eval()(x)[0]  # (T, B, H), all positive
    torch.manual_seed(0)
    dropped = module.train()(x)[0]
    zeroed = (dropped == 0).float().mean().item()
    n = kept.numel()
    assert abs(zeroed - p) < 4 * (p * (1 - p) / n) ** 0.5, f"zeroed fraction {zeroed:.4f}, p = {p}"
    torch.testing.assert_close(dropped[dropped != 0], kept[dropped != 0] / (1 - p), rtol=1e-6, atol=0)


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="dropout option adds dropout after all but last recurrent layer"):
        module = kernels.LSTM(3, 4, 1, dropout=0.5)
    x = torch.randn(3, 2, 3)
    assert torch.equal(module.train()(x)[0], module.eval()(x)[0])


# ---- double backward ------------------------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("kind", KINDS)
def test_double_backward_gradient_penalty(kind):
    """An input-gradient penalty built with create_graph=True from a constant upstream gradient (out.sum()): its
    gradients w.r.t. every parameter and the input are torch.nn's (the backward recomputes through the reference loop
    there), not the silently wrong ones once_differentiable let through."""
    ours, theirs = pair(kind, 3, 5, 2)
    x = torch.randn(4, 2, 3)
    results = []
    for module in (ours, theirs.double()):
        xx = fresh(x, next(module.parameters()).dtype)
        out, _ = module(xx)
        grad_x, = torch.autograd.grad(out.sum(), xx, create_graph=True)
        penalty = grad_x.square().sum()
        names = ["dinput", *(f"d{n}" for n, _ in module.named_parameters())]
        results.append(dict(zip(names, torch.autograd.grad(penalty, [xx, *module.parameters()]))))
    assert ours.last_path == "fused-triton"
    assert_matches(results[1], results[0], f"double backward {kind}")


@needs_kernels
def test_double_backward_with_grad_norms_raises():
    module = kernels.GRU(3, 4)
    module.track_grad_norms = True
    x = torch.randn(3, 2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="track_grad_norms cannot be combined with create_graph"):
        torch.autograd.grad(module(x)[0].sum(), x, create_graph=True)


# ---- torch.func and torch.compile -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_torch_func_transforms(kind):
    """grad, vmap, per-sample gradients (vmap of grad) and jvp through functional_call: inside a transform the module
    runs the reference loop (the kernels' Functions have no vmap or jvp rule) and says so. torch.nn's own modules have
    no batching rule, so vmap is checked against a loop over the samples."""
    ours, theirs = pair(kind, 3, 4, 2)
    xs = torch.randn(3, 3, 2, 3)  # 3 samples of (T, B, I)

    def loss_of(module):
        return lambda p, x: torch.func.functional_call(module, p, (x,))[0].square().sum()

    def params_of(module):
        return {k: v.detach() for k, v in module.named_parameters()}

    loss, params = loss_of(ours), params_of(ours)
    tangent = {k: torch.ones_like(v) for k, v in params.items()}
    got = {"grad": torch.func.grad(loss)(params, xs[0]),
           "vmap": torch.func.vmap(lambda x: torch.func.functional_call(ours, params, (x,))[0])(xs),
           "per_sample": torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs),
           "jvp": torch.func.jvp(lambda p: loss(p, xs[0]), (params,), (tangent,))[1]}
    assert ours.last_path.startswith("fallback-reference: inside a torch.func transform")
    loss, params = loss_of(theirs), params_of(theirs)
    with torch.backends.mkldnn.flags(enabled=False):  # torch's oneDNN LSTM has no forward-mode AD
        jvp = torch.func.jvp(lambda p: loss(p, xs[0]), (params,), (tangent,))[1]
    want = {"grad": torch.func.grad(loss)(params, xs[0]), "vmap": torch.stack([theirs(x)[0] for x in xs]),
            "per_sample": {k: torch.stack([torch.func.grad(loss)(params, x)[k] for x in xs]) for k in params},
            "jvp": jvp}
    for name, value in want.items():
        for key, v in (value.items() if isinstance(value, dict) else [("", value)]):
            assert_close(f"torch.func {name} {key}", v, got[name][key] if key else got[name], RTOL_GRAD)


class Model(nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core, self.head = core, nn.Linear(core.hidden_size, 2)

    def forward(self, x):
        return self.head(self.core(x)[0])


@needs_kernels
@pytest.mark.parametrize("kind,allow_rnn", [("gru", False), ("rnn", True), ("lstm", True)],
                         ids=["gru-graph-break", "rnn-custom-ops", "lstm-custom-ops"])
def test_torch_compile(kind, allow_rnn):
    """torch.compile of a model holding the module: by default Dynamo graph-breaks around it, as around every
    torch.nn.RNNBase, and it runs eagerly; with torch._dynamo.config.allow_rnn the whole model compiles into one
    graph (fullgraph) in which the kernel launches are opaque custom ops. Same output and gradients either way."""
    if allow_rnn and not hasattr(torch.library, "custom_op"):
        pytest.skip("torch.library.custom_op needs torch >= 2.4")
    ours, theirs = pair(kind, 3, 5, 2, batch_first=True)
    torch.manual_seed(3)
    model, reference = Model(ours), Model(theirs)
    reference.head.load_state_dict(model.head.state_dict())
    x = torch.randn(2, 4, 3)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=allow_rnn):
        compiled = torch.compile(model, backend="aot_eager", fullgraph=allow_rnn)
        got = outputs_and_grads(compiled, fresh(x))
    assert ours.last_path == "fused-triton"
    assert_matches(outputs_and_grads(reference, fresh(x)), got, f"torch.compile {kind}")


# ---- devices ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("kind", KINDS)
def test_runs_on_the_inputs_device(kind):
    """A module on cuda:1 launches its kernels there while cuda:0 is current."""
    ours, theirs = pair(kind, 3, 5, 2)
    ours, theirs = ours.to("cuda:1"), theirs.to("cuda:1")
    x = torch.randn(4, 2, 3, device="cuda:1")
    with torch.cuda.device(0):
        got = outputs_and_grads(ours, fresh(x))
    assert ours.last_path == "fused-triton"
    assert_matches(outputs_and_grads(theirs, fresh(x)), got, f"cuda:1 {kind}", 1e-4, 1e-3)  # TF32-free, fp32 sums
