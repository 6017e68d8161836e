"""The SLURM executor through submitit's local executor (the same tasks, requeue and records, minus sbatch), and its
sbatch submission against stand-in SLURM commands."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from seqbench.harness.cli import main
from seqbench.harness.loaders import load_runs
from seqbench.harness.records import CHECKPOINT
from seqbench.harness.executors.slurm import CLUSTER_ENV
from seqbench.harness.sweep import expand, load_spec
from seqbench.harness.train import execute

from .conftest import as_from_a_terminal
from .test_sweep import TINY_BASE, untimed_metrics

# long enough (~1,000 steps of ~2 ms) to be stopped between its periodic checkpoint and its end
SLOW_BASE = {**TINY_BASE, "task.length": 30, "train.steps": 1000, "train.checkpoint_every": 50,
             "train.eval_every": 250, "train.log_every": 50, "threads": 1}


def write_spec(tmp_path, name, base, **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, **fields}))
    return path


@pytest.fixture
def local_cluster(monkeypatch):
    monkeypatch.setenv(CLUSTER_ENV, "local")


def same_record(a: Path, b: Path) -> None:
    assert untimed_metrics(a) == untimed_metrics(b)
    assert (a / "grad_profile.jsonl").read_text() == (b / "grad_profile.jsonl").read_text()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["final"] == sb["final"] and sa["config"] == sb["config"] and sa["status"] == sb["status"]


def submissions(sweep_dir: Path) -> list[Path]:
    return sorted((sweep_dir / ".slurm").glob("*_submitted.pkl"))


def task_pid(sweep_dir: Path, timeout: float = 60) -> int:
    """The process of the (one) running array task of this sweep, once its run has a checkpoint."""
    marker = str(sweep_dir / ".slurm")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(sweep_dir.glob(f"*/{CHECKPOINT}")):
            for proc in Path("/proc").iterdir():
                try:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"submitit.core._submit" in argv and marker.encode() in argv:
                    return int(proc.name)
        time.sleep(0.005)
    raise AssertionError("no array task with a checkpoint appeared")


def in_background(fn, *args):
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # surfaced by the test through result["error"]
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """An uninterrupted run of the slow spec's one run, in this process, and its config."""
    folder = tmp_path_factory.mktemp("reference")
    (cfg,) = expand(*load_spec(str(write_spec(folder, "slow", SLOW_BASE))), {})
    _, run_dir = execute(cfg, folder / "out", progress=False)
    return cfg, run_dir


# --- through submitit's local executor ----------------------------------------------------------------------------
def test_records_equal_the_local_executors_and_a_rerun_submits_nothing(local_cluster, tmp_path, capsys):
    spec = write_spec(tmp_path, "s", {**TINY_BASE, "threads": 1}, grid={"model": ["lstm", "rnn"]})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "local"), "--workers", "2"]) == 0
    assert main(["sweep", str(spec), "--out", str(tmp_path / "slurm"), "--executor", "slurm",
                 "--slurm-time", "5"]) == 0
    assert "completed 2" in capsys.readouterr().out
    sweep_dir = tmp_path / "slurm" / "s"
    assert len(submissions(sweep_dir)) == 2
    local, remote = load_runs(tmp_path / "local" / "s"), load_runs(sweep_dir)
    assert sorted(local.run_id) == sorted(remote.run_id) and len(local) == 2
    for run_id in local.run_id:
        same_record(tmp_path / "local" / "s" / run_id, sweep_dir / run_id)
    run_files = [f for run_id in local.run_id for f in (sweep_dir / run_id).iterdir()]
    before = {f: f.stat().st_mtime_ns for f in run_files}

    assert main(["sweep", str(spec), "--out", str(tmp_path / "slurm"), "--executor", "slurm", "--slurm-time", "5"]) == 0
    out = capsys.readouterr()
    assert "(2 already recorded)" in out.err and "skipped 2" in out.out
    assert len(submissions(sweep_dir)) == 2
    assert {f: f.stat().st_mtime_ns for f in run_files} == before  # no record was touched


def test_run_slurm_skips_finished_runs_without_submitting(local_cluster, tmp_path):
    from seqbench.harness.resources import Resources, SlurmSettings
    from seqbench.harness.executors.slurm import run_slurm

    spec = write_spec(tmp_path, "d", {**TINY_BASE, "threads": 1})
    configs = expand(*load_spec(str(spec)), {})
    execute(configs[0], tmp_path / "d", progress=False)
    results = list(run_slurm(configs, tmp_path / "d", 1, Resources(), SlurmSettings(time=5), lambda _: None))
    assert [(r["run_id"], r["status"], r.get("skipped")) for r in results] == [(configs[0].run_id, "completed", True)]
    assert not (tmp_path / "d" / ".slurm").exists()


def test_a_killed_task_is_resubmitted_and_resumes_from_its_checkpoint(local_cluster, slow_reference, tmp_path):
    cfg, reference = slow_reference
    spec = write_spec(tmp_path, "slow", SLOW_BASE)
    sweep_dir = tmp_path / "out" / "slow"
    killer, killed = in_background(lambda: os.kill(task_pid(sweep_dir), signal.SIGKILL))

    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", "--slurm-time", "5"]) == 0
    killer.join()
    assert "error" not in killed
    assert len(submissions(sweep_dir)) == 2  # the killed task's run went into a second array
    summary = json.loads((sweep_dir / cfg.run_id / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_step"] > 0
    same_record(reference, sweep_dir / cfg.run_id)


def test_a_preempted_task_checkpoints_requeues_itself_and_resumes(local_cluster, slow_reference, tmp_path):
    cfg, reference = slow_reference
    spec = write_spec(tmp_path, "slow", SLOW_BASE)
    sweep_dir = tmp_path / "out" / "slow"
    # USR2 is what SLURM sends before the time limit (submitit's --signal) and, where configured, at preemption
    signaller, signalled = in_background(lambda: os.kill(task_pid(sweep_dir), signal.SIGUSR2))

    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", "--slurm-time", "5"]) == 0
    signaller.join()
    assert "error" not in signalled
    assert len(submissions(sweep_dir)) == 1  # requeued by submitit, not resubmitted by the driver
    (log,) = (sweep_dir / ".slurm").glob("*_0_log.out")
    assert log.read_text().count("Requeued job") == 1 and "Job completed successfully" in log.read_text()
    summary = json.loads((sweep_dir / cfg.run_id / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_step"] > 0
    same_record(reference, sweep_dir / cfg.run_id)


def test_a_stopped_sweep_cancels_its_tasks_and_resumes_when_run_again(local_cluster, slow_reference, tmp_path):
    cfg, reference = slow_reference
    spec = write_spec(tmp_path, "slow", SLOW_BASE)
    sweep_dir = tmp_path / "out" / "slow"
    command = [sys.executable, "-m", "seqbench.harness.cli", "sweep", str(spec), "--out", str(tmp_path / "out"),
               "--executor", "slurm", "--slurm-time", "5"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=as_from_a_terminal)
    try:
        task = task_pid(sweep_dir)
        driver.send_signal(signal.SIGTERM)  # as a scheduler or Ctrl-C stops the sweep
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 130, err
    deadline = time.time() + 30
    while Path(f"/proc/{task}").exists() and time.time() < deadline:  # the cancelled task checkpoints and ends
        time.sleep(0.05)
    run_dir = sweep_dir / cfg.run_id
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / "summary.json").exists()

    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", "--slurm-time", "5"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_step"] > 0
    same_record(reference, run_dir)


# --- the sbatch path, against stand-in SLURM commands --------------------------------------------------------------
FAKE_SBATCH = """#!/bin/sh
n=$(ls "$FAKE_SLURM" | grep -c '^submitted')
cp "$1" "$FAKE_SLURM/submitted-$n.sh"
echo "Submitted batch job $((7100 + n))"
"""
# every job's tasks end at once without a result, as on a node failure
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then echo "$2_[0-9]|NODE_FAIL|node1"; shift; fi
  shift
done
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\nexit 1\n"),
                       ("scancel", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(record))
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    return record


def test_flags_and_spec_reach_the_sbatch_script_and_lost_tasks_are_resubmitted_then_failed(fake_slurm, tmp_path,
                                                                                            capsys):
    spec = write_spec(tmp_path, "g", TINY_BASE, grid={"model": ["lstm", "gru", "rnn"]},
                      slurm={"partition": "cpu", "time": 30, "params": {"qos": "low", "constraint": "a100"}})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm",
                 "--slurm-partition", "gpu", "--slurm-time", "120", "--slurm-array-parallelism", "2",
                 "--cpus-per-run", "3", "--gpus-per-run", "1", "--slurm-param", "account=myproj",
                 "--slurm-param", "qos=high", "--slurm-param", "setup=module load cuda"]) == 1
    scripts = sorted(fake_slurm.glob("submitted-*.sh"))
    assert len(scripts) == 3  # the first array, then two resubmissions of the runs it lost
    lines = scripts[0].read_text().splitlines()
    sweep_dir = tmp_path / "out" / "g"
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --time=120", "#SBATCH --array=0-2%2",
                     "#SBATCH --cpus-per-task=3", "#SBATCH --gpus-per-node=1", "#SBATCH --account=myproj",
                     "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --job-name=seqbench-g",
                     "#SBATCH --signal=USR2@90", "module load cuda"):
        assert expected in lines, expected
    # the task runs submitit's runner through seqbench's, with the driver's interpreter (see harness/_slurm_task.py)
    [command] = [line for line in lines if "submitit.core._submit" in line]
    assert command.split()[-1] == str(sweep_dir / ".slurm") and "srun" in command
    assert f"{sys.executable} -u -m seqbench.harness._slurm_task -u -m submitit.core._submit" in command
    assert "#SBATCH --array=0-2%2" in scripts[1].read_text()

    runs = load_runs(sweep_dir)
    assert sorted(runs.status) == ["failed"] * 3
    assert all("ended without a result 3 times" in e and "NODE_FAIL" in e for e in runs.error)
    assert "failed 3" in capsys.readouterr().out


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, needle", [
    (["--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
    (["--slurm-param", "account=x"], "--slurm-param needs --executor slurm"),
    (["--executor", "ray", "--slurm-time", "5"], "--slurm-time needs --executor slurm"),
    (["--executor", "slurm"], "--executor slurm needs a time limit per run: --slurm-time"),
    (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time 0: must be >= 1"),
    (["--executor", "slurm", "--slurm-time", "5", "--gpus-per-run", "0.5"], "--gpus-per-run 0.5: SLURM allocates"),
    (["--executor", "slurm", "--slurm-time", "5", "--resource", "A100=1"], "--resource {'A100': 1.0}: custom"),
    (["--executor", "slurm", "--slurm-time", "5", "--slurm-param", "acount=x"],
     "--slurm-param acount=x: not an sbatch parameter submitit knows"),
    (["--executor", "slurm", "--slurm-time", "5", "--slurm-param", "partition=x"],
     "--slurm-param partition=x: the sweep sets partition; set it with --slurm-partition"),
    (["--executor", "slurm", "--slurm-time", "5", "--slurm-param", "signal_delay_s=soon"],
     "--slurm-param signal_delay_s=soon: expected int"),
    (["--executor", "slurm", "--slurm-time", "5", "--slurm-param", "account"], "--slurm-param 'account': expected"),
])
def test_bad_slurm_input_exits_2_with_one_line_and_writes_nothing(local_cluster, tmp_path, capsys, flags, needle):
    spec = write_spec(tmp_path, "b", TINY_BASE)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_bad_sbatch_parameter_in_the_spec_names_its_key(local_cluster, tmp_path, capsys):
    spec = write_spec(tmp_path, "b", TINY_BASE, slurm={"time": 5, "params": {"mem": 16}})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm"]) == 2
    assert "slurm.params.mem: 16: expected Optional[str]" in capsys.readouterr().err


def test_off_a_cluster_the_error_says_where_to_submit_from(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    spec = write_spec(tmp_path, "b", TINY_BASE)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", "--slurm-time", "5"]) == 2
    assert "no sbatch or srun on PATH; submit from a SLURM login node" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv(CLUSTER_ENV, "pbs")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", "--slurm-time", "5"]) == 2
    assert f"{CLUSTER_ENV}='pbs': expected slurm" in capsys.readouterr().err


def test_without_submitit_the_error_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    spec = write_spec(tmp_path, "b", TINY_BASE)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", "--slurm-time", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("seqbench: error: --executor slurm: submitit is not installed; pip install 'seqbench[slurm]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a submitting machine without a GPU")
def test_a_machine_without_a_gpu_submits_gpu_runs(tmp_path, capsys, monkeypatch):
    """A login node has no GPU: device=cuda is refused for local runs but accepted for a cluster sweep, whose nodes
    resolve the config again where they train."""
    monkeypatch.delenv(CLUSTER_ENV, raising=False)  # the real sbatch path; a dry run needs no sbatch
    spec = write_spec(tmp_path, "gpu", {**TINY_BASE, "device": "cuda"}, grid={"model": ["lstm", "gru"]})
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 2
    assert "device=cuda" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run", "--json", "--executor", "slurm",
                 "--slurm-time", "60"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 2 and listed["available_bytes"] is None
    assert not out.exists()
    from seqbench.harness.config import devices_elsewhere, parse_overrides, resolve
    with devices_elsewhere():
        remote = resolve(parse_overrides(["device=cuda"]))
    assert remote.device == "cuda"
    with pytest.raises(Exception, match="device=cuda"):  # outside the context the local check is back
        resolve(parse_overrides(["device=cuda"]))
