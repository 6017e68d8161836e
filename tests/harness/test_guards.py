"""Guards on the numbers a run records, each written against a plausible one-line bug that the rest of the suite let
through: a non-finite gradient norm under a finite loss, evaluation data drawn from the training stream, and a resumed
run that does not restore the global torch RNG."""

import math
import time

import pytest
import torch

from seqbench.harness.train import LoopState, RunInterrupted, Trainer, derive_seed, execute

from .conftest import tiny
from .test_train import records, untimed

# --- a non-finite gradient norm under a finite loss ends the run as diverged -------------------------------------


def poison_gradient_at(monkeypatch, k, value):
    """Make the k-th training step's gradient of the first parameter `value` everywhere, leaving its loss finite."""
    original, calls = Trainer.step, {"n": 0}

    def step(self, group_norms=False):
        calls["n"] += 1
        if calls["n"] != k:
            return original(self, group_norms)
        handle = self.params[0].register_hook(lambda g: torch.full_like(g, value))
        try:
            return original(self, group_norms)
        finally:
            handle.remove()

    monkeypatch.setattr(Trainer, "step", step)


# k=3: an evaluation row; k=6: the last step, where a run that missed it would end `completed` with a NaN eval loss.
@pytest.mark.parametrize("k,value", [(3, math.nan), (6, math.inf)], ids=["nan-at-eval-row", "inf-at-last-step"])
def test_non_finite_grad_norm_with_finite_loss_ends_the_run_as_diverged(tmp_path, monkeypatch, k, value):
    poison_gradient_at(monkeypatch, k, value)
    summary, run_dir = execute(tiny(), tmp_path, progress=False)
    assert summary["status"] == "diverged"
    assert summary["diverged_step"] == k and summary["steps_done"] == k
    assert summary["final"] and all(v is None for v in summary["final"].values())
    metrics, _ = records(run_dir)
    row = metrics[-1]
    assert row["step"] == k
    assert row["train_loss"] is not None and math.isfinite(row["train_loss"])  # the loss alone looked fine
    assert row["grad_norm"] is None  # non-finite, written as null
    assert "eval_loss" not in row


# --- train, eval and gradient-profile data are three independent streams -----------------------------------------


def test_derived_seeds_differ_per_stream_and_per_seed():
    streams = ("train", "eval", "profile")
    seeds = {(seed, s): derive_seed(seed, s) for seed in (0, 1) for s in streams}
    assert len(set(seeds.values())) == len(seeds)  # no two (seed, stream) pairs share a generator seed
    assert all(0 <= v < 2**63 for v in seeds.values())  # fits torch.Generator.manual_seed
    assert derive_seed(0, "eval") == derive_seed(0, "eval")  # stable: a rerun draws the same data


def rows(x):
    return {tuple(r) for r in x.tolist()}


def test_eval_and_profile_sets_are_not_drawn_from_the_training_stream():
    """Copy-task sequences are their random symbols (8^6 possibilities), so a shared row means a shared stream. The
    training stream's first 64 sequences cover the eval set's draw whatever the batch size, had it come from there."""
    cfg = tiny("task=copy", "task.length=4", "task.copy_len=6", "train.eval_size=16", "train.grad_profile_batch=8")
    t = Trainer(cfg)
    train = t.task.sample(64, torch.Generator().manual_seed(derive_seed(cfg.data_seed, "train")))[0]
    first_batches = torch.cat([t.task.sample(cfg.train.batch_size, t.gen)[0] for _ in range(4)])  # what step() draws
    assert torch.equal(first_batches, train[:len(first_batches)])  # the trainer trains on the train stream
    eval_x, profile_x = t.eval_set[0], t.profile_batch[0]
    assert not rows(eval_x) & rows(train), "eval sequences also appear in the training stream"
    assert not rows(profile_x) & rows(train), "gradient-profile sequences also appear in the training stream"
    assert not rows(eval_x) & rows(profile_x), "the eval set and the gradient-profile batch share sequences"


def test_the_stream_name_alone_changes_the_data():
    t = Trainer(tiny("task=copy", "task.length=4", "task.copy_len=6"))
    draws = {s: t.task.sample(8, t._generator(s))[0] for s in ("train", "eval", "profile")}
    assert torch.equal(draws["eval"], t.task.sample(8, t._generator("eval"))[0])  # same name, same data
    assert not torch.equal(draws["train"], draws["eval"])
    assert not torch.equal(draws["train"], draws["profile"])
    assert not torch.equal(draws["eval"], draws["profile"])


# --- a resumed run continues the global torch RNG where the checkpoint left it ------------------------------------


def test_loading_a_checkpoint_restores_the_global_torch_rng():
    cfg = tiny()
    t = Trainer(cfg)
    torch.rand(7)  # training that consumed the global RNG (dropout would)
    ckpt = t.state_dict(LoopState(), time.perf_counter())
    expected = torch.rand(5)  # what the original process draws next
    resumed = Trainer(cfg)
    torch.manual_seed(12345)  # a fresh process is anywhere else
    resumed.load_state_dict(ckpt)
    assert torch.equal(torch.rand(5), expected)


def noisy_forward(monkeypatch):
    """A model whose training forward draws from the global torch RNG, as dropout does; evaluation stays exact."""
    original = Trainer.__init__

    def init(self, cfg):
        original(self, cfg)
        self.model.register_forward_hook(lambda m, inputs, out: out + 0.1 * torch.randn_like(out) if m.training
                                         else None)

    monkeypatch.setattr(Trainer, "__init__", init)


def test_resumed_run_that_draws_from_the_global_rng_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    noisy_forward(monkeypatch)
    cfg = tiny()
    _, ref_dir = execute(cfg, tmp_path / "ref", progress=False)

    original, calls = Trainer.step, {"n": 0}

    def step(self, group_norms=False):
        calls["n"] += 1
        if calls["n"] == 3:
            self.stop.set()  # as if SIGTERM arrived during step 3: checkpoint after it, then stop
        return original(self, group_norms)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "step", step)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path / "run", progress=False)
    torch.manual_seed(12345)  # the resuming process's RNG is anywhere
    summary, run_dir = execute(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 3
    (m_ref, s_ref), (m_run, s_run) = records(ref_dir), records(run_dir)
    assert untimed(m_run) == untimed(m_ref)
    assert s_run["final"] == s_ref["final"]
