"""Experiment trackers (TensorBoard, Weights & Biases, MLflow): a finished run record mirrored into the trackers its
config names: the resolved config as hyperparameters, every metrics row at its step, the summary, the sweep as group.

The local record is the source of truth. A run is mirrored once its `summary.json` is written, from the one place that
writes it (`records.RunWriter.summary`), so every executor mirrors the same way; a tracker that fails leaves a line in
the summary's `warnings` and never fails the run. `seqbench export` sends existing records through the same code.
Tracker packages are imported only when a tracker is used.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import unquote

from .dotted import flatten as dotted
from .errors import ConfigError
from .status import Status

#: tracker name -> the module it needs; each is also the name of the seqbench extra that installs it
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TENSORBOARD_DIR_ENV = "SEQBENCH_TENSORBOARD_DIR"
DEFAULT_PROJECT = "seqbench"  # W&B project and MLflow experiment when neither the environment nor a sweep names one
MLFLOW_STORE = "mlflow.db"  # the SQLite store beside the results, when MLFLOW_TRACKING_URI names none
STORE_LOCK_S = 300  # how long a process waits for another one writing to the same SQLite store
WARNING_CHARS = 500  # a tracker's error, in a record's warnings and the printed line: whole sentences up to this
#: summary fields a tracker does not get: the config goes as hyperparameters; warnings are about the trackers themselves
NOT_MIRRORED = ("config", "traceback", "warnings")


# --- names, flags, checks ---------------------------------------------------------------------------------------------
def parse_names(value) -> list[str]:
    """Tracker names from a list and/or comma strings (`"wandb,mlflow"`), validated, in order, each once."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"expected tracker names ({', '.join(TRACKERS)}) as a list or a comma-separated string")
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker {unknown[0]!r}; known: {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def flag(text: str) -> list[str]:
    """argparse type of `--tracker`/`--to`: one name or a comma list."""
    try:
        names = parse_names(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a tracker name: {', '.join(TRACKERS)}")
    return names


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracker", action="append", type=flag, default=[], metavar="NAME[,NAME]",
                        help="mirror each finished run to an experiment tracker: tensorboard, wandb, mlflow "
                             "(repeatable or a comma list; adds to the config key `tracker`)")


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(TRACKERS[name]) is not None
    except (ImportError, ValueError):
        return False


def not_installed(name: str) -> str:
    return f"{name} is not installed; pip install 'seqbench[{name}]'"


def with_trackers(configs: list, flagged: list[list[str]] | None) -> list:
    """`configs` with the `--tracker` names added to each config's own `tracker` list (an operational key: the run_id
    stays). Raises ConfigError naming the extra of a tracker that is not installed, before anything is written."""
    extra = list(dict.fromkeys(name for names in flagged or [] for name in names))
    out = []
    for cfg in configs:
        names = list(dict.fromkeys([*cfg.tracker, *extra]))
        out.append(cfg if names == cfg.tracker else cfg.model_copy(update={"tracker": names}))
    for name in dict.fromkeys(name for cfg in out for name in cfg.tracker):
        if not installed(name):
            where = f"--tracker {name}" if name in extra else f"tracker={name}"
            raise ConfigError(f"{where}: {not_installed(name)}")
    return out


def require(names: list[str], where: str) -> None:
    for name in names:
        if not installed(name):
            raise ConfigError(f"{where} {name}: {not_installed(name)}")


# --- what a tracker receives ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Record:
    """One run record as the trackers see it: `folder` is the run's folder, `group` its sweep's name (None for a
    single run)."""

    folder: Path
    config: dict
    rows: list[dict]
    summary: dict
    group: str | None

    @property
    def run_id(self) -> str:
        return self.summary.get("run_id") or self.folder.name

    @property
    def last_step(self) -> int:
        return self.summary.get("steps_done") or max((row["step"] for row in self.rows), default=0)

    def hyperparameters(self) -> dict:
        """The resolved config, nested, without the operational `tracker` list."""
        return {k: v for k, v in self.config.items() if k != "tracker"}

    def mirrored_summary(self) -> dict:
        return {k: v for k, v in self.summary.items() if k not in NOT_MIRRORED}


def group_of(folder: Path) -> str | None:
    """A run's group: the name of the sweep it belongs to (the folder above it holds the sweep's `sweep.json`)."""
    try:
        with open(Path(folder).parent / "sweep.json") as f:
            return json.load(f).get("name") or Path(folder).parent.name
    except (OSError, ValueError):
        return None


def flatten(tree: dict) -> dict:
    """`{"train": {"lr": 1e-3}}` -> `{"train.lr": 1e-3}`; lists become JSON text (trackers take scalars)."""
    return {k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in dotted(tree).items()}


def is_number(value) -> bool:
    """A finite int or float (the record holds non-finite values as null, and so do the trackers: not at all)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def row_metrics(row: dict) -> dict[str, float]:
    """A metrics row's numbers (null = a non-finite value in the record, which no tracker gets)."""
    return {k: v for k, v in row.items() if k != "step" and is_number(v)}


def summary_numbers(summary: dict) -> dict[str, float]:
    """The summary's numbers, dotted (`final.eval_loss`), provenance aside (it goes as text or tags)."""
    return {k: v for k, v in flatten({k: v for k, v in summary.items() if k != "provenance"}).items() if is_number(v)}


# --- mirroring --------------------------------------------------------------------------------------------------------
def mirror_run(folder: Path, rows: list[dict], summary: dict) -> bool:
    """Mirror a just-written record to the trackers its config names. A tracker's failure becomes a line in
    `summary["warnings"]` and one printed line; returns whether it added any (the caller then rewrites the summary)."""
    config = summary.get("config") or {}
    names = config.get("tracker") or []
    if not names:
        return False
    folder = Path(folder).parent / summary.get("run_id", Path(folder).name)  # not a rerun's staging folder
    record = Record(folder, config, rows, summary, group_of(folder))
    failed = send(record, names)
    for name, error in failed.items():
        summary.setdefault("warnings", []).append(f"tracker {name}: {error}")
        print(f"seqbench: warning: run {record.run_id}: tracker {name} failed ({error}); the local record is complete",
              file=sys.stderr)
    return bool(failed)


def send(record: Record, names: list[str]) -> dict[str, str]:
    """Send `record` to each tracker in `names`; returns {tracker: one-line error} for those that failed."""
    failed = {}
    for name in names:
        try:
            if not installed(name):
                raise RuntimeError(not_installed(name))
            WRITERS[name](record)
        except Exception as e:  # a tracker is a mirror: its failure is reported, never the run's
            failed[name] = one_line(e)
    return failed


def one_line(e: BaseException) -> str:
    """An error as one line, `Type: message`, no longer than WARNING_CHARS: the message's whole sentences that fit (its
    words that fit and "…", when even its first sentence does not)."""
    return shorten(f"{type(e).__name__}: {' '.join(str(e).split())}", WARNING_CHARS)


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text[:limit + 1])]
    if ends and ends[-1] > limit // 4:
        return text[:ends[-1]]
    return textwrap.shorten(text, limit, placeholder=" …")


#: (tracker, its destination) -> why it could not start, in this process. A tracker that cannot connect (no network,
#: no credentials, a store that cannot be opened) can take minutes to give up (W&B: 90 s, MLflow's HTTP retries: more);
#: a sweep worker or an export meets that once, not once per run.
_failed_starts: dict[tuple, str] = {}


def _start(name: str, destination: tuple, start):
    key = (name, *destination)
    if key in _failed_starts:
        raise RuntimeError(f"not tried again: it could not start earlier in this process ({_failed_starts[key]})")
    try:
        return start()
    except Exception as e:
        _failed_starts[key] = one_line(e)
        raise


def results_folder(record: Record) -> Path:
    """OUT: the folder of a single run's record (`seqbench run --out OUT`), or of its sweep's (`OUT/<sweep>/`)."""
    holder = record.folder.parent
    return holder.parent if record.group else holder


def tensorboard_base(record: Record) -> Path:
    """The folder to point `tensorboard --logdir` at: `$SEQBENCH_TENSORBOARD_DIR`, else `OUT/tensorboard` beside the
    results."""
    env = os.environ.get(TENSORBOARD_DIR_ENV)
    return Path(env) if env else results_folder(record) / "tensorboard"


def tensorboard_dir(record: Record) -> Path:
    """The run's own folder of event files: `BASE/<run_id>`, or `BASE/<sweep>/<run_id>` (the sweep as group)."""
    base = tensorboard_base(record)
    return base / record.group / record.run_id if record.group else base / record.run_id


def to_tensorboard(record: Record) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    logdir = tensorboard_dir(record)
    if logdir.is_dir():  # a run's folder holds its latest record only (a rerun or a second export replaces it)
        for old in logdir.glob("events.out.tfevents.*"):
            old.unlink()
    numbers = {f"summary/{k}": v for k, v in summary_numbers(record.mirrored_summary()).items()}
    hp = {k: "null" if v is None else v for k, v in flatten(record.hyperparameters()).items()}
    with SummaryWriter(str(logdir)) as writer:
        for row in record.rows:
            for key, value in row_metrics(row).items():
                writer.add_scalar(key, value, row["step"])
        for key, value in numbers.items():
            writer.add_scalar(key, value, record.last_step)
        for summary in hparams(hp, numbers):  # the HParams dashboard: config against summary numbers, across runs
            writer._get_file_writer().add_summary(summary)
        writer.add_text("config", _markdown_json(record.config), record.last_step)
        writer.add_text("summary", _markdown_json(record.mirrored_summary()), record.last_step)


def _markdown_json(obj) -> str:
    return "```\n" + json.dumps(obj, indent=2) + "\n```"


def to_wandb(record: Record) -> None:
    import wandb

    wanted = {"console": "off", "save_code": False, "x_disable_stats": True}  # no stdout capture, no system monitor
    known = getattr(wandb.Settings, "model_fields", wanted)
    env = os.environ.get  # read now: wandb reads its environment once per process, at its first run
    project = env("WANDB_PROJECT") or DEFAULT_PROJECT
    destination = tuple(env(k) for k in ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_API_KEY", "WANDB_ENTITY")) + (project,)
    run = _start("wandb", destination,
                 lambda: wandb.init(project=project, group=record.group, name=record.run_id, mode=env("WANDB_MODE"),
                                    dir=env("WANDB_DIR"), config=record.hyperparameters(),
                                    tags=[str(record.config.get(k, {}).get("name")) for k in ("task", "model")],
                                    settings=wandb.Settings(**{k: v for k, v in wanted.items() if k in known})))
    try:
        try:
            for row in record.rows:
                run.log(row_metrics(row), step=row["step"])
            run.summary.update({"summary": record.mirrored_summary()})  # apart from the rows' last values (same names)
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish(exit_code=1 if record.summary.get("status") == "failed" else 0)
    finally:
        if multiprocessing.parent_process() is not None:
            # A sweep worker. W&B's writer is a service process, which closes the run's files after finish() returns;
            # W&B waits for it at exit, in an atexit hook, which a multiprocessing child never runs. So wait here,
            # and the run is on disk before the worker goes on (or is stopped)
            wandb.teardown()


def mlflow_uri(record: Record) -> str:
    """`$MLFLOW_TRACKING_URI`, else a SQLite store beside the results, `OUT/mlflow.db` (mlflow's own default is a store
    in the current folder, and from MLflow 3 it refuses one there that an older MLflow wrote)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(results_folder(record) / MLFLOW_STORE).resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The file of a `sqlite:///PATH` store, or None for other stores."""
    return Path(unquote(uri[len("sqlite:///"):])) if uri.startswith("sqlite:///") else None


def to_mlflow(record: Record) -> None:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or record.group or DEFAULT_PROJECT
    uri, default = mlflow_uri(record), not os.environ.get("MLFLOW_TRACKING_URI")
    with contextlib.ExitStack() as held:  # a SQLite store's lock, held until the run is sent
        client, experiment, made = _start("mlflow", (uri,), lambda: _open_mlflow(uri, name, held))
        if made and default:
            print(f"seqbench: mlflow: MLFLOW_TRACKING_URI is not set, so runs go to a new store beside the results: "
                  f"{uri} (mlflow ui --backend-store-uri {uri})", file=sys.stderr)
        artifacts = (sqlite_file(uri).parent / "mlartifacts" / name).as_uri() if default else None
        experiment_id = experiment.experiment_id if experiment else _create_experiment(client, name, artifacts)
        _send_mlflow(record, client, experiment_id)


def _open_mlflow(uri: str, name: str, held: contextlib.ExitStack):
    """A client of the store at `uri`, the experiment `name` (None: not made yet), and whether the store was made now.
    A SQLite store is written by one process at a time (`<store>.lock`): sweep workers share one, and the first of them
    creates its tables."""
    from filelock import FileLock
    from mlflow import MlflowClient

    db, made = sqlite_file(uri), False
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        held.enter_context(FileLock(f"{db}.lock", timeout=STORE_LOCK_S))
        made = not db.exists()
    with _quiet("mlflow.store.db.utils"):  # "Creating initial MLflow database tables...": to_mlflow says where
        client = MlflowClient(uri)
        return client, client.get_experiment_by_name(name), made


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _send_mlflow(record: Record, client, experiment_id: str) -> None:
    from mlflow.entities import Metric, Param, RunTag

    summary = record.mirrored_summary()
    tags = {"seqbench.run_id": record.run_id, "seqbench.record": str(record.folder.resolve()),
            **({"seqbench.group": record.group} if record.group else {}),
            **{f"summary.{k}": json.dumps(v) if v is None else str(v) for k, v in flatten(summary).items()
               if not is_number(v)}}
    run_id = client.create_run(experiment_id, run_name=record.run_id).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, row["step"]) for row in record.rows for k, v in row_metrics(row).items()]
    metrics += [Metric(f"summary/{k}", v, now, record.last_step) for k, v in summary_numbers(summary).items()]
    params = [Param(k, json.dumps(v) if v is None else str(v)) for k, v in flatten(record.hyperparameters()).items()]
    tag_list = [RunTag(k, v[:5000]) for k, v in tags.items()]
    try:  # a batch holds at most 100 params, 100 tags, 1000 metrics
        for i in range(0, max(len(params), len(tag_list)), 100):
            client.log_batch(run_id, params=params[i:i + 100], tags=tag_list[i:i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FAILED" if record.summary.get("status") == Status.FAILED else "FINISHED")


def _create_experiment(client, name: str, artifact_location: str | None) -> str:
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another worker of the sweep created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


WRITERS = {"tensorboard": to_tensorboard, "wandb": to_wandb, "mlflow": to_mlflow}
