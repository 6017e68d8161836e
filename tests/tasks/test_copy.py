"""Copy task: exact layout, the memoryless baseline against the literature, metrics and seeding."""

import math

import pytest
import torch

from seqbench.tasks import CopyTask

from .contract import gen, assert_seeded, assert_eval_stats_average_to_loss

SIZES = [  # (T, c, n)
    pytest.param(100, 10, 8, id="T100-c10-n8"),
    pytest.param(1, 1, 1, id="T1-c1-n1"),
    pytest.param(1, 3, 2, id="T1-c3-n2"),
    pytest.param(7, 1, 8, id="T7-c1-n8"),
    pytest.param(13, 5, 3, id="T13-c5-n3"),
]



def memoryless_logits(task: CopyTask, batch: int) -> torch.Tensor:
    """(B, L, n + 1): blank certain for the first T + c steps, then uniform over the n symbols (blank excluded)."""
    logits = torch.full((batch, task.seq_len, task.output_size), -math.inf)
    logits[:, :task.length + task.copy_len, 0] = 0.0
    logits[:, task.recall_slice, 1:] = 0.0
    return logits


def one_hot_logits(y: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, L, classes) logits that put the target class far ahead of the others."""
    return 20.0 * torch.nn.functional.one_hot(y, classes).double()


@pytest.mark.parametrize("T,c,n", SIZES)
def test_layout(T, c, n):
    task = CopyTask(length=T, copy_len=c, n_symbols=n)
    x, y = task.sample(500, gen(0))
    L = T + 2 * c
    assert task.seq_len == L and task.input_size == n + 2 and task.output_size == n + 1
    assert x.shape == y.shape == (500, L) and x.dtype == y.dtype == torch.long
    symbols = x[:, :c]
    assert symbols.min() == 1 and symbols.max() == n  # both ends of 1..n are drawn
    assert (x[:, c:T + c - 1] == 0).all()
    assert (x[:, T + c - 1] == n + 1).all()
    assert (x[:, T + c:] == 0).all()
    assert (x == n + 1).sum() == 500  # the delimiter appears once per sequence
    assert (y[:, :T + c] == 0).all()
    assert torch.equal(y[:, task.recall_slice], symbols)
    assert task.recall_slice == slice(T + c, L)
    assert x.max() < task.input_size and y.max() < task.output_size


def test_symbols_are_uniform():
    task = CopyTask(length=2, copy_len=10, n_symbols=8)
    x, _ = task.sample(4000, gen(1))
    freq = torch.bincount(x[:, :10].flatten(), minlength=9)[1:].double() / 40000
    se = math.sqrt(1 / 8 * 7 / 8 / 40000)
    assert (freq - 1 / 8).abs().max() < 5 * se, freq


@pytest.mark.parametrize("T,literature", [(100, 0.173), (200, 0.0945), (1000, 0.0204)])
def test_memoryless_predictor_scores_baseline(T, literature):
    task = CopyTask(length=T)
    x, y = task.sample(32, gen(2))
    loss = task.loss(memoryless_logits(task, 32), y).item()
    assert loss == pytest.approx(task.baseline_loss, rel=1e-5)
    assert task.baseline_loss == pytest.approx(10 * math.log(8) / (T + 20))
    assert task.baseline_loss == pytest.approx(literature, abs=5e-4)  # the papers round to three digits


def test_memoryless_with_one_symbol_is_free():
    task = CopyTask(length=5, copy_len=3, n_symbols=1)
    _, y = task.sample(4, gen(3))
    assert task.baseline_loss == 0.0
    assert task.loss(memoryless_logits(task, 4), y).item() == 0.0


def test_random_guessing_recall_accuracy():
    task = CopyTask(length=20, copy_len=2, n_symbols=8)
    n = 10000
    _, y = task.sample(n, gen(4))
    logits = torch.randn(n, task.seq_len, task.output_size, generator=gen(5))
    logits[..., 0] = -math.inf  # guess among the symbols only
    stats = task.eval_stats(logits, y)
    acc, exact = stats["accuracy"].mean().item(), stats["exact"].mean().item()
    assert acc == pytest.approx(1 / 8, abs=5 * math.sqrt(1 / 8 * 7 / 8 / (2 * n)))
    assert exact == pytest.approx(1 / 64, abs=5 * math.sqrt(1 / 64 * 63 / 64 / n))


def test_accuracy_counts_recall_positions_only():
    task = CopyTask(length=6, copy_len=4, n_symbols=3)
    _, y = task.sample(5, gen(6))
    head = task.length + task.copy_len
    out = one_hot_logits(y, task.output_size)
    out[:, :head] = one_hot_logits(torch.ones_like(y[:, :head]), task.output_size)  # every non-recall step wrong
    stats = task.eval_stats(out, y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()
    assert (stats["loss"] > 1).all()  # ...but the loss sees them


def test_one_wrong_symbol():
    task = CopyTask(length=6, copy_len=4, n_symbols=3)
    _, y = task.sample(5, gen(7))
    wrong = y.clone()
    wrong[2, -2] = wrong[2, -2] % 3 + 1  # another data symbol
    stats = task.eval_stats(one_hot_logits(wrong, task.output_size), y)
    assert stats["accuracy"].tolist() == [1, 1, 0.75, 1, 1]
    assert stats["exact"].tolist() == [1, 1, 0, 1, 1]


@pytest.mark.parametrize("T,c,n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_eval_stats_mean_equals_loss(T, c, n, dtype):
    task = CopyTask(length=T, copy_len=c, n_symbols=n)
    assert_eval_stats_average_to_loss(task, 7, dtype, (8, 9))


def test_wrong_shapes_raise():
    task = CopyTask(length=5, copy_len=2, n_symbols=3)
    _, y = task.sample(2, gen(0))
    with pytest.raises(ValueError, match=r"\(B, 9, 4\)"):
        task.loss(torch.zeros(2, 9, 5), y)  # one class too many
    with pytest.raises(ValueError, match=r"\(B, 9, 4\)"):
        task.eval_stats(torch.zeros(2, 8, 4), y[:, :8])  # consistent, but not this task's length


def test_seeding():
    task = CopyTask(length=10)
    assert_seeded(task)


@pytest.mark.parametrize("field,value", [("length", 0), ("n_symbols", 0), ("copy_len", 0),
                                         ("solved_accuracy", 0.0), ("solved_accuracy", 1.01)])
def test_bounds(field, value):
    with pytest.raises(ValueError, match=f"task.{field}"):
        CopyTask(**{field: value})


def test_solved():
    task = CopyTask()
    assert task.solved_criterion == "eval_accuracy >= 0.99"
    assert task.solved({"eval_loss": 0.5, "eval_accuracy": 0.99})
    assert not task.solved({"eval_loss": 0.0, "eval_accuracy": 0.989})
    assert CopyTask(solved_accuracy=0.5).solved_criterion == "eval_accuracy >= 0.5"


# --- variable delay (Henaff et al. 2016) --------------------------------------------------------------------------------
def test_the_fixed_layout_draws_what_it_drew_before_the_option():
    # the fixed task draws only the symbols: nothing else from the generator, so old records' data is unchanged
    task, g, only_symbols = CopyTask(length=9, copy_len=3), gen(11), gen(11)
    x, y = task.sample(6, g)
    symbols = torch.randint(1, 9, (6, 3), generator=only_symbols)
    assert torch.equal(x[:, :3], symbols) and torch.equal(y[:, -3:], symbols)
    assert torch.equal(g.get_state(), only_symbols.get_state())  # the generator moved by the symbols' draw alone
    explicit = CopyTask(length=9, copy_len=3, variable_delay=False)
    g_explicit = gen(11)
    x_explicit, y_explicit = explicit.sample(6, g_explicit)
    assert task == explicit and torch.equal(x, x_explicit) and torch.equal(y, y_explicit)  # bitwise the default
    assert torch.equal(g_explicit.get_state(), g.get_state())


@pytest.mark.parametrize("T,c,n", SIZES)
def test_variable_delay_layout(T, c, n):
    task = CopyTask(length=T, copy_len=c, n_symbols=n, variable_delay=True)
    N = 600
    x, y = task.sample(N, gen(12))
    fixed, _ = CopyTask(length=T, copy_len=c, n_symbols=n).sample(N, gen(12))
    assert x.shape == y.shape == (N, T + 2 * c) and torch.equal(x[:, :c], fixed[:, :c])  # the same symbols first
    is_delim = x == n + 1
    assert (is_delim.sum(1) == 1).all()
    d = is_delim.int().argmax(1) - c + 1  # each sequence's delay
    assert d.min() >= 1 and d.max() <= T and (T == 1 or d.min() < d.max())
    for i in range(N):
        k = d[i].item()
        assert (x[i, c:k + c - 1] == 0).all() and (x[i, k + c:] == 0).all()
        assert torch.equal(y[i, k + c:k + 2 * c], x[i, :c])
        assert (y[i, :k + c] == 0).all() and (y[i, k + 2 * c:] == 0).all()


def test_variable_delay_is_uniform():
    task = CopyTask(length=6, copy_len=2, n_symbols=4, variable_delay=True)
    N = 12000
    x, _ = task.sample(N, gen(13))
    d = (x == 5).int().argmax(1) - 1
    assert d.min() == 1 and d.max() == 6  # both ends of 1..T are drawn
    freq = torch.bincount(d, minlength=7)[1:].double() / N
    assert (freq - 1 / 6).abs().max() < 5 * math.sqrt(1 / 6 * 5 / 6 / N), freq


def window_logits(y: torch.Tensor, task: CopyTask, symbols_known: bool) -> torch.Tensor:
    """Blank certain outside each sequence's window; inside it the symbol (known) or uniform over the n symbols."""
    window = y != 0
    logits = torch.full((*y.shape, task.output_size), -math.inf, dtype=torch.float64)
    logits[..., 0] = torch.where(window, -math.inf, 0.0)
    if symbols_known:
        return torch.where(window[..., None], 30.0 * torch.nn.functional.one_hot(y, task.output_size).double(),
                           logits)
    logits[..., 1:] = torch.where(window[..., None], 0.0, -math.inf)
    return logits


@pytest.mark.parametrize("T,c,n", SIZES)
def test_variable_delay_window_predictor_scores_baseline(T, c, n):
    task = CopyTask(length=T, copy_len=c, n_symbols=n, variable_delay=True)
    _, y = task.sample(50, gen(20))
    assert ((y != 0).sum(1) == c).all()  # the recall mask from y: exactly c positions per sequence
    loss = task.loss(window_logits(y, task, False), y).item()
    assert loss == pytest.approx(task.baseline_loss, rel=1e-12, abs=1e-15)
    assert task.baseline_loss == pytest.approx(c * math.log(n) / (T + 2 * c))
    stats = task.eval_stats(window_logits(y, task, True), y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()


@pytest.mark.parametrize("T,c,n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_the_window_from_y_gives_the_fixed_metrics_on_fixed_batches(T, c, n, dtype):
    # on a fixed-layout batch (every d = T), the per-sequence window is recall_slice: identical stats, bit for bit
    fixed, variable = CopyTask(length=T, copy_len=c, n_symbols=n), CopyTask(length=T, copy_len=c, n_symbols=n,
                                                                            variable_delay=True)
    _, y = fixed.sample(40, gen(21))
    out = torch.randn(40, fixed.seq_len, fixed.output_size, generator=gen(22), dtype=dtype)
    out[:5] = one_hot_logits(y[:5], fixed.output_size).to(dtype)  # some sequences recalled exactly
    a, b = fixed.eval_stats(out, y), variable.eval_stats(out, y)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (a["exact"][:5] == 1).all()


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_variable_delay_on_device(device):
    task = CopyTask(length=12, copy_len=3, n_symbols=5, variable_delay=True)
    x, y = task.sample(300, gen(23, device), device)
    assert x.device.type == y.device.type == device
    again = task.sample(300, gen(23, device), device)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    d = (x == 6).int().argmax(1) - 2
    assert d.min() >= 1 and d.max() <= 12 and ((x == 6).sum(1) == 1).all()
    window = y != 0
    assert torch.equal(window.int().argmax(1), d + 3) and (window.sum(1) == 3).all()
    stats = task.eval_stats(one_hot_logits(y, task.output_size), y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()


def test_variable_delay_baseline_and_metrics():
    task = CopyTask(length=15, copy_len=3, n_symbols=8, variable_delay=True)
    _, y = task.sample(64, gen(14))
    assert ((y != 0).sum(1) == 3).all()
    assert task.loss(window_logits(y, task, False), y).item() == pytest.approx(task.baseline_loss, rel=1e-12)
    perfect = window_logits(y, task, True)
    stats = task.eval_stats(perfect, y)
    assert (stats["accuracy"] == 1).all() and (stats["exact"] == 1).all()
    garbage = perfect.clone()
    garbage[y == 0] = torch.randn(int((y == 0).sum()), task.output_size, generator=gen(15), dtype=torch.float64)
    assert torch.equal(task.eval_stats(garbage, y)["accuracy"], stats["accuracy"])  # outside the window: no effect
    one_off = perfect.clone()
    first = (y[0] != 0).int().argmax().item()
    one_off[0, first] = 30.0 * torch.nn.functional.one_hot(y[0, first] % 8 + 1, task.output_size).double()
    stats = task.eval_stats(one_off, y)
    assert stats["accuracy"][0] == pytest.approx(2 / 3) and stats["exact"][0] == 0


def test_variable_delay_random_guessing_and_contract():
    task = CopyTask(length=20, copy_len=2, n_symbols=8, variable_delay=True)
    n = 8000
    _, y = task.sample(n, gen(16))
    logits = torch.randn(n, task.seq_len, task.output_size, generator=gen(17))
    logits[..., 0] = -math.inf
    acc = task.eval_stats(logits, y)["accuracy"].mean().item()
    assert acc == pytest.approx(1 / 8, abs=5 * math.sqrt(1 / 8 * 7 / 8 / (2 * n))) and task.chance_accuracy == 1 / 8
    assert_seeded(task)
    for dtype in (torch.float32, torch.float64):
        assert_eval_stats_average_to_loss(task, 9, dtype, (18, 19))
