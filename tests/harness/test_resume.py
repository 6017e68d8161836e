
import pytest
import torch

from seqbench.harness.loaders import load_runs
from seqbench.harness.provenance import git_state
from seqbench.harness.records import CHECKPOINT, claim
from seqbench.harness.train import RunInterrupted, Trainer, execute

from .conftest import tiny
from .test_train import records, untimed


def interrupt_at(monkeypatch, k):
    """Make the k-th training step behave as if SIGTERM arrived during it."""
    original, calls = Trainer.step, {"n": 0}

    def step(self, group_norms=False):
        calls["n"] += 1
        if calls["n"] == k:
            self.stop.set()
        return original(self, group_norms)

    monkeypatch.setattr(Trainer, "step", step)


def test_checkpoint_every_is_not_part_of_the_run_id():
    assert tiny("train.checkpoint_every=0").run_id == tiny("train.checkpoint_every=3").run_id


@pytest.mark.parametrize("model", ["lstm", "transformer"])
@pytest.mark.parametrize("k", [1, 3, 5])  # mid-interval, on an eval row, just before the end
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, monkeypatch, model, k):
    cfg = tiny(f"model={model}", "train.grad_profile_every=4", "train.optimizer=adamw")
    _, ref_dir = execute(cfg, tmp_path / "ref", progress=False)

    with monkeypatch.context() as m:
        interrupt_at(m, k)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path / "run", progress=False)
    run_dir = tmp_path / "run" / cfg.run_id
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / "summary.json").exists()
    unfinished = load_runs(tmp_path / "run").iloc[0]
    assert unfinished["status"] == "incomplete" and unfinished["provenance.commit"] == git_state()["commit"]
    summary, _ = execute(cfg, tmp_path / "run", progress=False)

    assert summary["status"] == "completed" and summary["resumed_from_step"] == k
    (m_ref, s_ref), (m_run, s_run) = records(ref_dir), records(run_dir)
    assert untimed(m_run) == untimed(m_ref)
    assert (run_dir / "grad_profile.jsonl").read_text() == (ref_dir / "grad_profile.jsonl").read_text()
    assert s_run["final"] == s_ref["final"] and s_run["solved_step"] == s_ref["solved_step"]
    assert not (run_dir / CHECKPOINT).exists()  # removed once the run is finished


def test_periodic_checkpoint_holds_everything_to_resume(tmp_path):
    cfg = tiny("train.checkpoint_every=4")
    saved = {}
    from seqbench.harness import records as rec

    original = rec.RunWriter.checkpoint

    def spy(self, state):
        original(self, state)
        saved["ckpt"] = torch.load(self.dir / CHECKPOINT, weights_only=True)  # loads without pickled code

    rec.RunWriter.checkpoint = spy
    try:
        execute(cfg, tmp_path, progress=False)
    finally:
        rec.RunWriter.checkpoint = original
    ckpt = saved["ckpt"]
    assert ckpt["loop"]["step"] == 4
    assert {"model", "optimizer", "train_generator", "torch_rng", "metrics", "profiles"} <= set(ckpt)
    assert [r["step"] for r in ckpt["metrics"]] == [0, 2, 3, 4]


def test_a_held_run_is_left_alone(tmp_path):
    cfg = tiny()
    with claim(tmp_path / cfg.run_id) as mine:
        assert mine
        summary, _ = execute(cfg, tmp_path, progress=False)
    assert summary["status"] == "busy"
    assert not (tmp_path / cfg.run_id / "summary.json").exists()
    assert execute(cfg, tmp_path, progress=False)[0]["status"] == "completed"  # the lock went with its holder
