import json

import pytest
import torch

from seqbench.harness.loaders import load_grad_profiles
from seqbench.harness.train import Trainer, execute

from .conftest import tiny


def profile(t: Trainer):
    return {(r["quantity"], r["layer"]): r for r in t.profile(0)}


def test_profile_covers_every_layer_and_position():
    t = Trainer(tiny("model.layers=2"))
    rows = profile(t)
    assert set(rows) == {("x", 0), ("h", 0), ("h", 1)}
    assert all(len(r["norm"]) == t.task.seq_len for r in rows.values())
    assert all(r["dtype"] == "float64" for r in rows.values())


def test_total_gradient_at_the_last_step_is_the_head_gradient():
    """Adding's loss reads only the last output, so dL/dh_{T-1} of the top layer = W_head^T dL/dy exactly."""
    t = Trainer(tiny())
    x, y = t.profile_batch
    m = t.model.for_diagnostics(torch.float64)
    with torch.enable_grad():
        out, probes = m.probed_forward(x.double())
        loss = t.task.loss(out, y)
        (d_out,) = torch.autograd.grad(loss, out, retain_graph=True)
        loss.backward()
    expected = d_out[:, -1] @ m.head.weight  # (B, H)
    assert torch.allclose(probes["h"][0].grad[:, -1], expected, rtol=1e-12, atol=0)
    assert profile(t)[("h", 0)]["norm"][-1] == pytest.approx(expected.norm().item(), rel=1e-12)


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_backends_give_the_same_profile(model):
    """The torch (oneDNN/cuDNN) and reference backends share parameters, so their profiles agree."""
    a = Trainer(tiny(f"model={model}", "model.layers=2"))
    b = Trainer(tiny(f"model={model}", "model.layers=2", "model.backend=reference"))
    b.model.load_state_dict(a.model.state_dict())
    pa, pb = profile(a), profile(b)
    for key in pa:
        assert pa[key]["norm"] == pytest.approx(pb[key]["norm"], rel=1e-10), key


def test_tanh_rnn_gradient_vanishes_with_distance_and_underflow_is_kept():
    # Small recurrent weights make ||dL/dh_t|| shrink geometrically; in float32 it reaches exactly 0 long before t=0.
    t = Trainer(tiny("model=rnn", "task.length=400", "model.hidden=16", "train.grad_profile_dtype=float32"))
    with torch.no_grad():
        t.model.core.weight_hh_l0.mul_(0.05)
    h32 = profile(t)[("h", 0)]
    assert len(h32["norm"]) == 400
    assert h32["underflow"] > 0 and h32["norm"][0] == 0.0
    assert h32["norm"][-1] > 0
    t.cfg.train.grad_profile_dtype = "float64"
    h64 = profile(t)[("h", 0)]
    assert h64["underflow"] < h32["underflow"]
    nonzero = [v for v in h64["norm"][-30:]]
    assert all(a < b for a, b in zip(nonzero, nonzero[1:]))  # monotone decay away from the loss


def test_profiles_recorded_at_start_and_end(tmp_path):
    _, run_dir = execute(tiny("train.grad_profile_every=4", "model=transformer", "model.d_model=8", "model.heads=2"),
                         tmp_path, progress=False)
    rows = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 4, 6]
    assert {r["quantity"] for r in rows} == {"x"}  # a Transformer has no recurrent state
    df = load_grad_profiles(tmp_path)
    assert set(df.columns) >= {"run_id", "step", "quantity", "layer", "t", "distance", "norm", "underflow"}
    assert len(df) == 3 * 12
    assert df.loc[df.t == 11, "distance"].eq(0).all()
