"""A run's CPU thread count can change its last bits, so it is decided once, recorded, and reused on resume and
reproduce, whatever the sweep's --workers (issue: results must not depend on scheduling)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from seqbench.harness.cli import main
from seqbench.harness.loaders import load_runs
from seqbench.harness.records import CHECKPOINT, read_json
from seqbench.harness.train import RunInterrupted, execute

from .conftest import tiny
from .test_resume import interrupt_at
from .test_sweep import sweep_cmd, untimed_metrics

# Big enough that oneDNN/OpenMP split the matmuls and reductions differently with 1 and 2 threads (measured on the
# project's 2-core machine: 16 metric values differ after 20 steps), small enough to train in a few seconds.
SENSITIVE = {"task": "copy", "task.length": 10, "model": "lstm", "model.hidden": 64, "device": "cpu",
             "train.steps": 20, "train.batch_size": 32, "train.lr": 0.003, "train.eval_every": 10,
             "train.eval_size": 64, "train.log_every": 5, "train.grad_profile_batch": 8, "train.checkpoint_every": 4}


def sensitive(**extra):
    from seqbench.harness.config import parse_overrides, resolve

    return resolve(parse_overrides([f"{k}={v}" for k, v in {**SENSITIVE, **extra}.items()]))


def test_threads_are_recorded_but_not_part_of_the_run_id(tmp_path):
    one, two = sensitive(threads=1), sensitive(threads=2)
    assert one.run_id == two.run_id == sensitive().run_id
    _, d1 = execute(one, tmp_path / "a", progress=False)
    _, d2 = execute(two, tmp_path / "b", progress=False)
    assert read_json(d1 / "config.json")["threads"] == 1 and read_json(d2 / "config.json")["threads"] == 2
    assert read_json(d2 / "summary.json")["provenance"]["torch_threads"] == 2
    # why it must be recorded: the thread count changes the bits of this run
    assert untimed_metrics(d1) != untimed_metrics(d2)


def test_the_default_is_decided_at_the_first_start_and_restored_after(tmp_path):
    before = torch.get_num_threads()
    _, run_dir = execute(tiny(), tmp_path / "a", progress=False)
    assert read_json(run_dir / "config.json")["threads"] == before
    share = 2 if before == 1 else 1  # a sweep's share of the cores, other than the process's count
    _, run_dir = execute(tiny(), tmp_path / "b", progress=False, threads=share)
    assert read_json(run_dir / "config.json")["threads"] == share
    assert torch.get_num_threads() == before  # the process is left as it was (a sweep worker runs many runs)


def test_a_resumed_run_keeps_its_recorded_thread_count(tmp_path, monkeypatch):
    cfg = sensitive()
    _, ref = execute(cfg, tmp_path / "ref", progress=False, threads=1)
    with monkeypatch.context() as m:
        interrupt_at(m, 7)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path / "run", progress=False, threads=1)
    assert (tmp_path / "run" / cfg.run_id / CHECKPOINT).exists()
    summary, run_dir = execute(cfg, tmp_path / "run", progress=False, threads=2)  # resumed by a 1-worker sweep
    assert summary["resumed_from_step"] == 7 and read_json(run_dir / "config.json")["threads"] == 1
    assert untimed_metrics(run_dir) == untimed_metrics(ref)


def test_deterministic_mode_holds_during_the_run_only_and_is_recorded(tmp_path, monkeypatch):
    from seqbench.harness.train import Trainer

    seen, original = [], Trainer.step

    def step(self, group_norms=False):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(self, group_norms)

    monkeypatch.setattr(Trainer, "step", step)
    cfg = tiny("train.deterministic=true")
    assert cfg.run_id != tiny().run_id  # another algorithm choice: another experiment record
    summary, _ = execute(cfg, tmp_path, progress=False)
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()
    assert summary["provenance"]["deterministic_algorithms"] is True
    assert execute(tiny(), tmp_path, progress=False)[0]["provenance"]["deterministic_algorithms"] is False


@pytest.fixture(scope="module")
def two_worker_sweep(tmp_path_factory):
    """A sweep of thread-sensitive runs made with 2 workers and left alone: (its spec, the results folder)."""
    folder = tmp_path_factory.mktemp("two_workers")
    path = folder / "w.yaml"
    base = {**SENSITIVE, "train.steps": 60}
    path.write_text(yaml.safe_dump({"name": "w", "base": base, "grid": {"model": ["lstm", "gru"]}, "seeds": 2}))
    assert main(["sweep", str(path), "--out", str(folder / "ref"), "--workers", "2"]) == 0
    return path, folder / "ref"


@pytest.mark.slow
def test_kill_9_then_resume_with_other_workers_is_bitwise_the_uninterrupted_sweep(two_worker_sweep, tmp_path):
    path, ref = two_worker_sweep
    out = tmp_path / "out"

    # the driver and its workers die together (a lost node), so the runs in flight cannot finish on their own: an
    # orphaned worker of a 60-step run would otherwise complete it within its watchdog's half second
    proc = subprocess.Popen(sweep_cmd(path, out, workers=2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "w").glob("*/checkpoint.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 0

    runs = load_runs(out / "w")
    assert len(runs) == 4 and set(runs.status) == {"completed"}
    assert runs["resumed_from_step"].notna().any()
    assert json.loads((out / "w" / "sweep.json").read_text())["threads"] == \
        json.loads((ref / "w" / "sweep.json").read_text())["threads"]
    for run_id in runs.run_id:
        assert untimed_metrics(out / "w" / run_id) == untimed_metrics(ref / "w" / run_id), run_id
        assert (out / "w" / run_id / "grad_profile.jsonl").read_text() == \
            (ref / "w" / run_id / "grad_profile.jsonl").read_text()


@pytest.mark.slow
def test_a_run_of_a_two_worker_sweep_reproduces_bitwise_in_a_fresh_process(two_worker_sweep):
    _, ref = two_worker_sweep
    run_dir = next(p.parent for p in (ref / "w").glob("*/summary.json"))
    # the fresh process would compute with every core by default; the record says how many the run used
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    done = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "reproduce", str(run_dir), "--quiet"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "verdict: identical"
    assert "environment: same as the record" in done.stdout
