"""Adding problem: one marker per half, targets, the analytic baselines (checked within standard errors), seeding."""

import math

import pytest
import torch

from seqbench.tasks import AddingTask

from .contract import gen, assert_seeded

LENGTHS = [2, 3, 4, 101, 100]



def last_step(pred: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T, 1) model output whose last step is ``pred`` (B,) and whose other steps are garbage."""
    out = torch.full((pred.shape[0], T, 1), 123.0, dtype=pred.dtype)
    out[:, -1, 0] = pred
    return out


@pytest.mark.parametrize("T", LENGTHS, ids=[f"T{T}" for T in LENGTHS])
def test_layout(T):
    task = AddingTask(length=T)
    x, y = task.sample(4000, gen(0))
    assert task.seq_len == T and task.input_size == 2 and task.output_size == 1
    assert x.shape == (4000, T, 2) and y.shape == (4000,) and x.dtype == y.dtype == torch.float32
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert ((markers == 0) | (markers == 1)).all()
    half = T // 2
    assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
    # Every position of each half is drawn (4000 draws, at most 51 positions: a miss has odds below 1e-30).
    assert (markers[:, :half].sum(0) > 0).all() and (markers[:, half:].sum(0) > 0).all()
    # Adding exact zeros is exact, so the target is the float32 sum of the two marked values, bit for bit.
    assert torch.equal(y, (values * markers).sum(1))


def test_constant_predictor_scores_one_sixth():
    # The error S - 1 of predicting 1 is triangular on [-1, 1]: mean square 1/6, fourth moment 1/15.
    task, n = AddingTask(length=10), 100_000
    _, y = task.sample(n, gen(1))
    stats = task.eval_stats(last_step(torch.ones(n), 10), y)
    se = math.sqrt((1 / 15 - 1 / 36) / n)
    assert stats["loss"].mean().item() == pytest.approx(1 / 6, abs=5 * se)
    assert task.baseline_loss == pytest.approx(1 / 6)
    # P(|S - 1| < 0.04) = 1 - 0.96^2 for the triangular error.
    p = 1 - 0.96**2
    assert stats["accuracy"].mean().item() == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))


def test_remembering_one_value_scores_one_twelfth():
    # Predicting v1 + E[v2] leaves the error 1/2 - v2, uniform on (-1/2, 1/2]: mean square 1/12, fourth moment 1/80.
    task, n = AddingTask(length=10), 100_000
    x, y = task.sample(n, gen(2))
    first = x[:, :5, 1].argmax(1)
    pred = x[torch.arange(n), first, 0] + 0.5
    loss = task.loss(last_step(pred, 10), y).item()
    assert loss == pytest.approx(1 / 12, abs=5 * math.sqrt((1 / 80 - 1 / 144) / n))


def test_accuracy_threshold():
    task = AddingTask(length=6)
    _, y = task.sample(8, gen(3))
    for offset, expected in [(0.0, 1.0), (0.039, 1.0), (-0.039, 1.0), (0.041, 0.0), (-0.041, 0.0)]:
        stats = task.eval_stats(last_step(y.double() + offset, 6), y)
        assert (stats["accuracy"] == expected).all(), offset


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_loss_uses_last_step_and_eval_mean_equals_loss(dtype):
    task = AddingTask(length=7)
    _, y = task.sample(9, gen(4))
    pred = torch.rand(9, generator=gen(5), dtype=dtype) * 2
    out = last_step(pred, 7)
    loss = task.loss(out, y)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, ((pred - y.to(dtype)) ** 2).mean())
    stats = task.eval_stats(out, y)
    assert all(v.shape == (9,) and v.dtype == dtype for v in stats.values())
    torch.testing.assert_close(stats["loss"].mean(), loss)
    assert task.loss(last_step(y.to(dtype), 7), y).item() == 0.0


def test_float64_loss_keeps_its_gradient():
    task = AddingTask(length=4)
    _, y = task.sample(3, gen(6))
    out = torch.zeros(3, 4, 1, dtype=torch.float64, requires_grad=True)
    task.loss(out, y).backward()
    assert out.grad.dtype == torch.float64
    assert (out.grad[:, :-1] == 0).all() and (out.grad[:, -1, 0] != 0).all()


def test_wrong_shapes_raise():
    task = AddingTask(length=5)
    _, y = task.sample(2, gen(0))
    with pytest.raises(ValueError, match=r"\(B, 5, 1\)"):
        task.loss(torch.zeros(2, 5), y)
    with pytest.raises(ValueError, match=r"\(B, 5, 1\)"):
        task.eval_stats(torch.zeros(3, 5, 1), y)


def test_seeding():
    task = AddingTask(length=10)
    assert_seeded(task)


@pytest.mark.parametrize("field,value", [("length", 1), ("solved_mse", 0.0)])
def test_bounds(field, value):
    with pytest.raises(ValueError, match=f"task.{field}"):
        AddingTask(**{field: value})


def test_solved():
    task = AddingTask()
    assert task.solved_criterion == "eval_loss < 0.01"
    assert task.solved({"eval_loss": 0.009, "eval_accuracy": 0.0})
    assert not task.solved({"eval_loss": 0.01, "eval_accuracy": 1.0})
