import pytest
import torch

from seqbench.harness.train import Trainer

from .conftest import tiny


def build(*items):
    return Trainer(tiny(*items))


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_backends_load_each_others_state_dicts(model):
    a = build(f"model={model}", "model.layers=2")
    b = build(f"model={model}", "model.layers=2", "model.backend=reference")
    b.model.load_state_dict(a.model.state_dict())
    a.model.load_state_dict(b.model.state_dict())
    x, _ = a.eval_set
    torch.testing.assert_close(a.model(x[:8]), b.model(x[:8]), rtol=1e-5, atol=1e-6)


def test_lstm_forget_bias_and_orthogonal_init():
    core = build("model=lstm", "model.layers=2", "model.init=orthogonal").model.core
    H = core.hidden_size
    for layer in range(2):
        total = getattr(core, f"bias_ih_l{layer}") + getattr(core, f"bias_hh_l{layer}")
        assert torch.equal(total[H:2 * H], torch.ones(H))
        w = getattr(core, f"weight_hh_l{layer}").detach()
        for g in range(4):
            block = w[g * H:(g + 1) * H]
            torch.testing.assert_close(block @ block.T, torch.eye(H), atol=1e-5, rtol=0)
    torch_default = build("model=lstm", "model.forget_bias=null").model.core
    assert not torch.equal((torch_default.bias_ih_l0 + torch_default.bias_hh_l0)[H:2 * H], torch.ones(H))


def test_same_seed_same_init_other_seed_other_init():
    a, b, c = build("seed=3"), build("seed=3"), build("seed=4")
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("pos", ["sinusoidal", "learned"])
def test_transformer_is_causal(pos):
    t = build("task=copy", "task.length=5", "model=transformer", "model.d_model=16", "model.heads=2",
              f"model.pos_encoding={pos}")
    x, _ = t.eval_set
    x2 = x.clone()
    x2[:, 9:] = (x2[:, 9:] + 1) % t.task.input_size  # change every input from position 9 on
    with torch.no_grad():
        a, b = t.model(x[:4]), t.model(x2[:4])
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_param_groups_cover_every_parameter_once():
    for items in (["model=gru", "model.layers=2"], ["model=transformer", "model.d_model=8", "model.heads=2"]):
        m = build(*items).model
        grouped = [id(p) for ps in m.param_groups().values() for p in ps]
        assert sorted(grouped) == sorted(id(p) for p in m.parameters())


def test_token_and_feature_inputs_shapes():
    for task in (["task=copy", "task.length=4"], ["task=adding", "task.length=6"]):
        for model in (["model=lstm"], ["model=transformer", "model.d_model=8", "model.heads=2"]):
            t = build(*task, *model)
            x, _ = t.eval_set
            assert t.model(x[:3]).shape == (3, t.task.seq_len, t.task.output_size)


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_triton_backend_matches_torch_and_records_its_path(tmp_path, model):
    from seqbench.harness.train import execute

    a = build(f"model={model}")
    b = build(f"model={model}", "model.backend=triton")
    b.model.load_state_dict(a.model.state_dict())
    x, _ = a.eval_set
    with torch.no_grad():
        torch.testing.assert_close(b.model(x[:5]), a.model(x[:5]), rtol=1e-5, atol=1e-6)
    summary, _ = execute(tiny(f"model={model}", "model.backend=triton", "train.steps=2"), tmp_path, progress=False)
    assert summary["status"] == "completed" and summary["backend"] == "triton"
    # under the interpreter (tests set TRITON_INTERPRET=1 without a GPU) the fused kernel itself runs
    assert summary["kernel_path"].endswith("fused-triton"), summary["kernel_path"]


def test_triton_backend_above_the_one_program_limit_takes_the_split_kernels(tmp_path):
    from seqbench.harness.train import execute

    # the smallest run that trains and evaluates: each interpreted launch is slow
    summary, _ = execute(tiny("model=lstm", "model.backend=triton", "model.hidden=70", "train.steps=1", "task.length=4",
                              "train.batch_size=2", "train.eval_size=2", "train.grad_profile_batch=1"), tmp_path,
                         progress=False)
    assert summary["status"] == "completed"
    # on CPU (the interpreter) the split kernels launch once per step
    assert summary["kernel_path"].endswith("fused-triton-split-stepwise"), summary["kernel_path"]


# --- rotary and no positional encoding ----------------------------------------------------------------------------
def test_rotary_attention_depends_on_relative_position_only_and_keeps_norms():
    from seqbench.harness.models.transformer import rotary

    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64) for _ in range(2))
    L = 12

    def at(x, m):  # x placed at position m of a sequence of L, rotated
        seq = torch.zeros(1, 1, L, 8, dtype=torch.float64)
        seq[:, :, m] = x
        return rotary(seq)[0, 0, m]

    for m, n in [(3, 1), (7, 5), (11, 9), (2, 0)]:  # the same offset m - n = 2 everywhere
        assert torch.dot(at(q[0, 0, 0], m), at(k[0, 0, 0], n)).item() == pytest.approx(
            torch.dot(at(q[0, 0, 0], 2), at(k[0, 0, 0], 0)).item(), rel=1e-12)
    assert torch.dot(at(q[0, 0, 0], 5), at(k[0, 0, 0], 1)).item() != pytest.approx(
        torch.dot(at(q[0, 0, 0], 2), at(k[0, 0, 0], 0)).item(), rel=1e-6)  # another offset, another score
    x = torch.randn(2, 3, L, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rotary(x).norm(dim=-1), x.norm(dim=-1))  # a rotation
    torch.testing.assert_close(rotary(x)[:, :, 0], x[:, :, 0])  # position 0: angle 0


@pytest.mark.parametrize("pos", ["rope", "none"])
def test_a_transformer_with_rope_or_no_encoding_is_causal_and_adds_nothing_to_its_input(pos):
    t = build("task=copy", "task.length=5", "model=transformer", "model.d_model=16", "model.heads=2",
              f"model.pos_encoding={pos}")
    assert not hasattr(t.model.encoder, "pos")  # nothing added to the embedding
    assert all(block.rope == (pos == "rope") for block in t.model.blocks)
    x, _ = t.eval_set
    x2 = x.clone()
    x2[:, 9:] = (x2[:, 9:] + 1) % t.task.input_size
    with torch.no_grad():
        a, b = t.model(x[:4]), t.model(x2[:4])
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_rope_needs_an_even_head_dimension():
    from seqbench.harness.config import ConfigError

    with pytest.raises(ConfigError, match=r"model.pos_encoding=rope .* = 3 must be even"):
        build("model=transformer", "model.d_model=6", "model.heads=2", "model.pos_encoding=rope")
