"""Sweep executors on 8 short CPU runs: 2 local workers vs 1 (goal <= 0.6x), Ray's per-run overhead (goal <= 0.5 s).

Each benchmark round runs the whole sweep into a fresh folder; under `--benchmark-disable` (CI) each runs once, with
2 runs of 30 steps instead of 8 of 300 (the executors' correctness is tested elsewhere; here only that every run
completed).
"""

import itertools

import pytest
import ray
import yaml

from seqbench.harness.cli import main
from seqbench.harness.loaders import load_runs

# Short CPU runs (T=40, 300 steps, batch 32), like those users sweep on a CPU.
SPEC = {"name": "bench8", "base": {"task": "adding", "task.length": 40, "device": "cpu", "train.steps": 300,
                                   "train.batch_size": 32, "train.lr": 0.003, "train.eval_every": 50,
                                   "train.eval_size": 512},
        "grid": {"model": ["lstm", "gru"], "model.layers": [1, 2]}, "seeds": 2}
ROUNDS = 2


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    """The spec to time and a 30-step one for a run without timing."""
    folder = tmp_path_factory.mktemp("spec")
    short = {**SPEC, "base": {**SPEC["base"], "train.steps": 30, "train.eval_every": 10},
             "grid": {"model": ["lstm", "gru"]}, "seeds": 1}
    for name, doc in (("bench8.yaml", SPEC), ("short.yaml", short)):
        (folder / name).write_text(yaml.safe_dump(doc))
    return folder / "bench8.yaml", folder / "short.yaml"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sweep(benchmark, specs, tmp_path, *flags):
    spec = specs[1] if benchmark.disabled else specs[0]
    counter = itertools.count()

    def fresh():
        return (["sweep", str(spec), "--out", str(tmp_path / str(next(counter))), *flags],), {}

    benchmark.pedantic(main, setup=fresh, rounds=ROUNDS, iterations=1)
    runs = load_runs(tmp_path / "0" / "bench8")
    assert len(runs) == (2 if benchmark.disabled else 8) and set(runs.status) == {"completed"}


@pytest.mark.benchmark(group="sweep-8-runs-cpu")
def test_local_1_worker(benchmark, specs, tmp_path):
    sweep(benchmark, specs, tmp_path, "--workers", "1")


@pytest.mark.benchmark(group="sweep-8-runs-cpu")
def test_local_2_workers(benchmark, specs, tmp_path):
    sweep(benchmark, specs, tmp_path, "--workers", "2")


@pytest.mark.benchmark(group="sweep-8-runs-cpu")
def test_ray_2_workers(benchmark, specs, tmp_path, local_ray):
    sweep(benchmark, specs, tmp_path, "--workers", "2", "--executor", "ray")
