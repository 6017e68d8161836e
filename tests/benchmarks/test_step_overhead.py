"""Harness training step vs a bare hand-written PyTorch loop (adding, T=100, LSTM H=64, B=64, CPU).

Run with `make bench` (or `pytest tests/benchmarks --benchmark-only`); goals: harness <= 1.03x bare, data generation
<= 2% of a step. Under `--benchmark-disable` (CI) each function runs once, so the correctness check still executes.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from seqbench.harness.config import parse_overrides, resolve
from seqbench.harness.train import Trainer

CONFIG = ["task=adding", "task.length=100", "model=lstm", "model.hidden=64", "train.batch_size=64", "device=cpu",
          "train.eval_size=64", "train.grad_profile_batch=1"]
GROUP = "adding-T100-lstm-H64-B64-cpu"


def bare_step(model, opt, task, gen, batch_size=64):
    """What a researcher would write by hand: sample, forward, MSE at the last step, backward, clip, step."""
    x, y = task.sample(batch_size, gen, "cpu")
    loss = F.mse_loss(model(x)[:, -1, 0], y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


@pytest.fixture(scope="module")
def trainer():
    return Trainer(resolve(parse_overrides(CONFIG)))


def bare_copy(trainer):
    model = copy.deepcopy(trainer.model)
    opt = torch.optim.Adam(model.parameters(), lr=trainer.cfg.train.lr)
    gen = torch.Generator().set_state(trainer.gen.get_state())
    return model, opt, gen


def test_bare_loop_matches_harness_step(trainer):
    """Correctness before timing: from the same state and data, both loops make bitwise the same update."""
    model, opt, gen = bare_copy(trainer)
    bare_loss = bare_step(model, opt, trainer.task, gen)
    loss, _, _ = trainer.step()
    assert loss.item() == bare_loss.item()
    for (name, a), b in zip(trainer.model.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.benchmark(group=GROUP)
def test_harness_step(benchmark, trainer):
    benchmark.pedantic(trainer.step, rounds=60, warmup_rounds=5)


@pytest.mark.benchmark(group=GROUP)
def test_bare_step(benchmark, trainer):
    model, opt, gen = bare_copy(trainer)
    benchmark.pedantic(bare_step, args=(model, opt, trainer.task, gen), rounds=60, warmup_rounds=5)


@pytest.mark.benchmark(group=GROUP)
def test_data_generation(benchmark, trainer):
    gen = torch.Generator().manual_seed(0)
    x, y = benchmark(trainer.task.sample, 64, gen, "cpu")
    assert x.shape == (64, 100, 2) and y.shape == (64,)
