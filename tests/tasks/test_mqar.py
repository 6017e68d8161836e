"""MQAR: exact layout (prefix, query slots, targets), the power-law gap distribution against the analytic p(i), the
memoryless baseline, metrics, the paper's constraints, shapes, seeding, devices and bounds."""

import math

import pytest
import torch
from torch.nn import functional as F

from seqbench.tasks.mqar import IGNORE, MQARTask

from .contract import gen, assert_seeded, assert_eval_stats_average_to_loss

SIZES = [  # (V, D, T)
    pytest.param(8192, 8, 128, id="V8192-D8-T128"),
    pytest.param(64, 4, 16, id="V64-D4-T16"),
    pytest.param(5, 1, 4, id="V5-D1-T4"),
    pytest.param(41, 10, 40, id="V41-D10-T40"),  # 4D = T and V = T + 1: no free slot, tightest vocabulary
    pytest.param(100, 3, 60, id="V100-D3-T60"),
]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def query_positions(y: torch.Tensor) -> torch.Tensor:
    """(B, D) positions of the targets, in order, assuming each row has the same number."""
    mask = y != IGNORE
    return mask.nonzero()[:, 1].view(y.shape[0], -1)


def one_hot_logits(target: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, T, classes) logits far ahead for ``target`` (IGNORE positions point at class 0)."""
    return 20.0 * F.one_hot(target.clamp(min=0), classes).double()


@pytest.mark.parametrize("V,D,T", SIZES)
def test_layout(V, D, T):
    task = MQARTask(vocab=V, num_kv_pairs=D, length=T)
    n, K = 300, V // 2
    x, y = task.sample(n, gen(0))
    assert task.seq_len == T and task.input_size == V and task.output_size == V
    assert x.shape == y.shape == (n, T) and x.dtype == y.dtype == torch.long
    assert x.min() >= 0 and x.max() < V
    keys, values = x[:, 0:2 * D:2], x[:, 1:2 * D:2]
    assert keys.min() >= 1 and keys.max() < K and values.min() >= K and values.max() < V
    assert (keys.sort(1).values.diff(dim=1) > 0).all() and (values.sort(1).values.diff(dim=1) > 0).all()  # distinct
    mask = y != IGNORE
    assert (mask.sum(1) == D).all()  # exactly D targets per sequence...
    assert not mask[:, :2 * D].any()  # ...none in the prefix...
    assert not mask[:, 2 * D + 1::2].any()  # ...and only at even offsets after it
    where = query_positions(y)
    queried = x.gather(1, where)  # (n, D)
    match = queried.unsqueeze(2) == keys.unsqueeze(1)  # (n, D queries, D keys)
    assert (match.sum(2) == 1).all() and (match.sum(1) == 1).all()  # each key queried exactly once
    expected = (match * values.unsqueeze(1)).sum(2)  # the value stored with the queried key
    assert torch.equal(y.gather(1, where), expected)
    assert ((y[mask] >= K) & (y[mask] < V)).all()


def test_small_vocabulary_covers_both_ranges():
    task = MQARTask(vocab=13, num_kv_pairs=2, length=12)  # K = 6: keys 1..5, values 6..12
    x, y = task.sample(2000, gen(1))
    keys, values = x[:, 0:4:2], x[:, 1:4:2]
    assert set(keys.unique().tolist()) == set(range(1, 6))
    assert set(values.unique().tolist()) == set(range(6, 13))
    assert task.baseline_loss == pytest.approx(math.log(7)) and task.chance_accuracy == pytest.approx(1 / 7)


def test_filler_is_uniform_over_the_vocabulary():
    task = MQARTask(vocab=16, num_kv_pairs=1, length=14)
    n = 4000
    x, y = task.sample(n, gen(2))
    filler = x[:, 2:][y[:, 2:] == IGNORE]  # every non-query position after the prefix
    assert filler.numel() == n * 11
    freq = torch.bincount(filler, minlength=16).double() / filler.numel()
    se = math.sqrt(1 / 16 * 15 / 16 / filler.numel())
    assert (freq - 1 / 16).abs().max() < 5 * se, freq


@pytest.mark.parametrize("a", [0.01, 0.5, 1.0])
def test_single_query_gap_follows_power_law(a):
    task = MQARTask(vocab=40, num_kv_pairs=1, length=2 + 2 * 10, power_a=a)  # 10 slots
    n = 20000
    _, y = task.sample(n, gen(3))
    slot = (query_positions(y)[:, 0] - 2) // 2  # 0-based: slot i = slot + 1
    freq = torch.bincount(slot, minlength=10).double() / n
    i = torch.arange(1, 11, dtype=torch.float64)
    p = a * i ** (a - 1)
    p /= p.sum()
    torch.testing.assert_close(task.slot_probabilities(), p)
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() < 5 * se + 1e-12).all(), (freq, p)
    if a < 1:
        assert freq[0] > 2 * freq[-1]  # short gaps favoured


def test_several_queries_follow_sampling_without_replacement():
    """With D = 2, slot i is used with probability p_i + sum_{j != i} p_j p_i / (1 - p_j) (sequential draws)."""
    task = MQARTask(vocab=40, num_kv_pairs=2, length=4 + 2 * 8)  # 8 slots
    n = 20000
    _, y = task.sample(n, gen(4))
    slots = (query_positions(y) - 4) // 2
    freq = torch.bincount(slots.flatten(), minlength=8).double() / n
    p = task.slot_probabilities()
    second = (p.unsqueeze(1) * p.unsqueeze(0) / (1 - p.unsqueeze(1)))  # [j, i]: j first, then i
    second.fill_diagonal_(0)
    inclusion = p + second.sum(0)
    assert inclusion.sum().item() == pytest.approx(2.0)
    se = (inclusion * (1 - inclusion) / n).sqrt()
    assert ((freq - inclusion).abs() < 5 * se).all(), (freq, inclusion)
    assert (slots[:, 0] != slots[:, 1]).all()


@pytest.mark.parametrize("V", [8192, 64, 65])
def test_memoryless_predictor_scores_baseline(V):
    task = MQARTask(vocab=V, num_kv_pairs=4, length=32)
    _, y = task.sample(16, gen(5))
    logits = torch.full((16, 32, V), -math.inf)
    logits[..., V // 2:] = 0.0  # uniform over the values, everywhere
    assert task.loss(logits, y).item() == pytest.approx(task.baseline_loss, rel=1e-6)
    assert task.baseline_loss == pytest.approx(math.log(V - V // 2))
    if V % 2 == 0:
        assert task.baseline_loss == pytest.approx(math.log(V / 2)) and task.chance_accuracy == 2 / V


def test_random_guessing_accuracy_is_chance():
    task = MQARTask(vocab=64, num_kv_pairs=2, length=16)
    n = 10000
    _, y = task.sample(n, gen(6))
    logits = torch.randn(n, 16, 64, generator=gen(7))
    logits[..., :32] = -math.inf  # guess among the values only
    stats = task.eval_stats(logits, y)
    acc, exact = stats["accuracy"].mean().item(), stats["exact"].mean().item()
    assert acc == pytest.approx(task.chance_accuracy, abs=5 * math.sqrt(1 / 32 * 31 / 32 / (2 * n)))
    assert exact == pytest.approx(1 / 32 ** 2, abs=5 * math.sqrt(1 / 1024 / n) + 1e-4)


def test_defaults():
    task = MQARTask()
    assert (task.vocab, task.num_kv_pairs, task.length, task.power_a) == (8192, 8, 128, 0.01)
    assert task.seq_len == 128 and task.input_size == task.output_size == 8192 and task.num_slots == 56
    assert task.baseline_loss == pytest.approx(math.log(4096)) and task.chance_accuracy == 2 / 8192
    assert task.name == "mqar" and task.input_kind == "tokens"


def test_only_query_positions_count():
    task = MQARTask(vocab=32, num_kv_pairs=3, length=24)
    _, y = task.sample(5, gen(8))
    out = one_hot_logits(y, 32)
    mask = y != IGNORE
    stats = task.eval_stats(out, y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()
    scrambled = torch.where(mask.unsqueeze(-1), out, torch.randn(out.shape, generator=gen(9), dtype=out.dtype))
    again = task.eval_stats(scrambled, y)
    assert all(torch.equal(stats[k], again[k]) for k in stats)  # other positions neither help nor hurt
    assert task.loss(scrambled, y) == task.loss(out, y)


def test_one_wrong_value():
    task = MQARTask(vocab=32, num_kv_pairs=4, length=24)
    _, y = task.sample(5, gen(10))
    wrong = y.clone()
    p = query_positions(y)[2, 1]
    wrong[2, p] = 16 + (wrong[2, p] - 16 + 1) % 16  # another value
    stats = task.eval_stats(one_hot_logits(wrong, 32), y)
    assert stats["accuracy"].tolist() == [1, 1, 0.75, 1, 1]
    assert stats["exact"].tolist() == [1, 1, 0, 1, 1]


@pytest.mark.parametrize("V,D,T", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_eval_stats_mean_equals_loss(V, D, T, dtype):
    task = MQARTask(vocab=V, num_kv_pairs=D, length=T)
    out, y = assert_eval_stats_average_to_loss(task, 6, dtype, (11, 12))
    # The same as Zoology's convention: cross-entropy over all positions with the ignore index.
    torch.testing.assert_close(task.loss(out, y), F.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=-100))


def test_loss_has_gradient_at_query_positions_only():
    task = MQARTask(vocab=32, num_kv_pairs=2, length=16)
    _, y = task.sample(3, gen(13))
    out = torch.randn(3, 16, 32, generator=gen(14), requires_grad=True)
    task.loss(out, y).backward()
    touched = out.grad.abs().sum(-1) > 0
    assert torch.equal(touched, y != IGNORE)


def test_wrong_shapes_raise():
    task = MQARTask(vocab=32, num_kv_pairs=2, length=16)
    _, y = task.sample(2, gen(0))
    with pytest.raises(ValueError, match=r"\(B, 16, 32\)"):
        task.loss(torch.zeros(2, 16, 31), y)
    with pytest.raises(ValueError, match=r"\(B, 16, 32\)"):
        task.eval_stats(torch.zeros(2, 14, 32), y[:, :14])


def test_seeding():
    task = MQARTask(vocab=64, num_kv_pairs=4, length=32)
    first, second = assert_seeded(task)
    assert not torch.equal(first[1], second[1])


@pytest.mark.parametrize("device", DEVICES)
def test_device(device):
    task = MQARTask(vocab=128, num_kv_pairs=4, length=64)
    x, y = task.sample(8, gen(0, device), device=device)
    assert x.device.type == y.device.type == device
    out = torch.randn(8, 64, 128, device=device)
    stats = task.eval_stats(out, y)
    assert all(v.device.type == device for v in stats.values())
    assert task.loss(out, y).device.type == device


@pytest.mark.parametrize("params,message", [
    (dict(length=127), r"^task.length=127: MQAR needs an even length"),
    (dict(num_kv_pairs=40, length=128), r"^task.num_kv_pairs=40 and task.length=128: MQAR needs 4·num_kv_pairs <= length$"),
    (dict(num_kv_pairs=33), r"^task.num_kv_pairs=33 and task.length=128"),
    (dict(vocab=128), r"^task.vocab=128 and task.length=128: MQAR needs vocab > length$"),
    (dict(vocab=16, num_kv_pairs=8, length=128), r"^task.num_kv_pairs=8 and task.vocab=16: .*<= vocab//2 - 1 = 7$"),
])
def test_constraints(params, message):
    with pytest.raises(ValueError, match=message):
        MQARTask(**params)


@pytest.mark.parametrize("field,value", [("vocab", 3), ("num_kv_pairs", 0), ("length", 2), ("power_a", 0.0),
                                         ("solved_accuracy", 0.0), ("solved_accuracy", 1.01)])
def test_bounds(field, value):
    with pytest.raises(ValueError, match=f"task.{field}"):
        MQARTask(**{field: value})


def test_smallest_allowed():
    task = MQARTask(vocab=5, num_kv_pairs=1, length=4)
    x, y = task.sample(3, gen(0))
    assert (x[:, 0] == 1).all() and (x[:, 2] == 1).all()  # the only key, queried at the only slot
    assert torch.equal(y[:, 2], x[:, 1]) and (y[:, [0, 1, 3]] == IGNORE).all()


def test_solved():
    task = MQARTask()
    assert task.solved_criterion == "eval_accuracy >= 0.99"
    assert task.solved({"eval_loss": 0.5, "eval_accuracy": 0.99})
    assert not task.solved({"eval_loss": 0.0, "eval_accuracy": 0.989})
    assert MQARTask(solved_accuracy=0.5).solved_criterion == "eval_accuracy >= 0.5"


def test_params_are_declared():
    fields = {f.name: f.metadata for f in MQARTask.params()}
    assert list(fields) == ["vocab", "num_kv_pairs", "length", "power_a", "solved_accuracy", "random_non_queries"]
    assert all(meta["help"] for meta in fields.values())


# --- Zoology's filler mode and the no-binding level ------------------------------------------------------------------
@pytest.mark.parametrize("V,D,T", SIZES)
def test_without_random_non_queries_every_filler_position_holds_token_0(V, D, T):
    """Zoology's `random_non_queries: False`: after the prefix, every position but the D queries holds 0 (neither
    a key nor a value); the prefix, the queries and the targets are laid out as in the random mode."""
    task = MQARTask(vocab=V, num_kv_pairs=D, length=T, random_non_queries=False)
    x, y = task.sample(200, gen(3))
    query = y != IGNORE
    after = torch.zeros_like(query)
    after[:, 2 * D:] = True
    assert (x[after & ~query] == 0).all() and (query.sum(1) == D).all()
    keys, values = x[:, 0:2 * D:2], x[:, 1:2 * D:2]
    asked = x.gather(1, query_positions(y))  # the keys at the query positions, in position order
    answer = y.gather(1, query_positions(y))
    for row in range(x.shape[0]):
        value_of = dict(zip(keys[row].tolist(), values[row].tolist()))
        assert sorted(asked[row].tolist()) == sorted(value_of)  # every key asked once
        assert answer[row].tolist() == [value_of[k] for k in asked[row].tolist()]


def test_the_random_filler_stays_the_default_with_its_draws_and_its_run_ids():
    """Records made before the mode existed are the random mode: the same draws, and their configs keep their ids."""
    import json
    from pathlib import Path

    from seqbench.harness.config import RunConfig

    given = MQARTask(vocab=64, num_kv_pairs=4, length=32, random_non_queries=True)
    default = MQARTask(vocab=64, num_kv_pairs=4, length=32)
    assert all(torch.equal(a, b) for a, b in zip(given.sample(64, gen(1)), default.sample(64, gen(1))))
    recorded = sorted((Path(__file__).parents[2] / "results" / "reference" / "recall").glob("*/config.json"))
    mqar = [p for p in recorded if json.loads(p.read_text())["task"]["name"] == "mqar"]
    assert mqar, "the committed recall records include MQAR runs"
    for path in mqar:
        config = json.loads(path.read_text())
        assert "random_non_queries" not in config["task"]  # made before the key existed
        assert RunConfig.model_validate(config).run_id == path.parent.name
        zoology = {**config, "task": {**config["task"], "random_non_queries": False}}
        assert RunConfig.model_validate(zoology).run_id != path.parent.name


@pytest.mark.parametrize("random_filler", [True, False])
def test_guessing_among_the_sequences_values_is_the_no_binding_level(random_filler):
    """A predictor that finds the D values in the prefix and picks one at random for each query: loss ln D exactly,
    accuracy 1/D (within 5 standard errors)."""
    V, D, T, n = 64, 4, 32, 4000
    task = MQARTask(vocab=V, num_kv_pairs=D, length=T, random_non_queries=random_filler)
    x, y = task.sample(n, gen(5))
    values = x[:, 1:2 * D:2]  # (n, D)
    logits = torch.full((n, T, V), -1e4, dtype=torch.float64)
    noise = 1e-9 * torch.rand(n, T, D, generator=gen(6), dtype=torch.float64)  # breaks the tie at random
    logits.scatter_(2, values[:, None, :].expand(n, T, D), noise)
    stats = task.eval_stats(logits, y)
    assert task.no_binding_accuracy == 1 / D and task.no_binding_loss == pytest.approx(math.log(D))
    assert stats["loss"].mean().item() == pytest.approx(task.no_binding_loss, abs=1e-6)
    se = math.sqrt((1 / D) * (1 - 1 / D) / (n * D))
    assert abs(stats["accuracy"].mean().item() - task.no_binding_accuracy) < 5 * se
