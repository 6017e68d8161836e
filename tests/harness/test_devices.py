"""The harness on every device this machine has: the CPU always, CUDA where a GPU is present (skipped otherwise).

On a GPU these are the checks of issue 14, part 1: a run trains and records its gradient profile, the peak memory comes
from CUDA's allocator, `seqbench reproduce` agrees within its tolerance, a run stopped mid-way resumes on the device
to the uninterrupted record, and a bfloat16 (autocast) run trains. On the CPU the same tests hold the code paths to
account in CI.
"""

import json
import math

import pytest
import torch

from seqbench.harness.cli import main
from seqbench.harness.records import CHECKPOINT
from seqbench.harness.train import RunInterrupted, execute

from .conftest import tiny
from .test_resume import interrupt_at
from .test_train import records, untimed

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="needs a CUDA GPU"))]
# every built-in recurrent backend that runs on the device, and the transformer
MODELS = ["lstm", "gru", "rnn", "mingru", "transformer"]


def on(device, *overrides):
    return tiny(*overrides, f"device={device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", MODELS)
def test_a_run_trains_and_records_on_the_device(tmp_path, device, model):
    cfg = on(device, f"model={model}", "train.grad_profile_every=3")
    summary, run_dir = execute(cfg, tmp_path, progress=False)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["provenance"]["device"] == device
    if device == "cuda":
        assert summary["provenance"]["device_name"] == torch.cuda.get_device_name()
    metrics, _ = records(run_dir)
    losses = [r["train_loss"] for r in metrics if "train_loss" in r]  # row 0 is the evaluation before training
    assert losses and all(math.isfinite(v) for v in losses)
    profiles = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert profiles, "no gradient profile recorded"
    for p in profiles:
        assert len(p["norm"]) == cfg.task.length and all(math.isfinite(v) and v >= 0 for v in p["norm"])
        assert any(v > 0 for v in p["norm"])
    kind = "cuda_max_allocated" if device == "cuda" else "process_peak_rss"
    assert summary["peak_mem_kind"] == kind and summary["peak_mem_bytes"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_reproduce_agrees_on_the_device(tmp_path, capsys, device):
    _, run_dir = execute(on(device, "model=lstm"), tmp_path, progress=False)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict in ("verdict: identical", "verdict: within rtol"), verdict


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_a_stopped_run_resumes_on_the_device_to_the_same_record(tmp_path, monkeypatch, device, model):
    cfg = on(device, f"model={model}", "train.grad_profile_every=4")
    _, ref_dir = execute(cfg, tmp_path / "ref", progress=False)
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path / "run", progress=False)
    run_dir = tmp_path / "run" / cfg.run_id
    ckpt = torch.load(run_dir / CHECKPOINT, weights_only=True, map_location="cpu")
    assert ckpt["loop"]["step"] == 3
    summary, _ = execute(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 3
    (m_ref, s_ref), (m_run, s_run) = records(ref_dir), records(run_dir)
    assert untimed(m_run) == untimed(m_ref)
    assert s_run["final"] == s_ref["final"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_a_bfloat16_run_trains_close_to_float32(tmp_path, model):
    """Autocast in bfloat16: the run finishes, records its dtype, and its first losses stay near float32's (the
    same init and data; bf16 has 8 bits of mantissa, so a few per cent)."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        summary, run_dir = execute(on("cuda", f"model={model}", f"dtype={dtype}"), tmp_path / dtype, progress=False)
        assert summary["status"] == "completed", summary.get("error")
        assert summary["config"]["dtype"] == dtype
        runs[dtype] = records(run_dir)[0]
    first = [r["train_loss"] for r in runs["float32"] if "train_loss" in r][:2]
    half = [r["train_loss"] for r in runs["bfloat16"] if "train_loss" in r][:2]
    assert all(math.isfinite(v) for v in half)
    assert half == pytest.approx(first, rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_sharing_a_gpu_record_the_same_as_runs_alone(tmp_path, capsys):
    """--workers-per-gpu 3: three runs at a time on each GPU; scheduling changes no bits of any record."""
    import yaml

    spec = tmp_path / "share.yaml"
    base = {"task": "adding", "task.length": 12, "train.steps": 6, "train.batch_size": 4, "train.eval_every": 3,
            "train.log_every": 2, "train.eval_size": 16, "train.grad_profile_batch": 4, "device": "cuda",
            "model.hidden": 8}
    spec.write_text(yaml.safe_dump({"name": "share", "base": base, "grid": {"model": ["lstm", "gru"]}, "seeds": 3}))
    gpus = torch.cuda.device_count()
    assert main(["sweep", str(spec), "--out", str(tmp_path / "shared"), "--workers-per-gpu", "3"]) == 0
    printed = capsys.readouterr()
    assert f"{3 * gpus} workers" in printed.out + printed.err
    assert main(["sweep", str(spec), "--out", str(tmp_path / "alone"), "--workers", "1"]) == 0
    shared = sorted((tmp_path / "shared" / "share").glob("*/metrics.jsonl"))
    assert len(shared) == 6
    for path in shared:
        alone = tmp_path / "alone" / "share" / path.parent.name / "metrics.jsonl"
        assert untimed(records(path.parent)[0]) == untimed(records(alone.parent)[0]), path.parent.name
