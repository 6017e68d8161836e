"""`seqbench export DIR --to TRACKER`: send run records already on disk (single runs or sweeps, nested) to experiment
trackers, after the fact, through the same code that mirrors a run as it finishes (`trackers.py`). Records are only
read, never changed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import trackers


def add_parser(sub) -> None:
    """The `export` subcommand, on the CLI's subparsers."""
    ex = sub.add_parser("export", help="send recorded runs to experiment trackers (tensorboard, wandb, mlflow)")
    ex.add_argument("dir", metavar="DIR", help="a results folder: single runs or sweeps, nested")
    ex.add_argument("--to", action="append", type=trackers.flag, required=True, metavar="NAME[,NAME]",
                    help="tracker(s): tensorboard, wandb, mlflow (repeatable or a comma list)")
    ex.set_defaults(func=cmd_export)


def finished_records(root: Path) -> tuple[list[trackers.Record], int]:
    """The finished runs under `root` as tracker records, and how many unfinished runs were left out. A run whose
    config.json is lost is sent with its summary's copy of the config, with a warning (as `load_runs` and the report
    do); a completed run whose metrics are lost is a RecordError: a tracker run without its curves would look whole."""
    from .errors import RecordError
    from .loaders import metrics_lost, read_jsonl, record_warnings, run_config, run_dirs, warn
    from .records import read_summary
    from .status import FINISHED

    records, unfinished, notes = [], 0, []
    for folder in run_dirs(root):
        summary = read_summary(folder)
        if summary is None or summary.get("status") not in FINISHED:
            unfinished += 1
            continue
        lost = metrics_lost(folder, summary)
        if lost:
            raise RecordError(f"{lost}; nothing to export for run {summary.get('run_id', folder.name)}: run it "
                              f"again (--force) or move {folder} out of {root}")
        notes += record_warnings(folder, summary)
        config = summary.get("config") or run_config(folder, summary)[0]
        records.append(trackers.Record(folder, config, read_jsonl(folder / "metrics.jsonl"), summary,
                                       trackers.group_of(folder)))
    for note in notes:  # once every record has been read: a refused export warns about nothing
        warn(note)
    return records, unfinished


def cmd_export(args: argparse.Namespace) -> int:
    from .config import ConfigError

    names = list(dict.fromkeys(name for group in args.to for name in group))
    root = Path(args.dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder; give a results folder (e.g. results/quick)")
    trackers.require(names, "--to")
    records, unfinished = finished_records(root)  # every record read before anything is sent
    if not records:
        raise ConfigError(f"{root}: no finished run records here (a run folder holds config.json and summary.json)")
    failures = 0
    for record in records:
        for name, error in trackers.send(record, names).items():
            failures += 1
            print(f"export: run {record.run_id} -> {name} failed: {error}", file=sys.stderr)
    print(f"export: {len(records)} runs -> {', '.join(names)}"
          + (f"; {failures} sends failed" if failures else "")
          + (f"; {unfinished} unfinished runs left out" if unfinished else ""))
    if "tensorboard" in names:
        print("tensorboard: tensorboard --logdir " + " ".join(sorted({str(trackers.tensorboard_base(r))
                                                                      for r in records})))
    return 1 if failures else 0
