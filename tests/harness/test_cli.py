import subprocess
import sys

import pytest

from seqbench.harness.cli import main

from .conftest import TINY


def test_run_writes_a_record_and_prints_a_summary(tmp_path, capsys):
    assert main(["run", *TINY, "device=cpu", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert f"run {run_dir.name}: lstm on adding - completed" in out
    files = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    assert files == {"config.json", "started.json", "metrics.jsonl", "grad_profile.jsonl", "summary.json"}
    # the record's config reproduces the run id
    assert main(["run", "--config", str(run_dir / "config.json"), "--out", str(tmp_path), "--quiet"]) == 0
    assert "already recorded" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["model=lstm", "model.hidden=0"], "model.hidden=0"),
    (["task=copyy"], "task=copyy: unknown task; known: adding, copy"),
    (["model.backend=cudnn"], "model.backend=cudnn"),
    (["train.lr=0"], "train.lr=0"),
    (["nonsense"], "malformed override 'nonsense'"),
    (["--bogus"], "--bogus"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    assert main(["run", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("seqbench: error:") and "\n" not in err
    assert not out.exists()


def test_list_shows_tasks_models_backends_and_keys(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for needle in ("adding", "copy", "transformer", "reference", "task.copy_len", "train.clip", "1.0"):
        assert needle in out


def test_console_command(tmp_path):
    """The installed entry point runs as a user types it; bad input -> exit 2."""
    r = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "run", "train.steps=0", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "train.steps=0" in r.stderr


EXITS_NOW = """
import atexit, pathlib, sys, threading, time
from seqbench.harness.cli import exit_now

folder = pathlib.Path(sys.argv[1])
atexit.register(lambda: (folder / "exit-handler").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), (folder / "thread").write_text("done"))).start()
sys.stdout.write("no newline yet")  # buffered: a bare os._exit would lose it
exit_now(3)
"""


def test_the_command_ends_as_a_normal_exit_would_minus_the_teardown(tmp_path):
    """`entry` ends through `exit_now`: the exit code it is given, threads finished, exit handlers run (Ray's stops an
    instance the command started), buffered output written."""
    r = subprocess.run([sys.executable, "-c", EXITS_NOW, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stdout == "no newline yet", (r.returncode, r.stdout, r.stderr)
    assert (tmp_path / "exit-handler").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def test_report_command(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2  # a folder without runs
    assert "no runs under" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    assert main(["run", *TINY, "model.hidden=8", "device=cpu", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "runs")]) == 0
    assert f"report: {tmp_path / 'runs' / 'report' / 'index.html'}" in capsys.readouterr().out
    assert (tmp_path / "runs" / "report" / "tables" / "summary.tex").exists()
