"""Checks every task's tests make in the same way: seeded sampling, and per-sequence eval stats that average to the
training loss (which makes chunked evaluation exact)."""

import torch


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def assert_seeded(task, n: int = 16) -> tuple:
    """Same seed, same batch; another seed, another batch; one generator drawn twice, two batches. Returns the two
    batches drawn from one generator, for task-specific checks."""
    a, b = task.sample(n, gen(0)), task.sample(n, gen(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], task.sample(n, gen(1))[0])
    g = gen(0)
    first, second = task.sample(n, g), task.sample(n, g)
    assert not torch.equal(first[0], second[0])
    return first, second


def assert_eval_stats_average_to_loss(task, n: int, dtype: torch.dtype, seeds: tuple[int, int]) -> tuple:
    """eval_stats gives loss, accuracy and exact per sequence, in the output's dtype, and the mean loss is loss().
    Returns (out, y) for task-specific checks."""
    _, y = task.sample(n, gen(seeds[0]))
    out = torch.randn(n, task.seq_len, task.output_size, generator=gen(seeds[1]), dtype=dtype)
    stats = task.eval_stats(out, y)
    assert set(stats) == {"loss", "accuracy", "exact"}
    assert all(v.shape == (n,) and v.dtype == dtype for v in stats.values())
    torch.testing.assert_close(stats["loss"].mean(), task.loss(out, y))
    return out, y
