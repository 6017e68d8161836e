"""The papers' baselines as harness models, the LRU (LTI) and Mamba (selective): every backend trains the same model,
what ran is recorded (triton: the scan, saying why), the gradient profile sees every layer's state, and the
parameter groups cover every parameter once. (The kernels themselves: tests/kernels/test_lru.py, test_mamba.py.)"""

import json
import warnings

import pytest
import torch

from seqbench.harness.records import MemoryWriter
from seqbench.harness.train import Trainer, execute
from seqbench.harness.progress import Progress
from seqbench.kernels import lru, mamba

from .conftest import tiny


def trained(*overrides):
    cfg = tiny(*overrides)
    trainer = Trainer(cfg)
    with Progress(cfg.train.steps, cfg.run_id, enabled=False) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # triton: the scan runs instead, warned once
        summary = trainer.fit(MemoryWriter(), bar)
    return trainer, summary


MODELS = {"lru": (["model=lru", "model.state=6"], lru.NO_TRITON),
          "mamba": (["model=mamba", "model.state=4", "model.hidden=8"], mamba.NO_TRITON)}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("task", ["task=copy", "task=selective_copy"])
def test_every_backend_trains_the_same_model_and_records_what_ran(task, model):
    extra = ["task.length=6"] if task == "task=copy" else []
    overrides, no_triton = MODELS[model]
    runs = {b: trained(*overrides, task, *extra, "model.layers=2", f"model.backend={b}",
                       "train.optimizer=sgd", "train.lr=0.1") for b in ("torch", "reference", "triton")}
    kernels = {b: summary["kernel"] for b, (_, summary) in runs.items()}
    assert kernels == {"torch": {"backend": "torch", "fallback": None},
                       "reference": {"backend": "reference", "fallback": None},
                       "triton": {"backend": "torch", "fallback": no_triton}}
    reference = runs["reference"][1]["final"]["eval_loss"]
    for backend in ("torch", "triton"):
        assert runs[backend][1]["final"]["eval_loss"] == pytest.approx(reference, rel=1e-4)
    states = [trainer.model.state_dict() for trainer, _ in runs.values()]
    for other in states[1:]:
        assert all(torch.allclose(states[0][k], other[k], rtol=1e-4, atol=1e-6) for k in states[0])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_gradient_profile_sees_every_layers_state(tmp_path, model):
    cfg = tiny(*MODELS[model][0], "model.layers=2", "train.grad_profile_every=3")
    summary, run_dir = execute(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["grad_profile_note"] is None
    rows = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert {(r["quantity"], r["layer"]) for r in rows} == {("x", 0), ("h", 0), ("h", 1)}
    assert all(n is not None and n >= 0 for r in rows if r["quantity"] == "h" for n in r["norm"])


@pytest.mark.parametrize("model, groups", [("lru", {"embedding", "recurrent", "input", "mlp", "norm", "head"}),
                                           ("mamba", {"embedding", "recurrent", "input", "conv", "norm", "head"})])
def test_the_parameter_groups_cover_every_parameter_once(model, groups):
    built = Trainer(tiny(*MODELS[model][0], "model.layers=2")).model
    found = built.param_groups()
    grouped = [id(p) for ps in found.values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in built.parameters())
    assert set(found) == groups
