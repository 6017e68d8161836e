"""minGRU / minLSTM as harness models: every backend trains the same model on the tasks, records what ran, and the
gradient profile sees every layer's state. (The kernels themselves: tests/kernels/test_minrnn.py.)"""

import json

import pytest
import torch

from seqbench.harness.memory import parameter_count
from seqbench.harness.records import MemoryWriter
from seqbench.harness.train import Trainer, execute
from seqbench.harness.progress import Progress

from .conftest import tiny

PATHS = {"torch": "scan-torch", "reference": "reference-loop", "triton": "fused-triton"}  # triton: the interpreter


def trained(*overrides):
    cfg = tiny(*overrides)
    trainer = Trainer(cfg)
    with Progress(cfg.train.steps, cfg.run_id, enabled=False) as bar:
        summary = trainer.fit(MemoryWriter(), bar)
    return trainer, summary


@pytest.mark.parametrize("task", ["task=copy", "task=adding", "task=selective_copy"])
@pytest.mark.parametrize("model", ["model=mingru", "model=minlstm"])
def test_every_backend_trains_the_same_model(model, task):
    extra = ["task.length=6"] if task == "task=copy" else []
    # sgd: Adam's normalised step would turn the backends' last-bit differences in near-zero gradients into lr-sized
    # ones, so the parameters could not be compared
    # eval_size=4: the interpreted kernels' time grows with the batch; the trained weights are what is compared
    runs = {b: trained(model, task, *extra, "model.layers=2", f"model.backend={b}", "train.optimizer=sgd",
                       "train.lr=0.1", "train.eval_size=4") for b in PATHS}
    for backend, (trainer, summary) in runs.items():
        assert summary["status"] == "completed"
        assert trainer.model.kernel_path.endswith(PATHS[backend]), trainer.model.kernel_path
    # one initialisation and one data stream: the backends differ by float32 rounding only, step after step
    reference = runs["reference"][1]["final"]["eval_loss"]
    for backend in ("torch", "triton"):
        assert runs[backend][1]["final"]["eval_loss"] == pytest.approx(reference, rel=1e-4)
    states = [trainer.model.state_dict() for trainer, _ in runs.values()]
    for other in states[1:]:
        assert all(torch.allclose(states[0][k], other[k], rtol=1e-4, atol=1e-6) for k in states[0])


@pytest.mark.parametrize("model", ["model=mingru", "model=minlstm"])
def test_it_learns_the_adding_problem(model, tmp_path):
    # 200 steps: far below the baseline (predicting 1, the mean of the sum) where an untrained model is at it
    summary, _ = execute(tiny(model, "task.length=10", "train.steps=200", "train.batch_size=32", "model.hidden=16",
                              "train.lr=3e-3", "train.eval_every=0", "train.eval_size=256"), tmp_path)
    assert summary["final"]["eval_loss"] < 0.1 * summary["baseline_loss"], summary["final"]


def test_the_gradient_profile_sees_every_layers_state(tmp_path):
    cfg = tiny("model=minlstm", "model.layers=3", "model.backend=triton", "train.grad_profile_every=3")
    summary, run_dir = execute(cfg, tmp_path)
    rows = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert {(r["quantity"], r["layer"]) for r in rows} == {("x", 0), ("h", 0), ("h", 1), ("h", 2)}
    assert all(len(r["norm"]) == cfg.task.build().seq_len and r["dtype"] == "float64" for r in rows)
    assert summary["grad_profile_note"] is None
    assert summary["kernel_path"].endswith("fused-triton")  # the profile's reference copy leaves training's path


@pytest.mark.parametrize("model", ["mingru", "minlstm"])
def test_groups_cover_every_parameter_once(model):
    cfg = tiny(f"model={model}", "model.layers=2", "task=copy", "task.length=5")
    built = cfg.model.build(cfg.task.build())
    groups = built.param_groups()
    assert set(groups) == {"embedding", "input", "bias", "norm", "mlp", "head"}
    assert sum(p.numel() for ps in groups.values() for p in ps) == parameter_count(cfg)
