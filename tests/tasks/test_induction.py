"""Induction heads: exact layout, trigger positions and targets (uniform within standard errors), the memoryless
baseline, metrics, shapes, seeding, devices and bounds."""

import math

import pytest
import torch

from seqbench.tasks.induction import InductionTask

from .contract import gen, assert_seeded, assert_eval_stats_average_to_loss

SIZES = [  # (T, A)
    pytest.param(256, 16, id="T256-A16"),
    pytest.param(3, 3, id="T3-A3"),
    pytest.param(4, 3, id="T4-A3"),
    pytest.param(5, 16, id="T5-A16"),
    pytest.param(37, 5, id="T37-A5"),
]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]



def last_step(logits: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T, C) model output whose last step is ``logits`` (B, C) and whose other steps are garbage."""
    out = torch.full((logits.shape[0], T, logits.shape[1]), 123.0, dtype=logits.dtype)
    out[:, 0, 0] = -77.0
    out[:, -1] = logits
    return out


def one_hot(y: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, classes) logits that put class ``y`` far ahead of the others."""
    return 20.0 * torch.nn.functional.one_hot(y, classes).double()


@pytest.mark.parametrize("T,A", SIZES)
def test_layout(T, A):
    task = InductionTask(length=T, vocab=A)
    n = 3000
    x, y = task.sample(n, gen(0))
    assert task.seq_len == T and task.input_size == A and task.output_size == A - 1 and task.trigger == A - 1
    assert x.shape == (n, T) and y.shape == (n,) and x.dtype == y.dtype == torch.long
    assert x.min() == 0 and x.max() == A - 1 and y.min() == 0 and y.max() == A - 2
    is_trigger = x == A - 1
    assert (is_trigger.sum(1) == 2).all()  # exactly twice: ordinary tokens never equal A - 1
    assert is_trigger[:, -1].all()
    first = is_trigger.int().argmax(1)  # the first occurrence
    assert first.min() == 0 and first.max() == T - 3  # both ends of [0, T-3] are drawn
    assert torch.equal(y, x.gather(1, (first + 1)[:, None]).squeeze(1))
    assert (y != A - 1).all() and y.max() < task.output_size


def test_trigger_position_is_uniform():
    task = InductionTask(length=10, vocab=4)
    n = 16000
    x, _ = task.sample(n, gen(1))
    first = (x == 3).int().argmax(1)
    freq = torch.bincount(first, minlength=10).double() / n
    assert (freq[8:] == 0).all()
    se = math.sqrt(1 / 8 * 7 / 8 / n)
    assert (freq[:8] - 1 / 8).abs().max() < 5 * se, freq


def test_tokens_and_target_are_uniform():
    task = InductionTask(length=12, vocab=6)
    n = 10000
    x, y = task.sample(n, gen(2))
    ordinary = x[x != 5]
    freq = torch.bincount(ordinary, minlength=5).double() / ordinary.numel()
    assert (freq - 1 / 5).abs().max() < 5 * math.sqrt(1 / 5 * 4 / 5 / ordinary.numel()), freq
    freq = torch.bincount(y, minlength=5).double() / n
    assert (freq - 1 / 5).abs().max() < 5 * math.sqrt(1 / 5 * 4 / 5 / n), freq


@pytest.mark.parametrize("A", [3, 16, 64])
def test_memoryless_predictor_scores_baseline(A):
    task = InductionTask(length=20, vocab=A)
    n = 20000
    x, y = task.sample(n, gen(3))
    assert task.baseline_loss == pytest.approx(math.log(A - 1)) and task.chance_accuracy == pytest.approx(1 / (A - 1))
    uniform = torch.zeros(n, task.seq_len, task.output_size)
    assert task.loss(uniform, y).item() == pytest.approx(task.baseline_loss, rel=1e-6)
    # Empirically the best memoryless predictor is the target's marginal, the uniform one: its cross-entropy is the
    # entropy of the empirical distribution, which falls short of ln(A-1) by about (A-2) / (2n) only.
    marginal = torch.bincount(y, minlength=A - 1).double() / n
    logits = last_step(marginal.log().expand(n, -1), task.seq_len)
    assert task.loss(logits, y).item() == pytest.approx(task.baseline_loss, abs=(A - 2) / n + 1e-3)
    # Always answering the same token (what a model that ignores the trigger can do) scores chance accuracy.
    const = last_step(one_hot(torch.zeros(n, dtype=torch.long), A - 1), task.seq_len)
    acc = task.eval_stats(const, y)["accuracy"].mean().item()
    assert acc == pytest.approx(1 / (A - 1), abs=5 * math.sqrt(1 / (A - 1) * (1 - 1 / (A - 1)) / n))


def test_defaults():
    task = InductionTask()
    assert (task.length, task.vocab, task.solved_accuracy) == (256, 16, 0.99)
    assert task.seq_len == 256 and task.input_size == 16 and task.output_size == 15
    assert task.baseline_loss == pytest.approx(math.log(15))  # 2.708
    assert task.name == "induction" and task.input_kind == "tokens"


def test_length_generalisation_keeps_the_output_space():
    short, long = InductionTask(length=256), InductionTask(length=2048)
    assert short.output_size == long.output_size and short.baseline_loss == long.baseline_loss
    x, y = long.sample(4, gen(4))
    assert x.shape == (4, 2048) and ((x == 15).sum(1) == 2).all()
    long.loss(torch.zeros(4, 2048, 15), y)
    with pytest.raises(ValueError, match=r"\(B, 256, 15\)"):
        short.loss(torch.zeros(4, 2048, 15), y)


def test_perfect_and_wrong_answers():
    task = InductionTask(length=9, vocab=5)
    _, y = task.sample(6, gen(5))
    stats = task.eval_stats(last_step(one_hot(y, 4), 9), y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all() and (stats["loss"] < 1e-6).all()
    wrong = y.clone()
    wrong[2] = (wrong[2] + 1) % 4  # another ordinary token
    stats = task.eval_stats(last_step(one_hot(wrong, 4), 9), y)
    assert stats["accuracy"].tolist() == [1, 1, 0, 1, 1, 1]
    assert torch.equal(stats["exact"], stats["accuracy"])
    assert stats["loss"][2] > 10 and (stats["loss"][[0, 1, 3, 4, 5]] < 1e-6).all()


def test_only_the_last_position_counts():
    task = InductionTask(length=9, vocab=5)
    _, y = task.sample(6, gen(6))
    out = last_step(one_hot(y, 4), 9)
    garbage = out.clone()
    garbage[:, :-1] = torch.randn(6, 8, 4, generator=gen(7), dtype=out.dtype) * 50
    assert torch.equal(task.loss(out, y), task.loss(garbage, y))
    for k, v in task.eval_stats(out, y).items():
        assert torch.equal(v, task.eval_stats(garbage, y)[k])


@pytest.mark.parametrize("T,A", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_eval_stats_mean_equals_loss(T, A, dtype):
    task = InductionTask(length=T, vocab=A)
    assert_eval_stats_average_to_loss(task, 7, dtype, (8, 9))


def test_wrong_shapes_raise():
    task = InductionTask(length=6, vocab=4)
    x, y = task.sample(2, gen(0))
    with pytest.raises(ValueError, match=r"\(B, 6, 3\)"):
        task.loss(torch.zeros(2, 6, 4), y)  # one class too many (the trigger is never a target)
    with pytest.raises(ValueError, match=r"\(B, 6, 3\)"):
        task.eval_stats(torch.zeros(2, 5, 3), y)  # not this task's length
    with pytest.raises(ValueError, match=r"and y \(B,\)"):
        task.loss(torch.zeros(2, 6, 3), x)  # a target per position: this task has one per sequence


def test_seeding():
    task = InductionTask(length=30)
    assert_seeded(task)


@pytest.mark.parametrize("device", DEVICES)
def test_device(device):
    task = InductionTask(length=50, vocab=8)
    for dev in (device, torch.device(device)):
        x, y = task.sample(64, gen(10, device), dev)
        assert x.device.type == y.device.type == torch.device(device).type
        assert ((x == 7).sum(1) == 2).all() and (x[:, -1] == 7).all()
        out = torch.zeros(64, 50, 7, device=device)
        assert task.loss(out, y).device.type == torch.device(device).type
        assert task.loss(out, y).item() == pytest.approx(math.log(7), rel=1e-6)
    # Same seed, same device: the same data.
    assert torch.equal(task.sample(64, gen(10, device), device)[0], task.sample(64, gen(10, device), device)[0])


@pytest.mark.parametrize("field,value", [("length", 2), ("length", 0), ("vocab", 2), ("vocab", 1),
                                         ("solved_accuracy", 0.0), ("solved_accuracy", 1.01)])
def test_bounds(field, value):
    with pytest.raises(ValueError, match=f"task.{field}"):
        InductionTask(**{field: value})


def test_smallest_allowed():
    task = InductionTask(length=3, vocab=3)
    x, y = task.sample(200, gen(11))
    assert ((x[:, 0] == 2) & (x[:, 2] == 2) & (x[:, 1] != 2)).all()  # the first trigger can only be at 0
    assert torch.equal(y, x[:, 1])
    assert task.baseline_loss == pytest.approx(math.log(2))


def test_solved():
    task = InductionTask()
    assert task.solved_criterion == "eval_accuracy >= 0.99"
    assert task.solved({"eval_loss": 0.5, "eval_accuracy": 0.99})
    assert not task.solved({"eval_loss": 0.0, "eval_accuracy": 0.989})
    assert InductionTask(solved_accuracy=0.5).solved_criterion == "eval_accuracy >= 0.5"


def test_params_are_declared():
    names = [f.name for f in InductionTask.params()]
    assert names == ["length", "vocab", "solved_accuracy", "loss_positions"]
    assert all(f.metadata["help"] for f in InductionTask.params())


# --- the H3/safari protocol: next-token loss at every position, scored at the last ----------------------------------
@pytest.mark.parametrize("A,T", [(16, 256), (3, 3), (5, 12)])
def test_loss_at_every_position_uses_the_same_draws_and_scores_the_last(A, T):
    last = InductionTask(length=T, vocab=A)
    every = InductionTask(length=T, vocab=A, loss_positions="all")
    x, answer = last.sample(300, gen(2))
    x2, y = every.sample(300, gen(2))
    assert torch.equal(x, x2) and y.shape == (300, T)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], answer)  # the next token, then the answer
    assert every.output_size == A and last.output_size == A - 1  # the trigger is a next token twice
    # scored at the last position alone: right there and wrong everywhere else is accuracy 1
    logits = -20.0 * torch.ones(300, T, A, dtype=torch.float64)
    logits[:, -1].scatter_(1, answer[:, None], 20.0)
    stats = every.eval_stats(logits, y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()
    assert torch.allclose(stats["loss"], torch.full((300,), (T - 1) / T * math.log(A), dtype=torch.float64))  # all T
    assert_eval_stats_average_to_loss(every, 64, torch.float64, (5, 6))


@pytest.mark.parametrize("A,T", [(16, 64), (4, 10), (3, 3)])
def test_the_every_position_baseline_is_the_position_only_predictors_loss(A, T):
    """baseline_loss is the expected loss of the best predictor that ignores the tokens but knows the position:
    checked against that predictor's loss on sampled sequences (within 4 standard errors)."""
    task = InductionTask(length=T, vocab=A, loss_positions="all")
    x, y = task.sample(20000, gen(4))
    p = torch.zeros(T, A, dtype=torch.float64)
    q = 1 / (T - 2)
    p[:T - 3, A - 1], p[:T - 3, :A - 1] = q, (1 - q) / (A - 1)
    p[T - 3, :A - 1] = p[T - 1, :A - 1] = 1 / (A - 1)
    p[T - 2, A - 1] = 1.0
    logits = p.clamp(min=1e-300).log().expand(len(x), T, A)
    losses = task.eval_stats(logits, y)["loss"]
    se = losses.std().item() / math.sqrt(len(losses))
    assert abs(losses.mean().item() - task.baseline_loss) <= 4 * se + 1e-9
    assert InductionTask(length=T, vocab=A).baseline_loss == pytest.approx(math.log(A - 1))
