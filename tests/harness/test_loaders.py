import json

from seqbench.harness.loaders import load_metrics, load_runs
from seqbench.harness.train import execute

from .conftest import tiny


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
