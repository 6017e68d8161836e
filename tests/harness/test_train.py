import json
import math

import pytest
import torch

from seqbench.harness.train import Trainer, execute

from .conftest import tiny

TIMING = {"tokens_per_s", "elapsed_s"}


def records(run_dir):
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return metrics, summary


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn", "transformer"])
def test_same_config_and_seed_give_bitwise_identical_metrics(tmp_path, model):
    cfg = tiny(f"model={model}") if model != "transformer" else tiny("model=transformer", "model.d_model=8",
                                                                      "model.heads=2", "model.layers=1")
    s1, d1 = execute(cfg, tmp_path / "a", progress=False)
    s2, d2 = execute(cfg, tmp_path / "b", progress=False)
    assert s1["status"] == s2["status"] == "completed"
    m1, m2 = records(d1)[0], records(d2)[0]
    assert untimed(m1) == untimed(m2)  # == on floats read back from JSON: bitwise equal
    assert (d1 / "grad_profile.jsonl").read_text() == (d2 / "grad_profile.jsonl").read_text()
    assert s1["final"] == s2["final"]


def test_a_different_seed_changes_the_run(tmp_path):
    s1, _ = execute(tiny("seed=0"), tmp_path, progress=False)
    s2, _ = execute(tiny("seed=1"), tmp_path, progress=False)
    assert s1["run_id"] != s2["run_id"] and s1["final"] != s2["final"]


def test_summary_holds_every_documented_field(tmp_path):
    cfg = tiny()
    summary, run_dir = execute(cfg, tmp_path, progress=False)
    for key in ("run_id", "status", "task", "model", "backend", "seed", "steps_done", "final", "baseline_loss",
                "solved_step", "tokens_per_s", "params", "wall_s", "config", "provenance"):
        assert key in summary, key
    assert run_dir == tmp_path / cfg.run_id and summary["run_id"] == cfg.run_id
    assert summary["steps_done"] == 6 and summary["status"] == "completed"
    assert set(summary["final"]) >= {"eval_loss", "eval_accuracy"}
    assert summary["baseline_loss"] == pytest.approx(1 / 6)
    assert summary["params"] == sum(p.numel() for p in Trainer(cfg).model.parameters())
    assert summary["tokens_per_s"] > 0
    assert summary["peak_mem_bytes"] > 50 * 2**20 and summary["peak_mem_kind"] == "process_peak_rss"  # torch alone
    settled = {**cfg.canonical(), "threads": torch.get_num_threads()}  # the thread count it ran with, recorded
    assert summary["config"] == json.loads((run_dir / "config.json").read_text()) == settled
    prov = summary["provenance"]
    for key in ("commit", "dirty", "python", "torch", "triton", "device_name", "cpu_model", "utc", "command"):
        assert key in prov, key


def test_metrics_rows(tmp_path):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    metrics, summary = records(run_dir)
    assert [r["step"] for r in metrics] == [0, 2, 3, 4, 6]  # log_every=2, eval_every=3, always the last step
    assert [("eval_loss" in r) for r in metrics] == [True, False, True, False, True]
    row = metrics[1]
    assert row["train_loss"] > 0 and row["grad_norm"] > 0 and row["lr"] == 1e-3 and row["tokens_per_s"] > 0
    groups = {k.split(".", 1)[1] for k in row if k.startswith("grad_norm.")}
    assert groups == {"embedding", "input", "recurrent", "bias", "head"}
    # the global norm is the norm of the per-group norms
    assert row["grad_norm"] == pytest.approx(math.sqrt(sum(row[f"grad_norm.{g}"] ** 2 for g in groups)), rel=1e-5)
    assert summary["final"]["eval_loss"] == metrics[-1]["eval_loss"]


def test_early_stop_when_solved(tmp_path):
    summary, _ = execute(tiny("task.solved_mse=100", "train.early_stop=true", "train.steps=50"), tmp_path,
                         progress=False)
    assert summary["solved_step"] == 0  # any model is within MSE 100
    assert summary["steps_done"] == 3  # stopped at the first evaluation during training


def test_non_finite_loss_ends_the_run_as_diverged(tmp_path, monkeypatch):
    original = Trainer.step
    calls = {"n": 0}

    def step(self, group_norms=False):
        loss, norm, groups = original(self, group_norms)
        calls["n"] += 1
        return (loss * math.nan if calls["n"] == 3 else loss), norm, groups

    monkeypatch.setattr(Trainer, "step", step)
    summary, run_dir = execute(tiny(), tmp_path, progress=False)
    assert summary["status"] == "diverged"
    assert summary["diverged_step"] == 3 and summary["steps_done"] == 3
    assert summary["final"]["eval_loss"] is None
    metrics, _ = records(run_dir)
    assert metrics[-1]["step"] == 3 and metrics[-1]["train_loss"] is None  # NaN is written as null (strict JSON)
    assert "eval_loss" not in metrics[-1]  # a diverged model is not evaluated


def test_an_exception_is_recorded_as_failed(tmp_path, monkeypatch):
    def boom(self, group_norms=False):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(Trainer, "step", boom)
    summary, run_dir = execute(tiny(), tmp_path, progress=False)
    assert summary["status"] == "failed" and "kaboom" in summary["error"]
    assert "Traceback" in summary["traceback"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_a_finished_run_is_not_rerun_unless_forced(tmp_path):
    cfg = tiny()
    first, run_dir = execute(cfg, tmp_path, progress=False)
    again, _ = execute(cfg, tmp_path, progress=False)
    assert again.get("skipped") and again["provenance"]["utc"] == first["provenance"]["utc"]
    forced, _ = execute(cfg, tmp_path, progress=False, force=True)
    assert not forced.get("skipped")
    assert json.loads((run_dir / "summary.json").read_text())["wall_s"] == forced["wall_s"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [cfg.run_id]  # staging folder gone


def test_eval_is_chunk_exact(tmp_path):
    """eval_stats means equal the task's loss on the whole set, so chunked evaluation reports the true mean."""
    t = Trainer(tiny("train.eval_size=600"))
    stats = t.evaluate()
    x, y = t.eval_set
    with torch.no_grad():
        full = t.task.loss(t.model(x), y).item()
    assert stats["eval_loss"] == pytest.approx(full, rel=1e-6)
