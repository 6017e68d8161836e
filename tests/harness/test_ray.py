"""The Ray executor against a real local Ray instance (2 CPUs, shared by these tests)."""

import json
import os

import pytest
import ray
import yaml

from seqbench.harness.cli import main
from seqbench.harness.executors import run_ray
from seqbench.harness.loaders import load_runs
from seqbench.harness.sweep import expand, load_spec

from .test_sweep import TINY_BASE, untimed_metrics


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "base": TINY_BASE, "grid": {"model": ["lstm", "rnn"]}, "seeds": 2}))
    return path


def test_ray_writes_the_same_records_as_the_local_executor(local_ray, spec_path, tmp_path, capsys):
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "local"), "--workers", "2"]) == 0
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "ray"), "--workers", "2", "--executor", "ray"]) == 0
    assert "completed 4" in capsys.readouterr().out
    local, remote = load_runs(tmp_path / "local" / "r"), load_runs(tmp_path / "ray" / "r")
    assert sorted(local.run_id) == sorted(remote.run_id) and len(local) == 4
    for run_id in local.run_id:
        a, b = tmp_path / "local" / "r" / run_id, tmp_path / "ray" / "r" / run_id
        assert untimed_metrics(a) == untimed_metrics(b)
        assert (a / "grad_profile.jsonl").read_text() == (b / "grad_profile.jsonl").read_text()
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sa["final"] == sb["final"] and sa["config"] == sb["config"]


def test_a_dead_worker_is_retried_and_its_run_recorded_once(local_ray, spec_path, tmp_path):
    marker = tmp_path / "died-once"

    def dies_on_first_attempt(config, threads):
        from seqbench.harness.executors import _ray_run

        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies mid-task, as on a node failure or OOM kill
        return _ray_run(config, threads)

    configs = expand(*load_spec(str(spec_path)), {})[:1]
    results = list(run_ray(configs, tmp_path / "out", 1, None, lambda _: None, fn=dies_on_first_attempt))
    assert marker.exists()
    assert [r["status"] for r in results] == ["completed"]
    run_dir = tmp_path / "out" / configs[0].run_id
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert [r["step"] for r in untimed_metrics(run_dir)] == [0, 2, 3, 4, 6]
