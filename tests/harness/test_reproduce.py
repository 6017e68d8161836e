import json

from harness.cli import main
from harness.reproduce import compare
from harness.train import execute

from .conftest import tiny


def test_compare_reports_paths_and_ignores_timing():
    old = {"a": 1.0, "rows": [{"x": 1.0, "tokens_per_s": 5.0}], "s": "done"}
    new = {"a": 1.0 + 1e-9, "rows": [{"x": 1.0, "tokens_per_s": 9.0}], "s": "done"}
    assert compare(old, new, 0.0) == ["a: 1.0 -> 1.000000001"]
    assert compare(old, new, 1e-6) == []
    assert compare({"r": [1, 2]}, {"r": [1]}, 0.0) == ["r: 2 entries -> 1"]


def test_a_cpu_run_reproduces_bitwise(tmp_path, capsys):
    _, run_dir = execute(tiny("model=gru"), tmp_path, progress=False)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    assert "match bitwise" in capsys.readouterr().out


def test_a_changed_record_is_a_mismatch_naming_the_field(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["train_loss"] += 1e-7
    lines[2] = json.dumps(row)
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["reproduce", str(run_dir), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and f"metrics.step {row['step']}.train_loss" in out


def test_not_a_run_folder_exits_2(tmp_path, capsys):
    assert main(["reproduce", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
