"""The LRU as a harness model: both backends train the same model, what ran is recorded (triton: the scan, saying
why), the gradient profile sees every layer's complex state, and the parameter groups cover it once.
(The kernel itself: tests/kernels/test_lru.py.)"""

import json
import warnings

import pytest
import torch

from seqbench.harness.records import MemoryWriter
from seqbench.harness.train import Trainer, execute
from seqbench.harness.progress import Progress
from seqbench.kernels.lru import NO_TRITON

from .conftest import tiny


def trained(*overrides):
    cfg = tiny(*overrides)
    trainer = Trainer(cfg)
    with Progress(cfg.train.steps, cfg.run_id, enabled=False) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # triton: the scan runs instead, warned once
        summary = trainer.fit(MemoryWriter(), bar)
    return trainer, summary


@pytest.mark.parametrize("task", ["task=copy", "task=selective_copy"])
def test_every_backend_trains_the_same_model_and_records_what_ran(task):
    extra = ["task.length=6"] if task == "task=copy" else []
    runs = {b: trained("model=lru", task, *extra, "model.layers=2", "model.state=6", f"model.backend={b}",
                       "train.optimizer=sgd", "train.lr=0.1") for b in ("torch", "reference", "triton")}
    kernels = {b: summary["kernel"] for b, (_, summary) in runs.items()}
    assert kernels == {"torch": {"backend": "torch", "fallback": None},
                       "reference": {"backend": "reference", "fallback": None},
                       "triton": {"backend": "torch", "fallback": NO_TRITON}}
    reference = runs["reference"][1]["final"]["eval_loss"]
    for backend in ("torch", "triton"):
        assert runs[backend][1]["final"]["eval_loss"] == pytest.approx(reference, rel=1e-4)
    states = [trainer.model.state_dict() for trainer, _ in runs.values()]
    for other in states[1:]:
        assert all(torch.allclose(states[0][k], other[k], rtol=1e-4, atol=1e-6) for k in states[0])


def test_the_gradient_profile_sees_every_layers_state(tmp_path):
    cfg = tiny("model=lru", "model.layers=2", "model.state=5", "train.grad_profile_every=3")
    summary, run_dir = execute(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["grad_profile_note"] is None
    rows = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert {(r["quantity"], r["layer"]) for r in rows} == {("x", 0), ("h", 0), ("h", 1)}
    assert all(n is not None and n >= 0 for r in rows if r["quantity"] == "h" for n in r["norm"])


def test_the_parameter_groups_cover_every_parameter_once():
    model = Trainer(tiny("model=lru", "model.layers=2")).model
    groups = model.param_groups()
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert {"embedding", "recurrent", "input", "mlp", "norm", "head"} <= set(groups)
