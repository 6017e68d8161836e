"""The Ray executor against a real Ray instance on the loopback address (2 CPUs, shared by this module's tests):
records, checkpoints shipped to the driver and resumed from, resources per run, code versions, stopping."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import ray
import torch
import yaml

from seqbench.harness.executors import ray as executors
from seqbench.harness.cli import main
from seqbench.harness.executors.ray import run_ray, unschedulable
from seqbench.harness.loaders import load_runs
from seqbench.harness.provenance import command_line, source_digest
from seqbench.harness.resources import Resources
from seqbench.harness.sweep import expand, load_spec
from seqbench.harness.train import execute

from ._ray_support import LOOPBACK, frozen_seqbench, listening_hosts
from .conftest import as_from_a_terminal, tiny
from .test_sweep import TINY_BASE, untimed_metrics


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """A folder holding a frozen copy of seqbench, which this module's Ray workers import (see frozen_seqbench)."""
    return frozen_seqbench(tmp_path_factory.mktemp("code")).parent


@pytest.fixture(scope="module")
def local_ray(frozen):
    with contextlib.chdir(frozen):  # Ray puts the driver's working folder first on its workers' sys.path
        ray.init(address="local", num_cpus=2, resources={"A100": 1}, include_dashboard=False,
                 log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def address(local_ray):
    return local_ray.get_runtime_context().gcs_address


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "base": TINY_BASE, "grid": {"model": ["lstm", "rnn"]}, "seeds": 2}))
    return path


def ignore(_):
    pass


def test_the_tests_ray_listens_on_the_loopback_address_only(local_ray, address):
    [node] = local_ray.nodes()
    assert node["NodeManagerAddress"] == "127.0.0.1" and address.startswith("127.0.0.1:")
    for port in (int(address.rsplit(":", 1)[1]), node["NodeManagerPort"], node["ObjectManagerPort"]):
        hosts = listening_hosts(port)
        assert hosts and hosts <= LOOPBACK, (port, hosts)


def test_ray_writes_the_same_records_as_the_local_executor(local_ray, spec_path, tmp_path, capsys):
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "local"), "--workers", "2"]) == 0
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "ray"), "--workers", "2", "--executor", "ray"]) == 0
    assert "completed 4" in capsys.readouterr().out
    local, remote = load_runs(tmp_path / "local" / "r"), load_runs(tmp_path / "ray" / "r")
    assert sorted(local.run_id) == sorted(remote.run_id) and len(local) == 4
    [node] = local_ray.nodes()
    for run_id in local.run_id:
        a, b = tmp_path / "local" / "r" / run_id, tmp_path / "ray" / "r" / run_id
        assert untimed_metrics(a) == untimed_metrics(b)
        assert (a / "grad_profile.jsonl").read_text() == (b / "grad_profile.jsonl").read_text()
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sa["final"] == sb["final"] and sa["config"] == sb["config"]
        # what a Ray record says about where it ran: the driver's command line, the worker's host, node and code
        started = json.loads((b / "started.json").read_text())["provenance"]
        for prov in (sb["provenance"], started):
            assert prov["command"] == command_line() and "default_worker" not in prov["command"]
            assert prov["ray"]["node_id"] == node["NodeID"] and prov["ray"]["attempt"] == 1
            assert prov["hostname"] == socket.gethostname() and prov["ray"]["worker_pid"] != os.getpid()
            assert prov["source_digest"] == source_digest() and {"commit", "dirty"} <= set(prov)
        assert not (b / "checkpoint.pt").exists()


def test_a_worker_killed_after_a_checkpoint_is_retried_from_that_checkpoint(local_ray, tmp_path):
    marker = tmp_path / "died-once"

    def dies_after_its_first_checkpoint(config, threads, link):
        from seqbench.harness.executors import ray as ex

        if not os.path.exists(marker):
            ship = ex._ShippingWriter.checkpoint

            def ship_then_die(self, state):
                ship(self, state)  # the checkpoint reached the driver's mailbox
                open(marker, "w").close()
                os._exit(1)  # the worker dies mid-run, as on a node failure or an OOM kill

            ex._ShippingWriter.checkpoint = ship_then_die
        return ex._ray_run(config, threads, link)

    cfg = tiny("train.checkpoint_every=2", "threads=1")
    [result] = run_ray([cfg], tmp_path / "ray", 1, None, ignore, fn=dies_after_its_first_checkpoint)
    assert marker.exists() and result["status"] == "completed" and result["resumed_from_step"] == 2
    run_dir = tmp_path / "ray" / cfg.run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["provenance"]["ray"]["attempt"] == 2 and summary["resumed_from_step"] == 2
    reference, ref_dir = execute(cfg, tmp_path / "local", progress=False)
    assert reference.get("resumed_from_step") is None
    assert untimed_metrics(run_dir) == untimed_metrics(ref_dir) and summary["final"] == reference["final"]
    assert (run_dir / "grad_profile.jsonl").read_text() == (ref_dir / "grad_profile.jsonl").read_text()
    assert not (run_dir / "checkpoint.pt").exists()


def test_a_request_is_checked_per_node_not_against_the_clusters_total():
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 1.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}}]
    assert unschedulable({"CPU": 2}, nodes) == "no node of the cluster has that much (2 nodes with 1 CPU)"
    assert unschedulable({"CPU": 1, "GPU": 2}, nodes) == ("no node of the cluster has that much "
                                                          "(1 node with 1 CPU, 0 GPU; 1 node with 1 CPU, 1 GPU)")
    assert unschedulable({"CPU": 1, "GPU": 1}, nodes) is None
    assert unschedulable({"CPU": 1}, nodes[2:]) == "no node of the cluster has that much (no live node)"


@pytest.mark.parametrize("flags, needles", [
    (["--cpus-per-run", "3"], ["each run asks for 3 CPU (--cpus-per-run", "has that much (1 node with 2 CPU)"]),
    (["--gpus-per-run", "1"], ["each run asks for 1 CPU, 1 GPU (", "has that much (1 node with 2 CPU, 0 GPU)"]),
    (["--resource", "H100=1"], ["each run asks for 1 CPU, 1 H100 (", "has that much (1 node with 2 CPU, 0 H100)"]),
    (["--resource", "CPU=2"], ["--resource CPU: a resource Ray sets itself; use --cpus-per-run or --gpus-per-run"]),
], ids=["cpus", "gpus", "custom", "reserved-name"])
def test_runs_no_node_can_hold_are_refused_at_once_and_nothing_is_written(local_ray, spec_path, tmp_path, capsys,
                                                                          flags, needles):
    began = time.monotonic()
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "out"), "--executor", "ray", *flags]) == 2
    assert time.monotonic() - began < 30  # refused, not left pending (a hang would never return)
    err = capsys.readouterr().err.strip()
    assert err.startswith("seqbench: error: --") and "\n" not in err
    assert all(needle in err for needle in needles), err
    assert not (tmp_path / "out").exists()


def test_a_run_asks_for_its_resources_and_computes_with_its_cpus(local_ray, tmp_path):
    def reports_what_it_was_given(config, threads, link):
        import ray
        from seqbench.harness.executors.ray import _ray_run

        result = _ray_run(config, threads, link)
        result["summary"]["assigned"] = ray.get_runtime_context().get_assigned_resources()
        return result

    cfg = tiny()  # no threads of its own: it computes with --cpus-per-run threads
    [result] = run_ray([cfg], tmp_path, 1, None, ignore, fn=reports_what_it_was_given,
                       resources=Resources(cpus=2, custom={"A100": 0.5}))
    assert result["status"] == "completed", result.get("error")
    summary = json.loads((tmp_path / cfg.run_id / "summary.json").read_text())
    assert summary["assigned"] == {"CPU": 2.0, "A100": 0.5}
    assert summary["config"]["threads"] == 2 and summary["provenance"]["torch_threads"] == 2
    assert json.loads((tmp_path / cfg.run_id / "config.json").read_text())["threads"] == 2


def test_an_address_where_no_cluster_answers_is_refused_at_once(spec_path, tmp_path):
    # a fresh process: this module's Ray is already connected (the address is checked before connecting)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "sweep", str(spec_path), "--out",
                           str(tmp_path / "out"), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"seqbench: error: --ray-address 127.0.0.1:{port}: no Ray cluster answers there "
                                   "(Connection refused)")
    assert not (tmp_path / "out").exists()


def test_runs_waiting_on_a_busy_cluster_are_explained(local_ray, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "PENDING_NOTE_S", 1.0)

    @ray.remote(num_cpus=2)
    class Hog:  # another job's actor holding every CPU of the cluster
        def ready(self):
            return True

    hog = Hog.remote()
    ray.get(hog.ready.remote())
    threading.Timer(3.0, ray.kill, args=(hog,)).start()
    [result] = run_ray([tiny("threads=1")], tmp_path, 1, None, ignore)
    assert result["status"] == "completed", result.get("error")
    err = capsys.readouterr().err
    assert "ray: 1 runs waiting" in err, err
    assert "for resources, none running: each asks for 1 CPU; free now 0 CPU of 2 CPU in the cluster" in err, err


def test_a_worker_running_other_code_than_the_driver_is_refused(local_ray, tmp_path, monkeypatch, capsys):
    real = executors.driver_identity()
    monkeypatch.setattr(executors, "driver_identity", lambda: {**real, "source_digest": "0" * 16})
    cfg = tiny("threads=1")
    [result] = run_ray([cfg], tmp_path, 1, None, ignore)
    assert result["status"] == "failed" and "code differs from the driver's" in result["error"]
    assert f"source {source_digest()}, the driver commit" in result["error"] and "0" * 16 in result["error"]
    run_dir = tmp_path / cfg.run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["provenance"]["source_digest"] == source_digest()
    assert summary["provenance"]["ray"]["node_id"] == local_ray.nodes()[0]["NodeID"]
    assert (run_dir / "metrics.jsonl").read_text() == ""  # not trained
    assert "runs other code than the driver" in capsys.readouterr().err


# --- drivers that are stopped or killed ----------------------------------------------------------------------------
DRIVER = textwrap.dedent('''
    import functools, signal, sys, time

    from seqbench.harness.executors import ray as executors

    DELAY, MARK = 0.0, ""

    def slow(config, threads, link):  # defined in __main__: Ray ships it to the workers by value
        from pathlib import Path

        from seqbench.harness import train
        from seqbench.harness.executors.ray import _ray_run

        step, done = train.Trainer.step, [0]

        def slow_step(self, *args, **kwargs):  # slower steps, same numbers; MARK says how many have run
            time.sleep(DELAY)
            out = step(self, *args, **kwargs)
            done[0] += 1
            Path(MARK).write_text(str(done[0]))
            return out

        train.Trainer.step = slow_step
        return _ray_run(config, threads, link)

    if __name__ == "__main__":
        address, DELAY, MARK = sys.argv[1], float(sys.argv[2]), sys.argv[3]
        ours = lambda *_: None
        signal.signal(signal.SIGTERM, ours)
        executors.connect_ray(address)
        if signal.getsignal(signal.SIGTERM) is not ours:
            sys.exit("ray.init replaced the SIGTERM handler")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        executors.run_ray = functools.partial(executors.run_ray, fn=slow)
        from seqbench.harness.cli import exit_now, main
        exit_now(main(["sweep", *sys.argv[4:], "--executor", "ray", "--ray-address", address]))
''')
LONG = {**TINY_BASE, "train.steps": 300, "train.eval_every": 100, "train.log_every": 10, "threads": 1}


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, frozen):
    """A 300-step run's spec, config and its uninterrupted record (made locally); the driver script and the frozen
    code it runs."""
    folder = tmp_path_factory.mktemp("long")
    spec = folder / "long.yaml"
    spec.write_text(yaml.safe_dump({"name": "long", "base": LONG}))
    [cfg] = expand(*load_spec(str(spec)), {})
    _, ref_dir = execute(cfg, folder / "reference", progress=False)
    (folder / "driver.py").write_text(DRIVER)
    return spec, cfg, ref_dir, folder / "driver.py", frozen


def start_driver(long_run, address, out, *overrides, delay=0.01):
    """A driver process running the frozen code too (its workers as well: its working folder is theirs). Its worker
    writes the number of steps done so far to OUT/steps_done (see `steps_done`)."""
    spec, _, _, script, frozen = long_run
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), address, str(delay), str(out / "steps_done"), str(spec),
                             "--out", str(out), *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=frozen, env={**os.environ, "PYTHONPATH": str(frozen)},
                            preexec_fn=as_from_a_terminal)


#: how long a wait may take before it counts as a hang: an event, not a sleep, so it costs nothing when things work
#: (a few seconds on an idle machine); on a 2-core machine that also runs two sweep workers, 90 s was not enough for
#: a Ray worker to start and take 5 steps
HANG_S = 300.0


def wait_for_steps(out, n, proc, timeout=HANG_S):
    """Until the driver's worker has done `n` steps (from the worker itself: start notices reach the driver late
    on a loaded machine)."""
    mark, deadline = out / "steps_done", time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if int(mark.read_text()) >= n:
                return
        assert proc.poll() is None, f"driver exited with {proc.returncode}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"fewer than {n} steps after {timeout} s"
        time.sleep(0.02)


def wait_for(path, proc, timeout=HANG_S):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"driver exited with {proc.returncode}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def resume_and_compare(long_run, out, step, capsys):
    """Run the sweep again (this process is the new driver): the run resumes from `step` and its record equals the
    uninterrupted one."""
    spec, cfg, ref_dir, *_ = long_run
    assert main(["sweep", str(spec), "--out", str(out), "--executor", "ray"]) == 0
    capsys.readouterr()
    run_dir = out / "long" / cfg.run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_step"] == step
    assert untimed_metrics(run_dir) == untimed_metrics(ref_dir)
    assert (run_dir / "grad_profile.jsonl").read_text() == (ref_dir / "grad_profile.jsonl").read_text()
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_a_killed_driver_is_resumed_from_the_checkpoints_it_wrote(local_ray, address, long_run, tmp_path, capsys):
    out = tmp_path / "out"
    proc = start_driver(long_run, address, out, "train.checkpoint_every=50")
    run_dir = out / "long" / long_run[1].run_id
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.kill()  # kill -9: no handler runs
    proc.communicate()
    assert not (run_dir / "summary.json").exists()
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["loop"]["step"]
    assert step > 0 and step % 50 == 0
    resume_and_compare(long_run, out, step, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_driver_checkpoints_its_runs_in_flight(local_ray, address, long_run, tmp_path, capsys, sig):
    out = tmp_path / "out"
    # checkpoints only when stopped; 50 ms a step, so the 295 steps left after the signal take 15 s or more
    proc = start_driver(long_run, address, out, "train.checkpoint_every=0", delay=0.05)
    run_dir = out / "long" / long_run[1].run_id
    wait_for_steps(out, 5, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "ray: 1 runs were in flight: 1 checkpointed now" in err
    assert "interrupted; run the same command to resume" in err
    assert not (run_dir / "summary.json").exists()
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["loop"]["step"]
    assert 0 < step < 300
    resume_and_compare(long_run, out, step, capsys)
