import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from seqbench.harness.cli import main
from seqbench.harness.config import ConfigError, devices_elsewhere, parse_overrides
from seqbench.harness.loaders import load_runs
from seqbench.harness.sweep import expand, load_spec, points, presets

TINY_BASE = {"task": "adding", "task.length": 8, "model.hidden": 8, "device": "cpu", "train.steps": 6,
             "train.batch_size": 4, "train.eval_every": 3, "train.log_every": 2, "train.eval_size": 16,
             "train.grad_profile_batch": 4}


def write_spec(tmp_path, name="t", **fields):
    spec = {"name": name, "base": dict(TINY_BASE), **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def untimed_metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in rows]


# --- specs ---------------------------------------------------------------------------------------------------------
def test_grid_zip_and_seeds_expand_to_the_product(tmp_path):
    path = write_spec(tmp_path, grid={"model": ["lstm", "gru"], "model.layers": [1, 2]},
                      zip={"task.length": [8, 9, 10], "train.lr": [0.1, 0.01, 0.001]}, seeds=[3, 4])
    spec, source = load_spec(str(path))
    assert len(points(spec)) == 2 * 2 * 3 * 2
    configs = expand(spec, source, parse_overrides(["train.steps=7"]))
    assert len({c.run_id for c in configs}) == len(configs) == 24
    assert {(c.task.length, c.train.lr) for c in configs} == {(8, 0.1), (9, 0.01), (10, 0.001)}
    assert {c.seed for c in configs} == {3, 4} and {c.train.steps for c in configs} == {7}


def test_duplicate_points_are_refused_naming_both(tmp_path):
    path = write_spec(tmp_path, grid={"model.hidden": [8, 8]}, seeds=2)
    with pytest.raises(ConfigError, match=r"points model.hidden=8, seed=0 and model.hidden=8, seed=0 are the same run"):
        expand(*load_spec(str(path)), {})


def test_grid_entries_may_be_whole_model_sections(tmp_path):
    path = write_spec(tmp_path, grid={"model": [{"name": "lstm", "hidden": 16},
                                                {"name": "transformer", "d_model": 8, "heads": 2}]})
    spec, source = load_spec(str(path))
    spec.base.pop("model.hidden")
    names = [(c.model.name, getattr(c.model, "hidden", None)) for c in expand(spec, source, {})]
    assert names == [("lstm", 16), ("transformer", None)]


@pytest.mark.parametrize("fields, needle", [
    ({"grdi": {"model": ["lstm"]}}, "grdi: unknown key"),
    ({"grid": {"model": []}}, "grid.model: empty list"),
    ({"zip": {"task.length": [8, 9], "train.lr": [0.1]}}, "zip lists must have equal lengths"),
    ({"seeds": 0}, "seeds=0"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"grid": {"model.hidden": [8, 0]}}, "model.hidden=0"),
    ({"grid": {"model.frob": [1]}}, "model.frob: unknown key"),
    ({"base": {**TINY_BASE, "seed": 5}}, "base.seed: the sweep sets each run's seed from `seeds:`"),
    ({"seeds": 100_000_000}, "seeds: 100,000,000 seeds are 100,000,000 runs; a sweep may have at most 100,000 runs"),
    ({"grid": {"model.hidden": list(range(1, 401)), "task.length": list(range(2, 402))}},
     "grid x zip x seeds make 160,000 runs (grid.model.hidden: 400 values x grid.task.length: 400 values x seeds: 1)"),
])
def test_bad_specs_exit_2_naming_file_and_key(tmp_path, capsys, fields, needle):
    path = write_spec(tmp_path, **fields)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and str(path) in err and "\n" not in err
    assert not out.exists()


def test_a_seed_in_the_base_is_refused_not_ignored(tmp_path, capsys):
    """`seeds:` sets every run's seed: a `seed` in the base was once silently replaced by seeds 0..n-1."""
    path = write_spec(tmp_path, base={**TINY_BASE, "seed": 7}, seeds=2)
    for dry_run in ([], ["--dry-run"]):
        assert main(["sweep", str(path), "--out", str(tmp_path / "out"), *dry_run]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith(f"seqbench: error: {path}: base.seed: ")
        assert "seeds: [7]" in err and "remove base.seed" in err
    assert not (tmp_path / "out").exists()


def test_a_sweep_too_large_is_refused_before_it_is_expanded(tmp_path, capsys, monkeypatch):
    import seqbench.harness.sweep as sweep

    def never(spec):
        raise AssertionError("points() expanded a sweep that should have been refused")

    monkeypatch.setattr(sweep, "points", never)
    path = write_spec(tmp_path, seeds=100_000_000)
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seeds: 100,000,000 seeds" in err and f"at most {sweep.MAX_RUNS:,} runs" in err
    monkeypatch.undo()
    at_bound = load_spec(str(write_spec(tmp_path, name="edge", seeds=sweep.MAX_RUNS)))[0]
    assert at_bound.run_count() == sweep.MAX_RUNS
    sweep.check_size(at_bound, tmp_path)  # the bound itself is allowed
    assert not (tmp_path / "out").exists()


def test_run_count_is_the_number_of_points(tmp_path):
    path = write_spec(tmp_path, grid={"model": ["lstm", "gru"], "model.layers": [1, 2, 3]},
                      zip=[{"task.length": [8, 9], "train.lr": [0.1, 0.01]}, {}], seeds=[3, 4, 5])
    spec, _ = load_spec(str(path))
    assert spec.run_count() == len(points(spec)) == 2 * 3 * 2 * 3


def test_an_empty_zip_varies_nothing(tmp_path):
    spec, source = load_spec(str(write_spec(tmp_path, zip={}, seeds=2)))
    assert [c.seed for c in expand(spec, source, {})] == [0, 1]


def test_unknown_preset_lists_presets(capsys):
    assert main(["sweep", "nonexistent"]) == 2
    assert "presets: adding, copy, lengthgen, matched, quick, recall, recall-gpu" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["quick", "adding", "copy", "recall", "recall-gpu", "lengthgen", "matched"])
def test_presets_are_valid(name):
    assert name in presets()
    with devices_elsewhere():  # recall-gpu names device=cuda
        configs = expand(*load_spec(name), {})
    assert len(configs) >= 12
    models = {"rnn", "lstm", "gru", "transformer"} | ({"mingru", "minlstm"} if name == "matched" else set())
    assert {c.model.name for c in configs} == models


@pytest.mark.parametrize("name", ["adding", "copy", "recall", "recall-gpu", "lengthgen", "matched"])
def test_presets_meant_for_citation_tune_the_learning_rate_per_model_over_5_seeds(name):
    spec, _ = load_spec(name)
    assert spec.tune is not None and len(spec.tune.keys["train.lr"]) >= 3
    assert spec.seed_list() == list(range(5)) and not set(spec.tune.seeds) & set(spec.seed_list())
    assert "train.lr" not in spec.base  # one lr for every model would be the untuned comparison


def test_quick_says_it_is_a_demo_with_one_learning_rate():
    spec, _ = load_spec("quick")
    assert spec.tune is None and spec.seed_list() == [0, 1, 2]
    assert spec.description.startswith("A demo of the harness, not a result to cite")


def test_recall_presets_run_every_recall_task_for_every_model():
    cpu = expand(*load_spec("recall"), {})
    assert {c.task.name for c in cpu} == {"selective_copy", "mqar", "induction"} and {c.device for c in cpu} == {"cpu"}
    assert len(cpu) == 3 * 4 * 5 and {c.seed for c in cpu} == set(range(5))
    with devices_elsewhere():
        gpu = expand(*load_spec("recall-gpu"), {})
    assert {c.device for c in gpu} == {"cuda"}
    sizes = {(c.task.name, c.task.length, getattr(c.task, "num_kv_pairs", None)) for c in gpu}
    assert {("mqar", 64, 4), ("mqar", 128, 8), ("mqar", 256, 16), ("mqar", 512, 64)} <= sizes  # Zoology's Figure 2
    sc = next(c.task for c in gpu if c.task.name == "selective_copy")
    assert (sc.length + sc.n_tokens, sc.n_tokens, sc.vocab) == (4096, 16, 16)  # Mamba's Table 1
    assert {c.task.vocab for c in gpu if c.task.name == "mqar"} == {8192}


def test_matched_gives_every_model_each_budget_within_a_few_percent():
    from seqbench.harness.memory import parameter_count

    from seqbench.harness.models import MODELS

    configs = expand(*load_spec("matched"), {})
    # every built-in model the preset's committed records (results/reference/matched) were made with; the LRU and
    # Mamba came after them and join the preset with their own records
    assert {c.model.name for c in configs} == set(MODELS) - {"lru", "mamba"}
    budgets = {c.model.params for c in configs}
    assert len(budgets) >= 2 and {c.task.name for c in configs} == {"copy", "adding"}
    for c in configs:
        assert abs(parameter_count(c) / c.model.params - 1) < 0.05, (c.model.name, c.task.name, c.model.params)


def test_lengthgen_evaluates_every_model_at_2_to_16_times_its_training_length():
    configs = expand(*load_spec("lengthgen"), {})
    assert len({c.model.name for c in configs}) == 4 and {c.seed for c in configs} == set(range(5))
    for c in configs:
        assert [n / c.task.length for n in c.eval.lengths] == [2, 4, 8, 16]


def test_quick_preset_shows_both_tasks_at_two_lengths_with_three_seeds():
    configs = expand(*load_spec("quick"), {})
    assert {(c.task.name, c.task.length) for c in configs} == {("adding", 10), ("adding", 100), ("copy", 10),
                                                               ("copy", 20)}
    assert {c.seed for c in configs} == {0, 1, 2} and {c.device for c in configs} == {"cpu"}
    assert len(configs) == 4 * 4 * 3
    # a fair comparison: within a task, every model trains with the same settings
    for task in ("adding", "copy"):
        train = {json.dumps(c.train.model_dump(), sort_keys=True) for c in configs
                 if c.task.name == task and c.task.length == 10}
        assert len(train) == 1, task


# --- local execution -------------------------------------------------------------------------------------------------
def test_local_sweep_records_resumes_and_skips(tmp_path, capsys):
    path = write_spec(tmp_path, grid={"model": ["lstm", "gru"]}, seeds=2)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2", "--dry-run"]) == 0
    assert "4 runs, 4 to run, 0 already done" in capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing

    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0
    report = capsys.readouterr().out
    assert "4 runs - completed 4, diverged 0, failed 0, skipped 0" in report
    sweep_dir = out / "t"
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(sweep["run_ids"]) == 4 and sweep["spec"]["name"] == "t"
    table = load_runs(sweep_dir / "runs.parquet")
    assert sorted(table.run_id) == sorted(sweep["run_ids"]) and set(table.status) == {"completed"}
    mtimes = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}

    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0
    assert "skipped 4" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}  # nothing ran again


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    # hidden=2,000,000 asks for a 64 TB recurrent matrix: a real allocation failure, raised inside the worker (the
    # memory check, which would refuse the sweep before it starts, is turned off)
    path = write_spec(tmp_path, base={**TINY_BASE, "train.memory_check": False}, grid={"model.hidden": [8, 2_000_000]})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 1
    report = capsys.readouterr().out
    assert "completed 1, diverged 0, failed 1" in report and "failed  " in report
    runs = load_runs(out / "t").set_index("config.model.hidden")
    assert runs.loc[2_000_000, "status"] == "failed" and "alloc" in runs.loc[2_000_000, "error"].lower()
    assert runs.loc[8, "status"] == "completed"


# --- crashes, kills and concurrency ------------------------------------------------------------------------------------
KILL_BASE = {**TINY_BASE, "task.length": 30, "model.hidden": 32, "train.steps": 150, "train.checkpoint_every": 5,
             "train.eval_every": 25, "train.log_every": 5}


def sweep_cmd(path, out, workers=2):
    return [sys.executable, "-m", "seqbench.harness.cli", "sweep", str(path), "--out", str(out), "--workers", str(workers)]


def wait_for_group_to_end(pgid: int, timeout: float = 60.0) -> None:
    """Until no process of process group `pgid` is left (zombies aside: a killed process's orphans are reaped by
    init, not by this test)."""
    def alive() -> list[int]:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state, ppid, pgrp, ...
            except OSError:  # gone meanwhile
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    deadline = time.monotonic() + timeout
    while alive():
        assert time.monotonic() < deadline, f"processes {alive()} of group {pgid} still running after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_at_several_moments_then_rerun_completes_every_run_exactly_once(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump({"name": "k", "base": KILL_BASE, "grid": {"model": ["lstm", "gru"]}, "seeds": 2}))
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(ref), "--workers", "2"]) == 0

    def first(pattern):
        return lambda: next((out / "k").glob(pattern), None) if (out / "k").exists() else None

    # kill -9 the driver: while it starts, once a run has checkpointed, once a run has finished (others in flight)
    for moment in (lambda: True, first("*/checkpoint.pt"), first("*/summary.json")):
        proc = subprocess.Popen(sweep_cmd(path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: the driver's workers stay in it
        deadline = time.monotonic() + 120
        while not moment() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait()
        wait_for_group_to_end(proc.pid)  # its orphaned workers notice the driver is gone and exit (their watchdog)
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0

    runs = load_runs(out / "k")
    assert len(runs) == 4 and set(runs.status) == {"completed"}
    assert runs["resumed_from_step"].notna().any()  # the kills did interrupt runs that then resumed
    for run_id in runs.run_id:
        assert untimed_metrics(out / "k" / run_id) == untimed_metrics(ref / "k" / run_id)
        steps = [r["step"] for r in untimed_metrics(out / "k" / run_id)]
        assert steps == sorted(set(steps))  # no row twice
    assert [p for p in out.rglob("*") if ".tmp-" in p.name] == []  # a killed writer's temp files are cleaned up


@pytest.mark.slow
def test_two_sweeps_on_one_folder_share_the_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "c", "base": {**KILL_BASE, "train.steps": 40},
                                    "grid": {"model": ["lstm", "gru"]}, "seeds": 2}))
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(ref), "--workers", "1"]) == 0
    procs = [subprocess.Popen(sweep_cmd(path, out, workers=1), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = load_runs(out / "c")
    assert len(runs) == 4 and set(runs.status) == {"completed"}
    for run_id in runs.run_id:
        assert untimed_metrics(out / "c" / run_id) == untimed_metrics(ref / "c" / run_id)


# --- retrying, forcing, the results table ------------------------------------------------------------------------------
def _break_run(sweep_dir, run_id, error="RuntimeError: flaky file system"):
    """Turn a finished record into a failed one, as a crash outside the run's control would leave it."""
    path = sweep_dir / run_id / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(status="failed", error=error, final=None)
    path.write_text(json.dumps(summary))
    return summary


def test_failed_runs_are_retried_only_when_asked(tmp_path, capsys):
    path = write_spec(tmp_path, grid={"model": ["lstm", "gru"]})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 0
    sweep_dir = out / "t"
    ids = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    _break_run(sweep_dir, ids[0])
    kept = (sweep_dir / ids[1] / "summary.json").stat().st_mtime_ns
    capsys.readouterr()

    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 1  # a deterministic error would loop
    report = capsys.readouterr().out
    assert "skipped 2 (recorded earlier: completed 1, failed 1)" in report
    assert "1 run(s) recorded as failed were not run again" in report and "--retry-failed" in report
    assert json.loads((sweep_dir / ids[0] / "summary.json").read_text())["status"] == "failed"

    assert main(["sweep", str(path), "--out", str(out), "--workers", "1", "--retry-failed"]) == 0
    assert "completed 1, diverged 0, failed 0, skipped 1" in capsys.readouterr().out
    assert json.loads((sweep_dir / ids[0] / "summary.json").read_text())["status"] == "completed"
    assert (sweep_dir / ids[1] / "summary.json").stat().st_mtime_ns == kept  # the completed run was left alone
    assert not list(sweep_dir.glob(".*staging*"))

    assert main(["sweep", str(path), "--out", str(out), "--workers", "1", "--force"]) == 0
    assert "completed 2, diverged 0, failed 0, skipped 0" in capsys.readouterr().out
    assert (sweep_dir / ids[1] / "summary.json").stat().st_mtime_ns != kept


def test_a_retried_run_keeps_its_old_record_until_the_new_one_is_finished(tmp_path, monkeypatch):
    from seqbench.harness.train import RunInterrupted, execute

    from .test_resume import interrupt_at

    cfg = expand(*load_spec(str(write_spec(tmp_path))), {})[0]
    execute(cfg, tmp_path, progress=False)
    old = _break_run(tmp_path, cfg.run_id)
    with monkeypatch.context() as m:
        interrupt_at(m, 2)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path, progress=False, force=True)  # what --retry-failed does for this run
    assert json.loads((tmp_path / cfg.run_id / "summary.json").read_text()) == old


def test_force_and_retry_failed_together_exit_2(tmp_path, capsys):
    path = write_spec(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--force", "--retry-failed"]) == 2
    assert "--force" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_sweep_ends_with_a_results_table(tmp_path, capsys):
    path = write_spec(tmp_path, grid={"model": ["lstm", "gru"], "task.length": [6, 8]}, seeds=2)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("model")))
    assert lines[header].split() == ["model", "task.length", "runs", "final", "eval", "loss", "accuracy", "solved"]
    rows = [line.split() for line in lines[header + 2:header + 6]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("lstm", "6", "2/2"), ("lstm", "8", "2/2"), ("gru", "6", "2/2"),
                                                 ("gru", "8", "2/2")]
    runs = load_runs(tmp_path / "out" / "t")
    lstm6 = runs[(runs["config.model.name"] == "lstm") & (runs["config.task.length"] == 6)]
    assert float(rows[0][3]) == pytest.approx(lstm6["final.eval_loss"].mean(), rel=2e-3)


def test_a_resumed_sweep_keeps_its_recorded_thread_share(tmp_path, capsys):
    path = write_spec(tmp_path, grid={"model": ["lstm", "gru"]})
    out = tmp_path / "out"
    sweep_dir = out / "t"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({"threads": 3}))  # as a first, interrupted sweep left it
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 0
    assert "3 threads per run (recorded when this sweep first ran" in capsys.readouterr().err
    assert {json.loads(p.read_text())["threads"] for p in sweep_dir.glob("*/config.json")} == {3}
    assert json.loads((sweep_dir / "sweep.json").read_text())["threads"] == 3


# --- labels of whole model and task entries ------------------------------------------------------------------------
def same_name_spec(tmp_path):
    """Two entries of one model that differ only in a key, and two of one task: four configurations, not one."""
    return write_spec(tmp_path, grid={"model": ["mingru", {"name": "mingru", "layers": 2}],
                                      "task": [{"name": "copy", "copy_len": 2},
                                               {"name": "copy", "copy_len": 3, "n_symbols": 4}]}, seeds=2)


def test_the_results_table_keeps_entries_of_one_model_or_task_apart(tmp_path):
    from seqbench.harness.sweep import results_table

    spec, source = load_spec(str(same_name_spec(tmp_path)))
    configs = expand(spec, source, {})
    lines = results_table(spec, configs, tmp_path / "no-records").splitlines()
    rows = [line.split("  ")[:2] for line in lines[2:]]  # two spaces separate the columns
    labels = [[cell.strip() for cell in row] for row in rows]
    tasks = ["copy copy_len=2 n_symbols=8", "copy copy_len=3 n_symbols=4"]
    assert labels == [[model, task] for model in ("mingru layers=1", "mingru layers=2") for task in tasks]
    assert all(" 0/2 (incomplete) " in line for line in lines[2:])  # each row holds its own 2 seeds, not 4 or 8


def test_the_dry_run_labels_entries_of_one_model_by_the_keys_they_set(tmp_path, capsys):
    path = same_name_spec(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("model=mingru layers=2 task=copy copy_len=3 n_symbols=4 seed=1") == 1
    assert text.count("model=mingru layers=1 task=copy copy_len=2 n_symbols=8 seed=0") == 1
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert len({(r["point"]["model"], r["point"]["task"]) for r in runs}) == 4
    assert {r["point"]["model"] for r in runs} == {"mingru layers=1", "mingru layers=2"}


def test_a_run_interrupted_under_a_running_sweep_is_counted_and_explained(tmp_path):
    # a worker stopped alone (a SLURM task cancelled with scancel, a signal to one process) returns `interrupted`
    # while the sweep goes on: the closing lines count it and say how to resume it (this was a KeyError)
    from seqbench.harness.sweep import report_lines

    results = [{"run_id": "a1", "status": "completed"}, {"run_id": "b2", "status": "interrupted", "step": 40},
               {"run_id": "c3", "status": "completed", "skipped": True},
               {"run_id": "d4", "status": "interrupted", "step": None}]
    lines = report_lines("s", results, tmp_path)
    assert lines[0] == ("sweep s: 4 runs - completed 1, diverged 0, failed 0, interrupted 2, skipped 1 (recorded "
                        "earlier: completed 1), busy 0")
    assert "  interrupted b2 at step 40: stopped by a signal; run the sweep again to resume it" in lines
    assert "  interrupted d4 before it started: its worker was stopped by a signal; run the sweep again to resume it" \
        in lines
    assert "interrupted" not in report_lines("s", results[:1], tmp_path)[0]  # named only when it happened


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_one_signal_stops_a_local_sweep_and_no_queued_run_starts(tmp_path, sig):
    # the first stop used to checkpoint the run in flight and then start the next run already queued to its worker
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {**KILL_BASE, "train.steps": 3000},
                                    "grid": {"model": ["lstm", "gru", "rnn"]}, "seeds": 1}))
    out = tmp_path / "out"
    proc = subprocess.Popen(sweep_cmd(path, out, workers=1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "s").glob("*/checkpoint.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    started = [d.name for d in (out / "s").iterdir() if (d / "metrics.jsonl").exists()]
    assert len(started) == 1, f"runs started after the stop: {started}"
    assert "interrupted; run the same command to resume" in err
    wait_for_group_to_end(proc.pid)
