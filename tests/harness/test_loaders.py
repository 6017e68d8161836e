import importlib.util
import json

import pytest

from seqbench.harness.cli import main
from seqbench.harness.errors import RecordError
from seqbench.harness.loaders import load_lengths, load_metrics, load_runs
from seqbench.harness.train import execute

from .conftest import tiny

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="export reads records only once the tracker is installed")


def test_runs_metrics_and_unfinished_runs(tmp_path):
    s, run_dir = execute(tiny(), tmp_path / "sweep", progress=False)
    execute(tiny("seed=1", "task.length=20"), tmp_path / "sweep" / "nested", progress=False)
    # an unfinished run: config written, metrics cut mid-line by a kill, no summary
    dead = tmp_path / "sweep" / "deadbeef0000"
    dead.mkdir()
    (dead / "config.json").write_text(json.dumps(s["config"]))
    (dead / "metrics.jsonl").write_text('{"step": 0, "eval_loss": 0.5}\n{"step": 2, "train_lo')

    runs = load_runs(tmp_path)
    assert len(runs) == 3
    by_id = runs.set_index("run_id")
    assert by_id.loc[s["run_id"], "status"] == "completed"
    assert by_id.loc["deadbeef0000", "status"] == "incomplete"
    assert sorted(runs["config.task.length"]) == [12, 12, 20]
    assert by_id.loc[s["run_id"], "final.eval_loss"] == s["final"]["eval_loss"]

    m = load_metrics(tmp_path)
    assert list(m.columns) == ["run_id", "step", "metric", "value"]
    dead_rows = m[m.run_id == "deadbeef0000"]
    assert dead_rows[["step", "metric", "value"]].values.tolist() == [[0, "eval_loss", 0.5]]
    mine = m[(m.run_id == s["run_id"]) & (m.metric == "eval_loss")]
    assert mine.step.tolist() == [0, 3, 6]


def test_empty_folder_gives_empty_frames(tmp_path):
    assert load_runs(tmp_path).empty and load_metrics(tmp_path).empty


# --- records that lost a part: read, never silently dropped -----------------------------------------------------------
def damaged_pair(root):
    """Two completed runs under `root`: one whose config.json is gone (its summary keeps the config), one whose
    metrics.jsonl is empty."""
    lost_config, lost_config_dir = execute(tiny(), root / "a", progress=False)
    (lost_config_dir / "config.json").unlink()
    lost_metrics, lost_metrics_dir = execute(tiny("seed=1"), root / "b", progress=False)
    (lost_metrics_dir / "metrics.jsonl").write_text("")
    return (lost_config["run_id"], lost_config_dir), (lost_metrics["run_id"], lost_metrics_dir)


def warnings_of(err: str) -> list[str]:
    """The warnings about records; not the provenance warning, which depends on whether this checkout is dirty."""
    return [line for line in err.splitlines()
            if line.startswith("seqbench: warning: ") and "mixed provenance" not in line]


def test_load_runs_keeps_a_run_without_config_json_and_one_with_empty_metrics_and_warns(tmp_path, capsys):
    (config_id, config_dir), (metrics_id, metrics_dir) = damaged_pair(tmp_path)
    runs = load_runs(tmp_path).set_index("run_id")
    assert set(runs.index) == {config_id, metrics_id} and set(runs.status) == {"completed"}
    assert runs.loc[config_id, "config.task.length"] == 12 and runs.loc[config_id, "config.seed"] == 0
    assert f"{config_dir / 'config.json'}: missing" in runs.loc[config_id, "record_warnings"]
    assert f"{metrics_dir / 'metrics.jsonl'}: empty" in runs.loc[metrics_id, "record_warnings"]
    warned = warnings_of(capsys.readouterr().err)
    assert len(warned) == 2
    assert "config.json: missing" in warned[0] and "summary.json" in warned[0]
    assert "metrics.jsonl: empty" in warned[1] and "completed" in warned[1]
    # the run without config.json keeps its metrics and its length results
    assert set(load_metrics(tmp_path).run_id) == {config_id}
    assert set(load_lengths(tmp_path).run_id) == {config_id}


def test_a_whole_record_gets_no_warning(tmp_path, capsys):
    execute(tiny(), tmp_path, progress=False)
    runs = load_runs(tmp_path)
    assert runs.record_warnings.isna().all() and capsys.readouterr().err == ""


def test_empty_metrics_warn_only_for_a_run_whose_summary_says_completed(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    (run_dir / "metrics.jsonl").write_text("")
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "failed", "error": "x"}))
    assert load_runs(tmp_path).record_warnings.isna().all()
    (run_dir / "summary.json").unlink()  # unfinished: no metrics yet is ordinary
    assert load_runs(tmp_path).status.tolist() == ["incomplete"] and capsys.readouterr().err == ""


def test_a_run_with_neither_config_json_nor_a_config_in_its_summary_is_a_record_error(tmp_path):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    (run_dir / "config.json").unlink()
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    with pytest.raises(RecordError, match=r"config.json: missing, and .*summary.json holds no config either"):
        load_runs(tmp_path)


def test_report_counts_both_runs_and_warns_about_each(tmp_path, capsys):
    from seqbench.harness.report.data import load

    (config_id, _), (metrics_id, _) = damaged_pair(tmp_path / "results")
    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "report")]) == 0
    out, err = capsys.readouterr()
    warned = warnings_of(err)
    assert len(warned) == 2 and "config.json: missing" in warned[0] and "metrics.jsonl: empty" in warned[1]
    page = (tmp_path / "report" / "index.md").read_text()
    assert "— 2 runs (2 completed)" in page
    assert "config.json: missing" in page and "metrics.jsonl: empty" in page  # under the page's warnings too
    data = load(tmp_path / "results")
    assert set(data.runs.run_id) == {config_id, metrics_id}
    assert [w.split(": ", 1)[1].split(",")[0] for w in data.record_warnings] == ["missing", "empty"]
    assert set(data.metrics.run_id) == {config_id}  # no curve for the run whose metrics are lost


@needs_tensorboard
def test_export_sends_a_run_without_config_json_with_a_warning(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    (run_dir / "config.json").unlink()
    assert main(["export", str(tmp_path), "--to", "tensorboard"]) == 0
    out, err = capsys.readouterr()
    assert "export: 1 runs -> tensorboard" in out
    warned = warnings_of(err)
    assert len(warned) == 1 and f"{run_dir / 'config.json'}: missing" in warned[0]


@needs_tensorboard
def test_export_refuses_a_completed_run_whose_metrics_are_empty(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path / "runs", progress=False)
    (run_dir / "metrics.jsonl").write_text("")
    before = sorted(tmp_path.rglob("*"))
    assert main(["export", str(tmp_path / "runs"), "--to", "tensorboard"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("seqbench: error: ")
    assert f"{run_dir / 'metrics.jsonl'}: empty" in err[0] and "nothing to export" in err[0]
    assert sorted(tmp_path.rglob("*")) == before
