"""Sweep executors on 8 short CPU runs: 2 local workers vs 1 (goal <= 0.6x), Ray's per-run overhead (goal <= 0.5 s).

Each benchmark round runs the whole sweep into a fresh folder; under `--benchmark-disable` (CI) each runs once and the
assertions check that every run completed.
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
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "bench8.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sweep(benchmark, spec, tmp_path, *flags):
    counter = itertools.count()

    def fresh():
        return (["sweep", str(spec), "--out", str(tmp_path / str(next(counter))), *flags],), {}

    benchmark.pedantic(main, setup=fresh, rounds=ROUNDS, iterations=1)
    runs = load_runs(tmp_path / "0" / "bench8")
    assert len(runs) == 8 and set(runs.status) == {"completed"}


@pytest.mark.benchmark(group="sweep-8-runs-cpu")
def test_local_1_worker(benchmark, spec, tmp_path):
    sweep(benchmark, spec, tmp_path, "--workers", "1")


@pytest.mark.benchmark(group="sweep-8-runs-cpu")
def test_local_2_workers(benchmark, spec, tmp_path):
    sweep(benchmark, spec, tmp_path, "--workers", "2")


@pytest.mark.benchmark(group="sweep-8-runs-cpu")
def test_ray_2_workers(benchmark, spec, tmp_path, local_ray):
    sweep(benchmark, spec, tmp_path, "--workers", "2", "--executor", "ray")
