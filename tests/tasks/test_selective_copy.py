"""Selective copying: exact layout, uniform slots and tokens, the chance predictor's loss and accuracy, that only the
marker positions count, metrics, shapes, seeding, devices and bounds."""

import math

import pytest
import torch

from seqbench.tasks.selective_copy import SelectiveCopyTask

from .contract import gen, assert_seeded, assert_eval_stats_average_to_loss

SIZES = [  # (L, M, A)
    pytest.param(256, 16, 16, id="L256-M16-A16"),
    pytest.param(1, 1, 3, id="L1-M1-A3"),
    pytest.param(3, 5, 4, id="L3-M5-A4"),
    pytest.param(40, 7, 9, id="L40-M7-A9"),
]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def at_markers(logits: torch.Tensor, task: SelectiveCopyTask) -> torch.Tensor:
    """(B, L + 2M, A-1) output whose last M steps are ``logits`` (B, M, A-1) and whose other steps are garbage."""
    out = torch.full((logits.shape[0], task.seq_len, task.output_size), 55.0, dtype=logits.dtype)
    out[:, ::3, 0] = -40.0
    out[:, -task.n_tokens:] = logits
    return out


@pytest.mark.parametrize("L,M,A", SIZES)
def test_layout(L, M, A):
    task = SelectiveCopyTask(length=L, n_tokens=M, vocab=A)
    n = 2000
    x, y = task.sample(n, gen(0))
    assert task.seq_len == L + 2 * M and task.input_size == A and task.output_size == A - 1 and task.marker == A - 1
    assert x.shape == (n, L + 2 * M) and y.shape == (n, M) and x.dtype == y.dtype == torch.long
    assert (x[:, L + M:] == A - 1).all() and ((x[:, :L + M] == A - 1).sum() == 0)  # markers: exactly the last M
    data = x[:, :L + M]
    assert ((data != 0).sum(1) == M).all()  # data tokens are never blank, so exactly M non-blank slots
    assert torch.equal(data[data != 0].view(n, M), y)  # in the order they appear
    assert y.min() == 1 and y.max() == A - 2  # both ends of 1..A-2 drawn
    assert x.max() < task.input_size and y.max() < task.output_size


def test_slots_and_tokens_are_uniform():
    task = SelectiveCopyTask(length=6, n_tokens=3, vocab=7)
    n = 20000
    x, y = task.sample(n, gen(1))
    occupied = (x[:, :9] != 0).double().mean(0)  # each of the L + M = 9 slots holds a token with probability M/9
    p = 3 / 9
    assert (occupied - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n), occupied
    freq = torch.bincount(y.flatten(), minlength=6)[1:].double() / y.numel()
    assert (freq - 1 / 5).abs().max() < 5 * math.sqrt(1 / 5 * 4 / 5 / y.numel()), freq


def test_slot_pairs_are_uniform_over_subsets():
    # every one of the C(4, 2) = 6 placements of M = 2 tokens among L + M = 4 slots is equally likely
    task = SelectiveCopyTask(length=2, n_tokens=2, vocab=5)
    n = 12000
    x, _ = task.sample(n, gen(2))
    code = ((x[:, :4] != 0).long() * torch.tensor([1, 2, 4, 8])).sum(1)
    counts = torch.bincount(code, minlength=16).double() / n
    seen = counts[counts > 0]
    assert len(seen) == 6 and (seen - 1 / 6).abs().max() < 5 * math.sqrt(1 / 6 * 5 / 6 / n), counts


@pytest.mark.parametrize("A", [4, 16, 64])
def test_chance_predictor_scores_the_baseline(A):
    task = SelectiveCopyTask(length=10, n_tokens=4, vocab=A)
    n = 8000
    _, y = task.sample(n, gen(3))
    uniform = torch.zeros(n, 4, A - 1, dtype=torch.float64)
    uniform[..., 0] = -math.inf  # uniform over the data tokens 1..A-2: blank excluded
    out = at_markers(uniform, task)
    assert task.loss(out, y).item() == pytest.approx(math.log(A - 2), rel=1e-12)
    assert task.baseline_loss == pytest.approx(math.log(A - 2)) and task.chance_accuracy == 1 / (A - 2)
    constant = torch.zeros(n, 4, A - 1, dtype=torch.float64)
    constant[..., 1] = 1.0  # always the token 1
    acc = task.eval_stats(at_markers(constant, task), y)["accuracy"].mean().item()
    p = 1 / (A - 2)
    assert abs(acc - p) < 5 * math.sqrt(p * (1 - p) / (4 * n)), acc


def test_perfect_and_one_wrong_predictor():
    task = SelectiveCopyTask(length=5, n_tokens=3, vocab=6)
    _, y = task.sample(50, gen(4))
    perfect = 30.0 * torch.nn.functional.one_hot(y, task.output_size).double()
    stats = task.eval_stats(at_markers(perfect, task), y)
    assert task.loss(at_markers(perfect, task), y).item() < 1e-10
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()
    wrong = perfect.clone()
    wrong[0, 1] = 30.0 * torch.nn.functional.one_hot((y[0, 1] % 4) + 1, task.output_size).double()  # another token
    stats = task.eval_stats(at_markers(wrong, task), y)
    assert stats["accuracy"][0] == pytest.approx(2 / 3) and stats["exact"][0] == 0
    assert (stats["accuracy"][1:] == 1).all()


def test_only_the_marker_positions_count():
    task = SelectiveCopyTask(length=8, n_tokens=3, vocab=7)
    _, y = task.sample(20, gen(5))
    out = torch.randn(20, task.seq_len, task.output_size, generator=gen(6), dtype=torch.float64)
    changed = out.clone()
    changed[:, :-3] = torch.randn(20, task.seq_len - 3, task.output_size, generator=gen(7), dtype=torch.float64)
    assert task.loss(out, y) == task.loss(changed, y)
    for k, v in task.eval_stats(out, y).items():
        assert torch.equal(v, task.eval_stats(changed, y)[k]), k


def test_seeded():
    assert_seeded(SelectiveCopyTask(length=12, n_tokens=4, vocab=8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eval_stats_average_to_loss(dtype):
    assert_eval_stats_average_to_loss(SelectiveCopyTask(length=12, n_tokens=4, vocab=8), 37, dtype, (8, 9))


@pytest.mark.parametrize("device", DEVICES)
def test_samples_on_the_generators_device(device):
    task = SelectiveCopyTask(length=9, n_tokens=3)
    x, y = task.sample(4, torch.Generator(device).manual_seed(0), device)
    assert x.device.type == y.device.type == device


@pytest.mark.parametrize("field,value,bound", [("length", 0, ">= 1"), ("n_tokens", 0, ">= 1"), ("vocab", 2, ">= 3")])
def test_bounds(field, value, bound):
    with pytest.raises(ValueError, match=rf"task\.{field} must be {bound}"):
        SelectiveCopyTask(**{field: value})


def test_shape_mismatch_is_refused():
    task = SelectiveCopyTask(length=4, n_tokens=2, vocab=5)
    _, y = task.sample(3, gen(0))
    with pytest.raises(ValueError, match=r"selective_copy: expected out \(B, 8, 4\) and y \(B, 2\)"):
        task.loss(torch.zeros(3, 8, 5), y)
    with pytest.raises(ValueError, match="selective_copy: expected"):
        task.eval_stats(torch.zeros(3, 8, 4), y[:, :1])
