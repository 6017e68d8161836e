import json

import pytest

from seqbench.harness.cli import main
from seqbench.harness.reproduce import compare, overall
from seqbench.harness.train import execute

from .conftest import tiny


def test_compare_groups_values_by_quantity_and_ignores_timing():
    old = {"metrics": {"step 2": {"step": 2, "train_loss": 1.0, "tokens_per_s": 5.0},
                       "step 4": {"step": 4, "train_loss": 2.0, "tokens_per_s": 5.0}},
           "summary": {"status": "completed", "final": {"eval_loss": 0.5}}}
    new = json.loads(json.dumps(old))
    new["metrics"]["step 2"]["tokens_per_s"] = 9.0
    assert overall(compare(old, new), 0.0) == "identical"
    new["metrics"]["step 4"]["train_loss"] = 2.0 * (1 + 1e-7)
    q = compare(old, new)["metrics: train_loss"]
    assert (q.values, q.differing) == (2, 1)
    assert q.max_abs == pytest.approx(2e-7) and q.max_rel == pytest.approx(1e-7, rel=1e-6)
    assert overall(compare(old, new), 1e-6) == "within rtol" and overall(compare(old, new), 1e-8) == "differs"
    new["summary"]["status"] = "diverged"  # not a number: never within a tolerance
    assert compare(old, new)["summary: status"].verdict(1.0) == "differs"


def test_a_missing_row_differs():
    old = {"metrics": {"step 2": {"step": 2, "train_loss": 1.0}, "step 4": {"step": 4, "train_loss": 2.0}}}
    new = {"metrics": {"step 2": {"step": 2, "train_loss": 1.0}}}
    assert overall(compare(old, new), 1.0) == "differs"


def test_a_cpu_run_reproduces_identically(tmp_path, capsys):
    _, run_dir = execute(tiny("model=gru"), tmp_path, progress=False)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "verdict: identical" and "environment: same as the record" in out


def _nudge(run_dir, factor):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["train_loss"] *= factor
    lines[2] = json.dumps(row)
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_noise_is_within_rtol_and_a_real_change_differs(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    _nudge(run_dir, 1 + 1e-6)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "verdict: within rtol (rtol 0.001)"
    row = next(line for line in out.splitlines() if "metrics: train_loss" in line)
    assert row.split()[2] == "1/4" and float(row.split()[4]) == pytest.approx(1e-6, rel=1e-3)

    assert main(["reproduce", str(run_dir), "--quiet", "--rtol", "0"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "verdict: differs (rtol 0)"
    _nudge(run_dir, 1.5)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 1
    assert "differs" in capsys.readouterr().out.strip().splitlines()[-1]


def test_a_different_environment_is_named(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["provenance"].update(torch="1.0.0", cpu_model="Some Other CPU")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "environment differs from the record: " in out
    assert "torch '1.0.0' -> " in out and "cpu_model 'Some Other CPU' -> " in out


@pytest.mark.parametrize("rtol", ["-1", "nan"])
def test_a_negative_rtol_exits_2(tmp_path, capsys, rtol):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    assert main(["reproduce", str(run_dir), "--rtol", rtol]) == 2
    err = capsys.readouterr().err.strip()
    assert "--rtol" in err and ">= 0" in err and "\n" not in err


def test_not_a_run_folder_exits_2(tmp_path, capsys):
    assert main(["reproduce", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_another_thread_count_is_named_and_can_move_the_bits(tmp_path, capsys):
    from .test_threads import sensitive

    _, run_dir = execute(sensitive(threads=1), tmp_path, progress=False)
    assert main(["reproduce", str(run_dir), "--quiet", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "environment differs from the record: torch_threads 1 -> 2" in out
    assert out.strip().splitlines()[-1] == "verdict: within rtol (rtol 0.001)"  # last bits only, on this run
    assert main(["reproduce", str(run_dir), "--quiet", "--threads", "0"]) == 2
