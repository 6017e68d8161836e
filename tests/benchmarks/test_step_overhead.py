"""Harness training step vs a bare hand-written PyTorch loop (adding, T=100, LSTM H=64, B=64), on the CPU and, where
there is one, on a GPU.

Run with `make bench` (or `pytest tests/benchmarks --benchmark-only`); goals: harness <= 1.03x bare on the CPU and
<= 1.05x on CUDA, data generation <= 2% of a step. Under `--benchmark-disable` (CI) each function runs once, so the
correctness check still executes. On CUDA a timed round is STEPS steps and one synchronize, so that the host can run
ahead of the GPU as it does in training (the harness synchronizes only when it writes a metrics row).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from seqbench.harness.config import parse_overrides, resolve
from seqbench.harness.train import Trainer

CONFIG = ["task=adding", "task.length=100", "model=lstm", "model.hidden=64", "train.batch_size=64",
          "train.eval_size=64", "train.grad_profile_batch=1"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="needs a CUDA GPU"))]
STEPS = 10  # per timed round on CUDA


def bare_step(model, opt, task, gen, device="cpu", batch_size=64):
    """What a researcher would write by hand: sample, forward, MSE at the last step, backward, clip, step."""
    x, y = task.sample(batch_size, gen, device)
    loss = F.mse_loss(model(x)[:, -1, 0], y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


@pytest.fixture(scope="module", params=DEVICES)
def trainer(request):
    return Trainer(resolve(parse_overrides([*CONFIG, f"device={request.param}"])))


def group(trainer):
    return f"adding-T100-lstm-H64-B64-{trainer.device.type}"


def timed(benchmark, trainer, fn, *args):
    """CPU: one step a round; CUDA: STEPS steps and a synchronize (the time per step is the round's / STEPS)."""
    benchmark.group = group(trainer)
    if trainer.device.type != "cuda":
        return benchmark.pedantic(fn, args=args, rounds=60, warmup_rounds=5)

    def steps():
        for _ in range(STEPS):
            fn(*args)
        torch.cuda.synchronize()

    benchmark.extra_info["steps_per_round"] = STEPS
    return benchmark.pedantic(steps, rounds=30, warmup_rounds=3)


def bare_copy(trainer):
    model = copy.deepcopy(trainer.model)
    opt = torch.optim.Adam(model.parameters(), lr=trainer.cfg.train.lr)
    gen = torch.Generator(trainer.device).set_state(trainer.gen.get_state())
    return model, opt, gen


def test_bare_loop_matches_harness_step(trainer):
    """Correctness before timing: from the same state and data, both loops make bitwise the same update."""
    model, opt, gen = bare_copy(trainer)
    bare_loss = bare_step(model, opt, trainer.task, gen, trainer.device)
    loss, _, _ = trainer.step()
    assert loss.item() == bare_loss.item()
    for (name, a), b in zip(trainer.model.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name


def test_harness_step(benchmark, trainer):
    timed(benchmark, trainer, trainer.step)


def test_bare_step(benchmark, trainer):
    model, opt, gen = bare_copy(trainer)
    timed(benchmark, trainer, bare_step, model, opt, trainer.task, gen, trainer.device)


def test_data_generation(benchmark, trainer):
    gen = torch.Generator(trainer.device).manual_seed(0)
    benchmark.group = group(trainer)
    x, y = benchmark(trainer.task.sample, 64, gen, trainer.device)
    assert x.shape == (64, 100, 2) and y.shape == (64,) and x.device.type == trainer.device.type
