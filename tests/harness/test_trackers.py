"""Experiment trackers: each tracker is run offline and read back with its own reader (TensorBoard's EventAccumulator,
the W&B offline run file decoded with wandb's protobufs, MlflowClient on a SQLite store) and compared with the local
record. Nothing here reaches the network or the home folder (HOME, WANDB_*, MLFLOW_TRACKING_URI point into tmp)."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqbench.harness import trackers
from seqbench.harness.cli import main
from seqbench.harness.config import resolve
from seqbench.harness.records import MemoryWriter
from seqbench.harness.runs import open_run
from seqbench.harness.sweep import SweepSpec, write_sweep_file
from seqbench.harness.train import execute, run_record

from .conftest import TINY, tiny

TRACKERS = ("tensorboard", "wandb", "mlflow")
NOT_MIRRORED = ("config", "traceback", "warnings")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); runs are told apart by their record path."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch, mlflow_uri):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(home / "wandb"), "WANDB_CACHE_DIR": str(home / "wandb"),
           "WANDB_DATA_DIR": str(home / "wandb"), "NETRC": str(home / ".netrc"), "MLFLOW_TRACKING_URI": mlflow_uri,
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(trackers, "_failed_starts", {})  # what failed to start in an earlier test is forgotten
    for key in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_RUN_GROUP", "MLFLOW_EXPERIMENT_NAME",
                "SEQBENCH_TENSORBOARD_DIR"):
        monkeypatch.delenv(key, raising=False)
    return env


# --- the local record, and what each tracker should hold of it -------------------------------------------------------
def local(run_dir: Path) -> tuple[dict, list[dict], dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "config.json").read_text()), rows, json.loads((run_dir / "summary.json").read_text())


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def hyperparameters(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "tracker"}


def numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def series(rows: list[dict], cast=float) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} of the local rows (what every tracker must hold, each at its step)."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in numbers(row).items():
            out.setdefault(key, {})[row["step"]] = cast(value)
    return out


def mirrored(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in NOT_MIRRORED}


# --- readers: each tracker's own --------------------------------------------------------------------------------------
def read_tensorboard(logdir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    texts = {tag.split("/")[0]: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in tags["tensors"]}
    return {"scalars": {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in tags["scalars"]},
            "hparams": {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()},
            "texts": {k: json.loads(v.strip("`\n")) for k, v in texts.items()}}


def wandb_records(path: Path):
    """The records of an offline run's `.wandb` file: W&B's header, then LevelDB-log blocks of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)  # a flat key travels as a one-part path


def read_wandb(wandb_dir: Path) -> dict[str, dict]:
    """Every offline run under WANDB_DIR, by name: project, group, config, history rows, final summary.

    A run's file is written by W&B's service process, which closes it after run.finish() has returned: this process's
    service is torn down first (wandb.teardown returns once that process has exited, so every file it wrote is
    closed). Sweep workers tear down their own (trackers.to_wandb)."""
    import wandb

    wandb.teardown()
    runs = {}
    for path in sorted(Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb")):
        run = {"history": [], "summary": {}}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(name=record.run.display_name, group=record.run.run_group, project=record.run.project,
                           config={item_key(i): json.loads(i.value_json) for i in record.run.config.update
                                   if item_key(i) != "_wandb"})
            elif kind == "history":
                row = {item_key(i): json.loads(i.value_json) for i in record.history.item}
                run["history"].append({k: v for k, v in row.items() if not k.startswith("_")}
                                      | {"step": record.history.step.num})
            elif kind == "summary":
                for i in record.summary.update:  # nested values may come whole or as paths into the tree
                    *parents, leaf = [i.key] if i.key else list(i.nested_key)
                    node = run["summary"]
                    for part in parents:
                        node = node.setdefault(part, {})
                    node[leaf] = json.loads(i.value_json)
            elif kind == "exit":
                run["exit_code"] = record.exit.exit_code
        runs[run["name"]] = run
    return runs


def read_mlflow(uri: str, run_dir: Path, experiment: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no mlflow experiment {experiment!r}"
    found = client.search_runs([exp.experiment_id], f"tags.`seqbench.record` = '{run_dir.resolve()}'")
    assert len(found) == 1, f"{len(found)} mlflow runs for {run_dir}"
    run = found[0]
    history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
               for key in run.data.metrics}
    return {"name": run.info.run_name, "status": run.info.status, "params": run.data.params, "tags": run.data.tags,
            "history": history}


# --- comparisons with the local record ----------------------------------------------------------------------------
def check_tensorboard(logdir: Path, run_dir: Path) -> None:
    config, rows, summary = local(run_dir)
    tb = read_tensorboard(logdir)
    rows_read = {k: v for k, v in tb["scalars"].items() if not k.startswith("summary/")}
    assert rows_read == series(rows, lambda v: float(np.float32(v)))  # every row at its step (float32 scalars)
    def hparam(v):  # TensorBoard's HParams hold numbers (bools too) as doubles, the rest as text
        return "null" if v is None else float(v) if isinstance(v, (int, float)) else json.dumps(v) if isinstance(
            v, list) else v

    assert tb["hparams"] == {k: hparam(v) for k, v in flat(hyperparameters(config)).items()}
    step = summary["steps_done"]
    assert tb["scalars"]["summary/final.eval_loss"] == {step: float(np.float32(summary["final"]["eval_loss"]))}
    assert tb["texts"]["summary"] == mirrored(summary) and tb["texts"]["config"] == config


def check_wandb(run: dict, run_dir: Path, group: str = "", project: str = "seqbench") -> None:
    config, rows, summary = local(run_dir)
    assert (run["name"], run["group"], run["project"]) == (summary["run_id"], group, project)
    assert run["config"] == hyperparameters(config)
    assert run["history"] == [{**numbers(row), "step": row["step"]} for row in rows]  # every row at its step
    assert run["summary"]["summary"] == mirrored(summary)
    assert {k: run["summary"][k] for k in rows[-1] if k != "step"} == numbers(rows[-1])  # W&B's own: the last row
    assert run["exit_code"] == 0


def check_mlflow(uri: str, run_dir: Path, experiment: str = "seqbench", group: str | None = None) -> None:
    config, rows, summary = local(run_dir)
    ml = read_mlflow(uri, run_dir, experiment)
    assert (ml["name"], ml["status"]) == (summary["run_id"], "FINISHED")
    assert ml["params"] == {k: "null" if v is None else json.dumps(v) if isinstance(v, list) else str(v)
                            for k, v in flat(hyperparameters(config)).items()}
    assert {k: v for k, v in ml["history"].items() if not k.startswith("summary/")} == series(rows)
    step = summary["steps_done"]
    assert ml["history"]["summary/final.eval_loss"] == {step: summary["final"]["eval_loss"]}
    assert ml["history"]["summary/params"] == {step: summary["params"]}
    assert ml["tags"]["summary.status"] == summary["status"]
    assert ml["tags"]["summary.provenance.commit"] == summary["provenance"]["commit"]
    assert ml["tags"].get("seqbench.group") == group and ml["tags"]["seqbench.run_id"] == summary["run_id"]


# --- a run mirrors its record -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_run_is_mirrored_to_its_tracker(tmp_path, tracker, mlflow_uri):
    summary, run_dir = execute(tiny(f"tracker={tracker}"), tmp_path / "out", progress=False)
    assert summary["status"] == "completed" and "warnings" not in summary
    assert local(run_dir)[2] == json.loads(json.dumps(summary))  # the record on disk is the one the trackers got
    if tracker == "tensorboard":  # by default beside the results: OUT/tensorboard/<run_id>
        check_tensorboard(tmp_path / "out" / "tensorboard" / summary["run_id"], run_dir)
    elif tracker == "wandb":
        check_wandb(read_wandb(tmp_path)[summary["run_id"]], run_dir)
    else:
        check_mlflow(mlflow_uri, run_dir)


def test_without_mlflow_tracking_uri_the_store_is_beside_the_results(tmp_path, monkeypatch, capsys):
    """MLflow's own default is a store in the current folder, and MLflow 3 refuses one there that an older MLflow
    wrote (a file store, ./mlruns): the default here is OUT/mlflow.db, said in one line when it is made."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cwd = tmp_path / "cwd"
    (cwd / "mlruns" / "0").mkdir(parents=True)
    (cwd / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")  # an old file store here
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    summary, run_dir = execute(tiny("tracker=mlflow"), out, progress=False)
    assert summary["status"] == "completed" and "warnings" not in summary
    uri = f"sqlite:///{out / 'mlflow.db'}"
    check_mlflow(uri, run_dir)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"seqbench: mlflow: MLFLOW_TRACKING_URI is not set, so runs go to a new store beside the results: "
                     f"{uri} (mlflow ui --backend-store-uri {uri})"]
    again, again_dir = execute(tiny("tracker=mlflow", "seed=1"), out, progress=False)  # the store is there: no line
    assert "warnings" not in again and "mlflow" not in capsys.readouterr().err
    check_mlflow(uri, again_dir)
    assert sorted(p.name for p in cwd.iterdir()) == ["mlruns"]  # nothing written where seqbench was started


def test_a_tracker_error_is_cut_at_a_sentence_never_inside_one():
    sentences = [f"Sentence {i} says something about the store and what to do about it." for i in range(20)]
    line = trackers.one_line(RuntimeError("\n".join(sentences)))  # lines joined: one line
    assert "\n" not in line and len(line) <= trackers.WARNING_CHARS
    assert line.endswith("about it.") and line.startswith("RuntimeError: Sentence 0 says")
    assert line == "RuntimeError: " + " ".join(sentences[:line.count(". ") + 1])
    word = trackers.one_line(ValueError("x" * 40 + " word" * 200))  # no sentence end in reach: whole words and "…"
    assert word.endswith(" word …") and len(word) <= trackers.WARNING_CHARS
    assert trackers.one_line(KeyError("name")) == "KeyError: 'name'"


def test_a_refused_mlflow_store_is_a_warning_of_whole_sentences(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a file store: MLflow 3 refuses it
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    summary, _ = execute(tiny("tracker=mlflow"), tmp_path / "out", progress=False)
    if "warnings" not in summary:
        pytest.skip("this MLflow still accepts a file store")
    [warning] = summary["warnings"]
    assert warning.startswith("tracker mlflow: MlflowException: ") and warning.endswith(".")
    message = warning.removeprefix("tracker mlflow: MlflowException: ")
    try:
        from mlflow import MlflowClient

        MlflowClient((tmp_path / "mlruns").as_uri()).get_experiment_by_name("x")
    except MlflowException as e:
        assert " ".join(str(e).split()).startswith(message)  # a prefix of whole sentences
    assert len(warning) <= len("tracker mlflow: ") + trackers.WARNING_CHARS


def test_a_sweep_worker_waits_for_the_wandb_writer(tmp_path, monkeypatch):
    """In a multiprocessing child (a sweep worker) W&B's atexit hook never runs: the mirror waits for W&B's writer
    itself (wandb.teardown), so the run's file is complete when the worker goes on."""
    import wandb

    monkeypatch.setattr(trackers.multiprocessing, "parent_process", lambda: object())  # as in a worker
    files_at_teardown = []
    teardown = wandb.teardown

    def watched(*args, **kwargs):
        teardown(*args, **kwargs)
        files_at_teardown.extend(sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb")))

    monkeypatch.setattr(wandb, "teardown", watched)
    summary, run_dir = execute(tiny("tracker=wandb"), tmp_path / "out", progress=False)
    [path] = files_at_teardown  # torn down once, after the run was written
    assert [r.WhichOneof("record_type") for r in wandb_records(path)][-1] == "exit"
    check_wandb(read_wandb(tmp_path)[summary["run_id"]], run_dir)


def test_a_forced_rerun_replaces_its_tensorboard_events_and_names_its_real_folder(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    cfg = tiny("tracker=tensorboard,mlflow")
    execute(cfg, tmp_path, progress=False)
    summary, run_dir = execute(cfg, tmp_path, progress=False, force=True)  # staged beside the record, then moved
    logdir = tmp_path / "tensorboard" / cfg.run_id
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    check_tensorboard(logdir, run_dir)
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("seqbench").experiment_id],
                              f"tags.`seqbench.run_id` = '{cfg.run_id}'")
    paths = {r.data.tags["seqbench.record"] for r in runs}
    assert str(run_dir.resolve()) in paths and not any("staging" in p for p in paths)


def test_tracker_is_operational_and_accepts_a_comma_list():
    plain, tracked = tiny(), tiny("tracker=wandb,mlflow")
    assert tracked.tracker == ["wandb", "mlflow"] and plain.tracker == []
    assert tracked.run_id == plain.run_id  # not part of the experiment's identity
    assert resolve({**plain.canonical(), "tracker": ["mlflow", "tensorboard,mlflow"]}).tracker == ["mlflow",
                                                                                                   "tensorboard"]


def test_the_ray_driver_mirrors_the_record_it_writes(tmp_path):
    """On Ray the worker records into memory and the driver writes the record (runs.Todo.write_record): mirrored
    there."""
    cfg = tiny("tracker=tensorboard")
    memory = MemoryWriter()
    summary = run_record(cfg, memory, progress=False)
    run_dir = tmp_path / "out" / cfg.run_id
    started = {**summary["provenance"]}
    with open_run(run_dir.parent, cfg) as todo:
        todo.write_record(cfg.canonical(), {"rows": memory.rows, "profiles": memory.profile_rows, "summary": summary,
                                            "started": started})
    check_tensorboard(tmp_path / "out" / "tensorboard" / cfg.run_id, run_dir)


def test_a_sweep_mirrors_every_run_with_the_sweep_as_group(tmp_path, offline, mlflow_uri):
    """End to end, in a fresh process (sweep workers take the environment the sweep starts with)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: trk\nbase: {task: adding, model.hidden: 8, device: cpu}\nseeds: 2\n")
    env = {**os.environ, **offline, "WANDB_PROJECT": "seqbench-test", "SEQBENCH_TENSORBOARD_DIR": str(tmp_path / "tb")}
    overrides = [o for o in TINY if not o.startswith("task=")]
    done = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "sweep", str(spec), *overrides, "--workers",
                           "1", "--out", str(tmp_path / "out"), "--tracker", "tensorboard", "--tracker=wandb,mlflow"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dirs = sorted(p.parent for p in (tmp_path / "out" / "trk").glob("*/summary.json"))
    assert len(run_dirs) == 2
    assert sorted(p.name for p in (tmp_path / "tb" / "trk").iterdir()) == [d.name for d in run_dirs]
    wandb_runs = read_wandb(tmp_path)
    for run_dir in run_dirs:
        assert "warnings" not in local(run_dir)[2]
        check_tensorboard(tmp_path / "tb" / "trk" / run_dir.name, run_dir)
        check_wandb(wandb_runs[run_dir.name], run_dir, group="trk", project="seqbench-test")
        check_mlflow(mlflow_uri, run_dir, experiment="trk", group="trk")


# --- failures ---------------------------------------------------------------------------------------------------------
def test_a_failing_tracker_is_a_warning_in_the_record_not_a_failed_run(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'mlflow.db'}")  # under a file: cannot be made
    monkeypatch.setenv("WANDB_MODE", "online")  # no API key anywhere: refused before any connection
    summary, run_dir = execute(tiny("tracker=wandb,mlflow,tensorboard"), tmp_path / "out", progress=False)
    assert summary["status"] == "completed"
    record = local(run_dir)[2]
    assert record["status"] == "completed" and record["warnings"] == summary["warnings"]
    assert [w.split(":")[0] for w in record["warnings"]] == ["tracker wandb", "tracker mlflow"]
    assert "API key" in record["warnings"][0] and "a-file" in record["warnings"][1]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seqbench: warning")]
    assert len(err) == 2 and all(summary["run_id"] in line for line in err)
    check_tensorboard(tmp_path / "out" / "tensorboard" / summary["run_id"], run_dir)  # the working one still got it
    # the next run of this process (a sweep worker's) does not wait on them again
    again, _ = execute(tiny("tracker=wandb,mlflow", "seed=1"), tmp_path / "out", progress=False)
    assert again["status"] == "completed"
    assert again["warnings"] == [f"tracker {name}: RuntimeError: not tried again: it could not start earlier in this "
                                 f"process ({first.split(': ', 1)[1]})"
                                 for name, first in zip(("wandb", "mlflow"), summary["warnings"])]


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_tracker_not_installed_is_refused_naming_its_extra(tmp_path, monkeypatch, capsys, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # import fails as if absent
    out = tmp_path / "out"
    extra = f"{tracker} is not installed; pip install 'seqbench[{tracker}]'"
    cases = [(["run", *TINY, "device=cpu", "--out", str(out), "--tracker", tracker], f"--tracker {tracker}: {extra}"),
             (["run", *TINY, "device=cpu", f"tracker={tracker}", "--out", str(out)], f"tracker={tracker}: {extra}"),
             (["sweep", "quick", "--out", str(out), "--tracker", tracker], f"--tracker {tracker}: {extra}"),
             (["export", str(tmp_path), "--to", tracker], f"--to {tracker}: {extra}")]
    for argv, message in cases:
        assert main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"seqbench: error: {message}"]
    assert not out.exists()  # refused before anything was written


def test_a_tracker_gone_when_the_record_is_mirrored_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    summary, run_dir = execute(tiny("tracker=wandb"), tmp_path, progress=False)
    assert summary["status"] == "completed"
    assert local(run_dir)[2]["warnings"] == ["tracker wandb: RuntimeError: wandb is not installed; "
                                             "pip install 'seqbench[wandb]'"]


@pytest.mark.parametrize("argv, message", [
    (["run", "--tracker", "neptune"], "argument --tracker: 'neptune': unknown tracker 'neptune'; known: tensorboard, "
                                      "wandb, mlflow"),
    (["run", "--tracker", ","], "argument --tracker: ',': expected a tracker name: tensorboard, wandb, mlflow"),
    (["run", "tracker=wandb,neptune"], "tracker=wandb,neptune: unknown tracker 'neptune'; known: tensorboard, wandb, "
                                       "mlflow"),
    (["sweep", "quick", "--tracker", "wandb,x"], "argument --tracker: 'wandb,x': unknown tracker 'x'; known: "
                                                 "tensorboard, wandb, mlflow"),
    (["export", "DIR", "--to", "csv"], "argument --to: 'csv': unknown tracker 'csv'; known: tensorboard, wandb, "
                                       "mlflow"),
    (["export", "DIR"], "the following arguments are required: --to"),
    (["export", "MISSING", "--to", "wandb"], "MISSING: no such folder; give a results folder (e.g. results/quick)"),
], ids=["run-flag", "run-empty", "run-key", "sweep-flag", "export-to", "export-no-to", "export-no-dir"])
def test_bad_tracker_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if a == "DIR" else str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    out = tmp_path / "out"
    assert main([*argv, *(["--out", str(out)] if argv[0] != "export" else [])]) == 2
    message = message.replace("MISSING", str(tmp_path / "missing"))
    assert capsys.readouterr().err.strip().splitlines() == [f"seqbench: error: {message}"]
    assert not out.exists()


def test_reproduce_mirrors_nothing(tmp_path):
    from seqbench.harness.reproduce import reproduce

    _, run_dir = execute(tiny("tracker=tensorboard"), tmp_path / "out", progress=False)
    tb = tmp_path / "out" / "tensorboard"
    before = sorted(tb.rglob("*"))
    _, summary = reproduce(run_dir, keep=tmp_path / "again", progress=False)
    assert summary["config"]["tracker"] == [] and sorted(tb.rglob("*")) == before
    assert not (tmp_path / "again" / "tensorboard").exists()


# --- export -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def results(tmp_path):
    """A results folder: a single run, a nested sweep of two runs, and an unfinished run (left out of an export)."""
    root = tmp_path / "results"
    single = execute(tiny("model=gru"), root / "runs", progress=False)[1]
    sweep_dir = root / "nested" / "sw"
    configs = [tiny("seed=1"), tiny("seed=2")]
    write_sweep_file(sweep_dir, SweepSpec(name="sw", seeds=[1, 2]), Path("spec.yaml"), [], configs, 1)
    swept = [execute(cfg, sweep_dir, progress=False)[1] for cfg in configs]
    unfinished = root / "runs" / "0123456789ab"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps(tiny("seed=9").canonical()))
    return root, single, swept


@pytest.mark.parametrize("tracker", TRACKERS)
def test_export_sends_existing_records(tmp_path, capsys, mlflow_uri, results, tracker):
    root, single, swept = results
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert main(["export", str(root), "--to", tracker]) == 0
    out = capsys.readouterr().out
    assert f"export: 3 runs -> {tracker}; 1 unfinished runs left out" in out
    assert {p: p.read_bytes() for p in files} == files  # records are only read
    if tracker == "tensorboard":
        assert f"tensorboard --logdir {root / 'nested' / 'tensorboard'} {root / 'runs' / 'tensorboard'}" in out
        check_tensorboard(root / "runs" / "tensorboard" / single.name, single)
        for run_dir in swept:
            check_tensorboard(root / "nested" / "tensorboard" / "sw" / run_dir.name, run_dir)
    elif tracker == "wandb":
        runs = read_wandb(tmp_path)
        assert sorted(runs) == sorted(d.name for d in [single, *swept])
        check_wandb(runs[single.name], single)
        for run_dir in swept:
            check_wandb(runs[run_dir.name], run_dir, group="sw")
    else:
        check_mlflow(mlflow_uri, single)
        for run_dir in swept:
            check_mlflow(mlflow_uri, run_dir, experiment="sw", group="sw")


def test_export_again_replaces_a_runs_tensorboard_events(tmp_path, results):
    root, single, _ = results
    assert main(["export", str(root), "--to", "tensorboard"]) == 0
    assert main(["export", str(root), "--to", "tensorboard"]) == 0
    logdir = root / "runs" / "tensorboard" / single.name
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    check_tensorboard(logdir, single)  # one copy of each row, not two


def test_export_reports_a_failing_tracker_and_exits_1(tmp_path, monkeypatch, capsys, results):
    root, _, _ = results
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'mlflow.db'}")
    assert main(["export", str(root), "--to", "mlflow"]) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("export: run ")]
    assert len(failed) == 3 and "FileExistsError" in failed[0] and "a-file" in failed[0]
    assert all("not tried again" in line for line in failed[1:])
    assert "3 sends failed" in captured.out
