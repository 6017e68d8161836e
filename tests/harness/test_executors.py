"""The executor contract (harness/executors/base.py) and the run-folder protocol (harness/runs.py): an executor is
one class and its registry line, and every executor opens, commits and fails a run's folder the same way."""

import json

import pytest

from seqbench.harness import runs
from seqbench.harness.cli import main
from seqbench.harness.executors import EXECUTORS
from seqbench.harness.records import is_finished, read_summary
from seqbench.harness.runs import Busy, ProgressEvent, Skipped, Todo, open_run, record_failure

from .conftest import tiny
from .test_sweep import write_spec


class InlineExecutor:
    """Runs a sweep's runs one after another in the driver's own process: an executor as a contributor would add it."""

    name = "inline"
    help = "the driver's own process"
    here = True
    flags = {"inline_label": ""}
    seen: list

    def add_arguments(self, parser) -> None:
        parser.add_argument("--inline-label", help="a flag of this executor alone")

    def prepare(self, args, spec, resources):
        return {"label": args.inline_label}

    def preflight(self, settings, plan, todo) -> None:
        self.seen = [("preflight", settings["label"], len(todo))]

    def run(self, settings, plan, configs, rerun):
        from seqbench.harness.train import execute

        for cfg in configs:
            summary, _ = execute(cfg, plan.sweep_dir, progress=False, force=cfg.run_id in rerun)
            plan.on_progress(ProgressEvent(cfg.run_id, cfg.train.steps, cfg.train.steps))
            self.seen.append(("ran", cfg.run_id))
            yield runs.as_outcome(summary)


def test_a_new_executor_is_one_class_and_its_registry_line(tmp_path, monkeypatch, capsys):
    inline = InlineExecutor()
    monkeypatch.setitem(EXECUTORS, "inline", inline)
    spec = write_spec(tmp_path, seeds=2)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "inline",
                 "--inline-label", "x"]) == 0
    done = sorted((tmp_path / "out" / "t").glob("*/summary.json"))
    assert len(done) == 2 and all(json.loads(p.read_text())["status"] == "completed" for p in done)
    assert inline.seen[0] == ("preflight", "x", 2) and [s[0] for s in inline.seen[1:]] == ["ran", "ran"]
    assert "executor inline" in capsys.readouterr().err
    # its flag belongs to it: another executor refuses it, in one line, before anything is written
    assert main(["sweep", str(spec), "--out", str(tmp_path / "other"), "--inline-label", "x"]) == 2
    assert capsys.readouterr().err.strip() == "seqbench: error: --inline-label needs --executor inline"
    assert not (tmp_path / "other").exists()


def test_open_run_says_busy_skipped_or_todo_and_a_rerun_is_staged(tmp_path):
    cfg = tiny()
    first = open_run(tmp_path, cfg)
    assert isinstance(first, Todo) and first.target == tmp_path / cfg.run_id and first.checkpoint() is None
    with first:
        held = open_run(tmp_path, cfg)  # another claim while this one holds it (flock: per open file)
        assert isinstance(held, Busy) and held.outcome["status"] == "busy"
    from seqbench.harness.train import execute

    execute(cfg, tmp_path, progress=False)
    again = open_run(tmp_path, cfg)
    assert isinstance(again, Skipped) and again.outcome["skipped"] and "config" not in again.outcome
    with open_run(tmp_path, cfg, rerun=True) as rerun:
        assert rerun.replaces and rerun.target.name == f".{cfg.run_id}.staging"
        # a rerun that cannot run keeps the finished record
        assert rerun.fail("its worker died") == read_summary(tmp_path / cfg.run_id)


def test_record_failure_writes_a_failed_record_once_and_never_over_a_finished_one(tmp_path):
    cfg = tiny()
    failed = record_failure(tmp_path, cfg, "worker process died")
    assert failed["status"] == "failed" and is_finished(tmp_path / cfg.run_id)
    assert read_summary(tmp_path / cfg.run_id)["error"] == "worker process died"
    with open_run(tmp_path, cfg, rerun=True):
        assert record_failure(tmp_path, cfg, "again")["status"] == "busy"  # held by this process's other claim


@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_every_registered_executor_keeps_the_contract(name):
    executor = EXECUTORS[name]
    assert executor.name == name and executor.help and isinstance(executor.here, bool)
    for method in ("add_arguments", "prepare", "preflight", "run"):
        assert callable(getattr(executor, method)), method
    assert all(isinstance(message, str) for message in executor.flags.values())


def test_a_flag_of_another_executor_is_refused_even_when_its_value_is_zero(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--slurm-array-parallelism", "0"]) == 2
    assert capsys.readouterr().err.strip() == "seqbench: error: --slurm-array-parallelism needs --executor slurm"
    assert not (tmp_path / "out").exists()
