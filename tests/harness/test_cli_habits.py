"""The command line's habits: overrides anywhere on the line, --version, bare `seqbench`, defaults in every flag's
help, `list` (allowed values; null/false as typed; --json), `run --dry-run`, `sweep --dry-run --json`, the forms a
`--config` file may take, and a reader that closes the pipe early."""

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

import seqbench
from seqbench.harness.bench import DTYPES
from seqbench.harness.cli import build_parser, main
from seqbench.harness.config import RunConfig, TrainConfig, describe_keys, parse_overrides, resolve
from seqbench.tasks import TASKS

from .conftest import TINY


def dry_run(capsys, *argv):
    assert main(["run", *argv, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- overrides anywhere ----------------------------------------------------------------------------------------------
def test_run_takes_overrides_before_between_and_after_options(tmp_path, capsys):
    shown = dry_run(capsys, "task.length=5", "--quiet", "train.steps=5", "--out", str(tmp_path / "o"), "model=gru")
    assert shown["config"]["task"]["length"] == 5 and shown["config"]["train"]["steps"] == 5
    assert shown["config"]["model"]["name"] == "gru"
    assert shown["run_dir"] == str(tmp_path / "o" / shown["run_id"])
    assert not (tmp_path / "o").exists()


def test_a_run_with_interleaved_overrides_trains_and_records(tmp_path, capsys):
    half = len(TINY) // 2
    argv = ["run", *TINY[:half], "--quiet", *TINY[half:], "--out", str(tmp_path), "device=cpu", "model.hidden=8"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.iterdir()
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["train"]["steps"] == 6 and recorded["task"]["length"] == 12 and recorded["model"]["hidden"] == 8
    assert "completed" in capsys.readouterr().out


def test_sweep_overrides_after_options_apply_to_every_run(tmp_path, capsys):
    argv = ["sweep", "quick", "--dry-run", "--out", str(tmp_path / "X"), "train.steps=50", "--json"]
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["total"] == 48 and shown["sweep_dir"] == str(tmp_path / "X" / "quick")
    assert {run["point"]["train.steps"] for run in shown["runs"]} == {50}  # the spec's zip said 1000 and 1500
    assert not (tmp_path / "X").exists()


# --- version, usage, help ---------------------------------------------------------------------------------------------
def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"seqbench {seqbench.__version__}"


def test_bare_seqbench_prints_its_usage_and_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: seqbench")
    for command in ("run", "sweep", "report", "reproduce", "bench", "list"):
        assert f"\n    {command}" in out


def _subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(name, p) for name, p in sub.choices.items()]


ENDS_WITH_DEFAULT = re.compile(r"\(default: ([^()]*)\)$")


@pytest.mark.parametrize("name, parser", _subcommands(), ids=[name for name, _ in _subcommands()])
def test_every_flag_says_its_default(name, parser):
    """Every optional flag's help, as `--help` shows it, ends with `(default: ...)`, which names the flag's default
    value where argparse has one (a help that only mentions a default elsewhere, "by default ...", does not count)."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.required or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action)
        flag = f"seqbench {name} {action.option_strings[0]}"
        end = ENDS_WITH_DEFAULT.search(text)
        assert end, f"{flag}: {text!r} does not end with its default"
        if action.default not in (None, False, [], argparse.SUPPRESS):
            shown = (",".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default))
            assert shown in end.group(1), f"{flag}: {text!r} lacks {shown!r}"
        elif action.default is False:
            assert end.group(1) == "off", f"{flag}: {text!r}"


def _help_of(command: str, flag: str) -> str:
    parser = dict(_subcommands())[command]
    (action,) = [a for a in parser._actions if flag in a.option_strings or a.dest == flag]
    return parser._get_formatter()._expand_help(action)


def test_the_defaults_that_argparse_does_not_hold_are_the_ones_the_help_names():
    from seqbench.harness.reproduce import DEFAULT_RTOL

    assert float(ENDS_WITH_DEFAULT.search(_help_of("reproduce", "--rtol")).group(1)) == DEFAULT_RTOL
    assert ENDS_WITH_DEFAULT.search(_help_of("reproduce", "--threads")).group(1) == "the recorded count"
    assert ENDS_WITH_DEFAULT.search(_help_of("bench", "--no-tf32")).group(1) == "off"


def test_sweep_help_names_every_preset():
    from seqbench.harness.sweep import presets

    text = _help_of("sweep", "spec")
    assert len(presets()) >= 7
    for name in presets():
        assert re.search(rf"(^|[ :,]){re.escape(name)}(,|$)", text), f"preset {name} not in {text!r}"


def test_bench_takes_the_dtypes_a_run_takes(capsys):
    """`bench --dtype` and a run's `dtype` take one list of names (config.Dtype), which bench times in."""
    from seqbench.harness.config import DTYPE_NAMES

    assert tuple(DTYPES) == DTYPE_NAMES and "float16" not in DTYPE_NAMES
    assert build_parser().parse_args(["bench", "--dtype", ",".join(DTYPE_NAMES)]).dtype == list(DTYPE_NAMES)
    assert main(["bench", "--dtype", "float16"]) == 2
    assert ", ".join(DTYPE_NAMES) in capsys.readouterr().err


# --- list -------------------------------------------------------------------------------------------------------------
def test_list_shows_allowed_values_and_types_null_and_false_as_a_user_does(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "adam | adamw | rmsprop | sgd" in rows["train.optimizer"]
    assert rows["train.early_stop"].split()[1] == "false" and "true | false" in rows["train.early_stop"]
    assert rows["model.embed"].split()[1] == "null" and rows["data_seed"].split()[1] == "null"
    assert rows["model.backend"].split()[1:6] == ["torch", "torch", "|", "reference", "|"]
    for word in ("None", "False", "True"):
        assert f" {word} " not in out


def test_list_json_gives_every_key_with_json_defaults_and_every_choice(capsys):
    assert main(["list", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tasks"] == sorted(TASKS) and len(TASKS) >= 4 and "transformer" in shown["models"]
    assert shown["backends"] == ["torch", "reference", "triton"]
    keys = {(k["key"], k["help"].split("]")[0] if k["help"].startswith("[") else ""): k for k in shown["keys"]}
    assert keys[("train.early_stop", "")]["default"] is False
    assert keys[("data_seed", "")]["default"] is None
    assert keys[("model.hidden", "[lstm")]["default"] == 64
    assert keys[("model.hidden", "[lstm")]["allowed"] == "integer >= 1"
    assert keys[("train.momentum", "")]["allowed"] == "number >= 0, < 1"
    assert [row._asdict() for row in describe_keys()] == shown["keys"]
    # every choice key lists every value it accepts
    for name, field in [*TrainConfig.model_fields.items(), *RunConfig.model_fields.items()]:
        choices = getattr(field.annotation, "__args__", ())
        if all(isinstance(c, str) for c in choices) and choices:
            key = name if name in RunConfig.model_fields and name not in TrainConfig.model_fields else f"train.{name}"
            assert keys[(key, "")]["allowed"] == " | ".join(choices)


# --- run --dry-run ----------------------------------------------------------------------------------------------------
def test_run_dry_run_prints_the_resolved_config_and_run_id_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "task=copy", "model.hidden=32", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    cfg = resolve(parse_overrides(["task=copy", "model.hidden=32"]))
    assert text.splitlines()[0] == f"run {cfg.run_id}: to run -> {out / cfg.run_id}"
    assert "  task.copy_len=10" in text and "  model.embed=32" in text and "  data_seed=0" in text
    assert "  train.early_stop=false" in text and "  threads=null" in text
    assert "memory: about" in text
    assert not out.exists()


def test_run_dry_run_json(tmp_path, capsys):
    shown = dry_run(capsys, "model=transformer", "--out", str(tmp_path))
    cfg = resolve(parse_overrides(["model=transformer"]))
    assert shown["run_id"] == cfg.run_id and shown["config"] == cfg.canonical() and shown["state"] == "to run"
    assert 0 < shown["memory"]["estimate_bytes"] and 0 < shown["memory"]["available_bytes"]
    assert list(tmp_path.iterdir()) == []


# --- --config forms ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "task: copy\ntrain.steps: 3\nmodel: {name: gru, hidden: 8}\n",                     # bare name, dotted, nested
    "task.name: copy\ntrain: {steps: 3}\nmodel: gru\nmodel.hidden: 8\n",               # the other way round
    "task: {name: copy}\ntrain:\n  steps: 3\nmodel:\n  name: gru\n  hidden: 8\n",       # nested only (a record's form)
    json.dumps({"task": "copy", "train.steps": 3, "model": {"name": "gru", "hidden": 8}}),  # JSON
])
def test_config_file_takes_the_forms_of_a_sweep_base(tmp_path, capsys, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    shown = dry_run(capsys, "--config", str(path), "--out", str(tmp_path / "o"))
    assert shown["run_id"] == resolve(parse_overrides(["task=copy", "train.steps=3", "model=gru",
                                                       "model.hidden=8"])).run_id


def test_command_line_overrides_win_over_the_config_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("task: adding\ntrain.steps: 3\n")
    shown = dry_run(capsys, "--config", str(path), "train.steps=4", "--out", str(tmp_path / "o"))
    assert shown["config"]["train"]["steps"] == 4


# --- a reader that stops early ----------------------------------------------------------------------------------------
def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    # 2,000 lines: more than a pipe holds, so the listing is still being written when the reader goes
    spec = tmp_path / "many.yaml"
    spec.write_text("name: many\nbase: {task: adding, task.length: 8, device: cpu}\nseeds: 2000\n")
    p = subprocess.Popen([sys.executable, "-m", "seqbench.harness.cli", "sweep", str(spec), "--dry-run", "--out",
                          str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()  # `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and first and err == ""


# --- an output folder the user cannot reach ---------------------------------------------------------------------------
def _refused_in_one_line(capsys, argv, *needles):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("seqbench: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root enters any folder: the permission cannot be taken away")
@pytest.mark.parametrize("command", [["run", "--dry-run"], ["sweep", "quick", "--dry-run"], ["bench"]])
def test_out_under_a_folder_the_user_may_not_enter_is_one_line(tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o600)  # readable, not enterable (no x): looking at locked/sub is a PermissionError
    try:
        _refused_in_one_line(capsys, [*command, "--out", str(locked / "sub")], f"--out {locked / 'sub'}",
                             "cannot reach", "Permission denied")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("command", [["run", "--dry-run"], ["sweep", "quick", "--dry-run"], ["bench"]])
def test_a_permission_error_while_looking_at_out_is_one_line(tmp_path, monkeypatch, capsys, command):
    """The same as the test above for any user, root included: the file system's answer is simulated."""
    blocked, real_stat = str(tmp_path / "locked" / "sub"), os.stat

    def stat(path, *args, **kwargs):
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", blocked)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    _refused_in_one_line(capsys, [*command, "--out", blocked], f"--out {blocked}: cannot reach {blocked}",
                         "Permission denied")
    assert list(tmp_path.iterdir()) == []
