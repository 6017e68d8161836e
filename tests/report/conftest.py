"""A small results folder made by real tiny runs, and the report built from it once for every test here.

`sweep/`: lstm and transformer on adding and copy at T = 8 and 12, seeds 0 and 1 (16 completed runs) and a sweep.json;
`extra/` (loose runs, nested): in the lstm / adding / T=12 cell, a failed run (seed 2), a diverged one (seed 3: it met
the solved criterion at step 0, so its record has a solved_step) and an unfinished one (seed 4: metrics cut mid-line,
no summary).

`grid_results`: one model on one task at two hidden sizes and two backends (torch and reference: the fused triton one
runs interpreted here, too slow for a fixture), seeds 0 and 1; plus in the torch / hidden 8 cell a completed run whose
final eval (and test) loss is null (seed 2) and, under `merged/`, a second record of its seed-0 run (the same run
recorded in two folders).
"""

import json
import math
import shutil

import pytest

from seqbench.harness.report import build_report, data
from seqbench.harness.train import Trainer, execute
from seqbench.tasks.adding import AddingTask
from tests.conftest import built_once
from tests.harness.conftest import tiny

MODELS, TASKS, LENGTHS, SEEDS = ["lstm", "transformer"], ["adding", "copy"], [8, 12], [0, 1]
SWEEP_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def config(model, task, length, seed):
    extra = ["model.layers=2"] if model == "transformer" else []  # the Transformer's default depth: label "transformer"
    return tiny(f"model={model}", f"task={task}", f"task.length={length}", f"seed={seed}", *extra)


def failing_step(self, group_norms=False):
    raise RuntimeError("kaboom")


def diverging_step(original):
    """`original` (Trainer.step) with a NaN loss on its third call (as tests/harness/test_train.py does)."""
    calls = {"n": 0}

    def step(self, group_norms=False):
        loss, norm, groups = original(self, group_norms)
        calls["n"] += 1
        return (loss * math.nan if calls["n"] == 3 else loss), norm, groups

    return step


@pytest.fixture(scope="session")
def results(tmp_path_factory):
    """Built once for the session, by whichever test process asks first (tests only read it)."""
    return built_once(tmp_path_factory, "report-results", _make_results)


def _make_results(root):
    ids = [execute(config(m, t, n, s), root / "sweep", progress=False)[0]["run_id"]
           for m in MODELS for t in TASKS for n in LENGTHS for s in SEEDS]
    (root / "sweep" / "sweep.json").write_text(json.dumps({
        "name": "fixture", "source": "fixture.yaml", "overrides": [], "run_ids": ids,
        "command": "seqbench sweep fixture.yaml", "commit": SWEEP_COMMIT, "dirty": False}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "step", diverging_step(Trainer.step))
        mp.setattr(AddingTask, "solved", lambda self, stats: True)  # solved at step 0, then diverges
        execute(config("lstm", "adding", 12, 3), root / "extra", progress=False)
        mp.undo()
        mp.setattr(Trainer, "step", failing_step)
        execute(config("lstm", "adding", 12, 2), root / "extra", progress=False)
    _, done = execute(config("lstm", "adding", 12, 4), root / "extra", progress=False)
    (done / "summary.json").unlink()  # killed before its summary: the metrics' last line cut mid-write
    lines = (done / "metrics.jsonl").read_text().splitlines()
    (done / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    return root


@pytest.fixture(scope="session")
def report(results, tmp_path_factory):
    """The report's folder (index.html inside)."""
    def build(out):
        assert build_report(results, out) == out / "index.html"

    return built_once(tmp_path_factory, "report-report", build)


@pytest.fixture
def copy_runs(results, tmp_path):
    """copy_runs(predicate) -> a fresh results folder holding the fixture's runs whose summary matches."""
    def make(keep):
        for summary in sorted((results / "sweep").glob("*/summary.json")):
            if keep(json.loads(summary.read_text())):
                shutil.copytree(summary.parent, tmp_path / "results" / summary.parent.name)
        return tmp_path / "results"
    return make


@pytest.fixture(scope="session")
def report_data(results):
    """The fixture folder read once (`harness.report.data.load`); tests that change it work on a copy."""
    return data.load(results)


GRID_HIDDEN, GRID_BACKENDS = [8, 16], ["torch", "reference"]


@pytest.fixture(scope="session")
def grid_results(tmp_path_factory):
    return built_once(tmp_path_factory, "report-grid", _make_grid)


def _make_grid(root):
    for hidden in GRID_HIDDEN:
        for backend in GRID_BACKENDS:
            for seed in (0, 1):
                execute(tiny("model=lstm", "task.length=8", f"model.hidden={hidden}", f"model.backend={backend}",
                             f"seed={seed}"), root / "sweep", progress=False)
    _, empty = execute(tiny("model=lstm", "task.length=8", "seed=2"), root / "sweep", progress=False)
    summary = json.loads((empty / "summary.json").read_text())
    summary["final"]["eval_loss"] = None
    if "test_loss" in summary["final"]:  # records with a test set: no final value on either set
        summary["final"]["test_loss"] = None
    (empty / "summary.json").write_text(json.dumps(summary))
    first = tiny("model=lstm", "task.length=8", "seed=0").run_id
    shutil.copytree(root / "sweep" / first, root / "merged" / first)
    return root


@pytest.fixture(scope="session")
def grid_report(grid_results, tmp_path_factory):
    return built_once(tmp_path_factory, "report-grid-report", lambda out: build_report(grid_results, out))


@pytest.fixture(scope="session")
def grid_data(grid_results):
    return data.load(grid_results)
