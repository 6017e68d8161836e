import json

import pytest

from seqbench.harness.cli import main
from seqbench.harness.records import CHECKPOINT
from seqbench.harness.reproduce import ABSENT, compare, environment_changes, environment_lines, overall
from seqbench.harness.train import Trainer, execute

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
    assert "environment differs from the record (the likely cause of any difference):\n" in out
    assert "\n  torch: '1.0.0' -> " in out and "\n  cpu_model: 'Some Other CPU' -> " in out


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
    assert "environment differs from the record (the likely cause of any difference):\n  torch_threads: 1 -> 2\n" in out
    assert out.strip().splitlines()[-1] == "verdict: within rtol (rtol 0.001)"  # last bits only, on this run
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("  grad_profile: ")]
    assert len(rows) == len(set(rows)) and not any("[" in r for r in rows)  # one row per quantity and layer
    assert main(["reproduce", str(run_dir), "--quiet", "--threads", "0"]) == 2


def test_a_gradient_profile_is_one_quantity_per_kind_and_layer():
    old = {"grad_profile": {"step 0 h0": [1.0, 2.0, 3.0], "step 0 h1": [1.0, 2.0, 3.0], "step 6 h0": [4.0, 5.0, 6.0],
                            "step 0 x0": [1.0, 1.0, 1.0]}}
    new = json.loads(json.dumps(old))
    new["grad_profile"]["step 0 h0"][1] = 2.0 * (1 + 1e-6)
    new["grad_profile"]["step 6 h0"][2] = 6.0 * (1 + 4e-6)
    new["grad_profile"]["step 6 h0"].append(7.0)  # a position more: the length differs too
    quantities = compare(old, new)
    assert set(quantities) == {"grad_profile: h0", "grad_profile: h1", "grad_profile: x0"}
    h0 = quantities["grad_profile: h0"]
    assert (h0.values, h0.differing) == (2 * 3 + 1 + 2, 4)  # positions of both steps, one absent, both lengths
    assert h0.max_rel == pytest.approx(0.25) and h0.mismatched == ["grad_profile.step 6 h0[3]: '<absent>' -> 7.0"]
    new["grad_profile"]["step 6 h0"].pop()
    h0 = compare(old, new)["grad_profile: h0"]
    assert (h0.values, h0.differing) == (8, 2) and h0.max_rel == pytest.approx(4e-6, rel=1e-3)
    assert quantities["grad_profile: h1"].differing == 0


def _record(tmp_path, name, **provenance):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "provenance": provenance}))
    return run_dir


CPU = {"vendor_id": "AuthenticAMD", "family": 25, "model": 1, "stepping": 1, "model_name": "AMD EPYC",
       "flags_sha256": "0123456789abcdef", "isa": ["avx", "avx2", "fma"], "torch_capability": "AVX2",
       "dispatch_env": {}}


def test_a_cpu_change_is_named_by_sub_key(tmp_path):
    other = {**CPU, "family": 26, "model": 2, "isa": ["avx", "avx2", "avx512f", "fma"], "torch_capability": "AVX512",
             "dispatch_env": {"MKL_CBWR": "AVX2"}}
    run_dir = _record(tmp_path, "old", torch="2.13.0", cpu_model="AMD EPYC", cpu=CPU)
    assert environment_changes(run_dir, {"provenance": {"torch": "2.13.0", "cpu_model": "AMD EPYC", "cpu": CPU}}) == {}
    changes = environment_changes(run_dir, {"provenance": {"torch": "2.13.0", "cpu_model": "AMD EPYC", "cpu": other}})
    assert changes == {"cpu.family": (25, 26), "cpu.model": (1, 2), "cpu.isa": (CPU["isa"], other["isa"]),
                       "cpu.torch_capability": ("AVX2", "AVX512"), "cpu.dispatch_env.MKL_CBWR": (ABSENT, "AVX2")}
    lines = environment_lines(changes)
    assert lines[0].startswith("environment differs from the record")
    assert "  cpu.family: 25 -> 26" in lines and "  cpu.isa: gained avx512f" in lines
    assert "  cpu.dispatch_env.MKL_CBWR: <absent> -> 'AVX2'" in lines


def test_a_record_without_the_cpu_field_says_it_is_not_recorded(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["provenance"]["cpu"]  # as a record made before seqbench recorded it
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "environment: same as the record where recorded (commit, software, device, CPU, threads)\n" in out
    assert ("not in the record (made before seqbench recorded them), so not compared: cpu; a change of CPU cannot "
            "be ruled out\n") in out
    assert out.strip().splitlines()[-1] == "verdict: identical"


def test_a_changed_plugin_prints_only_what_changed(tmp_path):
    plugin = {"source": "import path", "name": "pkg.mod:Cfg", "class": "pkg.mod.Cfg", "file": "/src/pkg/mod.py",
              "sha256": "ab" * 32, "distribution": None, "version": None}
    run_dir = _record(tmp_path, "old", model_plugin=plugin)
    changes = environment_changes(run_dir, {"provenance": {"model_plugin": {**plugin, "sha256": "cd" * 32}}})
    assert environment_lines(changes)[1:-1] == ["  model_plugin.sha256: 'abababababab…' -> 'cdcdcdcdcdcd…'"]
    gone = environment_changes(run_dir, {"provenance": {}})  # the model no longer resolves to a plugin
    assert gone == {"model_plugin": (plugin, ABSENT)}


def test_one_name_changed_in_several_fields_is_one_line(tmp_path):
    run_dir = _record(tmp_path, "old", device_name="AMD EPYC", cpu_model="AMD EPYC", dirty=False,
                      deterministic_algorithms=False)
    changes = environment_changes(run_dir, {"provenance": {"device_name": "Intel Xeon", "cpu_model": "Intel Xeon",
                                                           "dirty": True, "deterministic_algorithms": True}})
    assert environment_lines(changes)[1:-1] == ["  dirty: False -> True",
                                                "  device_name, cpu_model: 'AMD EPYC' -> 'Intel Xeon'",
                                                "  deterministic_algorithms: False -> True"]


def _interrupt_at(monkeypatch, k, how):
    """The k-th training step is stopped as Ctrl-C stops it (`signal`: the run's handler sets its stop request) or as
    a KeyboardInterrupt that reaches the trainer itself."""
    original, calls = Trainer.step, {"n": 0}

    def step(self, group_norms=False):
        calls["n"] += 1
        if calls["n"] == k:
            if how == "keyboard":
                raise KeyboardInterrupt
            self.stop.set()
        return original(self, group_norms)

    monkeypatch.setattr(Trainer, "step", step)


@pytest.mark.parametrize("how", ["signal", "keyboard"])
def test_ctrl_c_exits_130_and_keeps_no_partial_rerun(tmp_path, monkeypatch, capsys, how):
    _, run_dir = execute(tiny(), tmp_path / "runs", progress=False)
    recorded = (run_dir / "summary.json").read_bytes()
    keep = tmp_path / "keep"
    _interrupt_at(monkeypatch, 3, how)
    assert main(["reproduce", str(run_dir), "--quiet", "--keep", str(keep)]) == 130
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "interrupted" in err and "no partial rerun kept" in err
    assert ("at step 3" in err) == (how == "signal")
    assert list(keep.iterdir()) == []  # no folder, no checkpoint, no staging
    assert (run_dir / "summary.json").read_bytes() == recorded


@pytest.mark.parametrize("when", ["at a step", "between the renames that replace the record"])
def test_ctrl_c_leaves_a_finished_rerun_in_keep_as_it_was(tmp_path, monkeypatch, capsys, when):
    import os

    from seqbench.harness import runs

    _, run_dir = execute(tiny(), tmp_path / "runs", progress=False)
    keep = tmp_path / "keep"
    assert main(["reproduce", str(run_dir), "--quiet", "--keep", str(keep)]) == 0
    kept = keep / run_dir.name
    before = {p.name: p.read_bytes() for p in kept.iterdir() if p.is_file()}
    if when == "at a step":
        _interrupt_at(monkeypatch, 2, "signal")
    else:
        def first_rename_only(staged, target):
            os.replace(target, target.with_name(f".{target.name}.old-{os.getpid()}"))
            raise KeyboardInterrupt

        monkeypatch.setattr(runs, "replace_dir", first_rename_only)
    assert main(["reproduce", str(run_dir), "--quiet", "--keep", str(keep)]) == 130
    assert sorted(p.name for p in keep.iterdir()) == [run_dir.name]  # the staged rerun is gone
    assert {p.name: p.read_bytes() for p in kept.iterdir() if p.is_file()} == before


def test_sigterm_outside_the_rerun_is_ctrl_c(tmp_path, monkeypatch, capsys):
    import signal

    from seqbench.harness import reproduce as module

    _, run_dir = execute(tiny(), tmp_path, progress=False)

    def terminated(cfg):
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)  # else SIGTERM would end pytest
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(module, "check_memory", terminated)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_keep_refuses_the_recorded_run_and_a_resumable_run(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path / "runs", progress=False)
    recorded = (run_dir / "summary.json").read_bytes()
    assert main(["reproduce", str(run_dir), "--quiet", "--keep", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seqbench: error: --keep ") and "is the record being reproduced" in err
    assert (run_dir / "summary.json").read_bytes() == recorded and not list(tmp_path.glob("runs/.*staging"))

    resumable = tmp_path / "other" / run_dir.name
    resumable.mkdir(parents=True)
    (resumable / CHECKPOINT).write_bytes(b"state")
    assert main(["reproduce", str(run_dir), "--quiet", "--keep", str(tmp_path / "other")]) == 2
    assert "holds an unfinished run with a checkpoint" in capsys.readouterr().err
    assert (resumable / CHECKPOINT).read_bytes() == b"state"
