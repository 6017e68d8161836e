"""The `seqbench` command: `run` one configuration, `sweep` many, `report` on results, `reproduce` a record,
`list` what can be configured.

Every bad input ends the same way: one line on stderr naming the key, value or file and what is allowed, exit code 2,
nothing written. Commands import torch (and pandas, pydantic's models) only when they need them, so `seqbench --help`
and `seqbench list` answer at once.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from .errors import ConfigError
from .export import add_parser as add_export_parser
from .trackers import add_flag as add_tracker_flag, with_trackers

EXIT_BAD_INPUT = 2


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it already ends with `(default: ...)`."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.required or re.search(r"\(default: [^()]*\)$", text)
                or action.default is argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        return f"{text} (default: {_default_text(action.default)})".lstrip()


def _default_text(value) -> str:
    if value is False:
        return "off"
    if value is None or value == []:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).replace("%", "%%")  # help strings are %-formatted


class _Parser(argparse.ArgumentParser):
    """One-line errors (exit 2, like every other bad input), and key=value overrides anywhere among the options."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._intermixing = False

    def error(self, message: str):
        raise ConfigError(message)

    def parse_known_args(self, args=None, namespace=None):
        # A command's positionals (the overrides) may come before, between and after its options: argparse alone would
        # stop collecting them at the first option (`run task.length=5 --quiet train.steps=5`).
        if self._subparsers is not None or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _load_config_file(path: str) -> dict:
    from .config import from_mapping, read_yaml

    data = read_yaml(path, "--config")  # JSON is YAML
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config keys (task: adding, train.steps: 500, ...)")
    return from_mapping(data, f"--config {path}: ")


def output_folder(text: str, flag: str) -> Path:
    """`text` as a folder to write into: created later if missing, but refused now (before anything is written) when
    empty, when it or one of its parents is a file, when it cannot even be looked at (a parent folder the user may
    not enter, a name too long) or when no folder can be created in its nearest existing parent (tried, and removed)."""
    if not text.strip():
        raise ConfigError(f"{flag} {text!r}: empty; give a folder (created if missing)")
    path = Path(text)

    def exists(p: Path) -> bool:  # not Path.exists, which in newer Pythons answers False for every OSError
        try:
            p.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    try:
        existing = next((p for p in (path, *path.parents) if exists(p)), Path("."))
    except OSError as e:  # PermissionError: a parent without search (x) permission; a name too long; a symlink loop
        raise ConfigError(f"{flag} {text}: cannot reach {e.filename or path}: {e.strerror or e}; give a folder "
                          "you can write") from None
    if not existing.is_dir():
        where = "it" if existing == path else str(existing)
        raise ConfigError(f"{flag} {text}: {where} is a file, not a folder; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {text}: {existing} is not writable")
    try:  # what permission bits do not tell: a read-only or virtual file system (/proc), a full disk, root's limits
        os.rmdir(tempfile.mkdtemp(prefix=".seqbench-probe-", dir=existing))
    except OSError as e:
        raise ConfigError(f"{flag} {text}: cannot create a folder in {existing}: {e.strerror or e}; give a folder "
                          "you can write") from None
    return path


def _json_or_text(args) -> None:
    if getattr(args, "json", False) and not getattr(args, "dry_run", True):
        raise ConfigError(f"--json: only with --dry-run (seqbench {args.command} --dry-run --json)")


def cmd_run(args) -> int:
    from .config import merge, parse_overrides, resolve

    _json_or_text(args)
    out = output_folder(args.out, "--out")
    raw = _load_config_file(args.config) if args.config else {}
    cfg = resolve(merge(raw, parse_overrides(args.overrides)))
    cfg = with_trackers([cfg], args.tracker)[0]  # before anything is written: a missing tracker names its extra
    output_folder(str(out / cfg.run_id), "--out")
    if args.dry_run:
        return _dry_run(cfg, out, args.json)
    from .records import is_finished

    if args.force or not is_finished(out / cfg.run_id):  # a recorded run is only shown, whatever its size
        from .memory import check

        check(cfg)
    from .train import RunInterrupted, execute  # after validation, so bad input fails fast

    try:
        summary, run_dir = execute(cfg, out, progress=not args.quiet, force=args.force)
    except RunInterrupted as e:
        print(f"run {cfg.run_id}: {e}; run the same command again to resume", file=sys.stderr)
        return 130
    print(describe_summary(summary, run_dir))
    return 1 if summary["status"] == "failed" else 0


def _dry_run(cfg, out: Path, as_json: bool) -> int:
    """The resolved config, its run_id, where it would be recorded and what that folder holds; nothing is run."""
    from .memory import available, estimate, human
    from .sweep import run_state

    est, (free, source) = estimate(cfg), available(cfg.device)
    state = run_state(out / cfg.run_id)
    if as_json:
        print(json.dumps({"run_id": cfg.run_id, "run_dir": str(out / cfg.run_id), "state": state,
                          "memory": {"estimate_bytes": est.total, "available_bytes": free, "available_source": source,
                                     "parts": est.parts},
                          "config": cfg.canonical()}, indent=2))
        return 0
    from .config import user_text
    from .dotted import flatten

    print(f"run {cfg.run_id}: {state} -> {out / cfg.run_id}")
    print(f"memory: about {human(est.total)} needed, {human(free)} {source}"
          + ("" if est.total <= free or not cfg.train.memory_check else " (seqbench run would refuse it)"))
    for key, value in flatten(cfg.canonical()).items():
        print(f"  {key}={user_text(value)}")
    return 0


def describe_summary(s: dict, run_dir: Path) -> str:
    head = f"run {s['run_id']}: {s['model']} on {s['task']} - {s['status']}"
    if s.get("skipped"):
        head += " (already recorded; pass --force to run it again)"
    if s["status"] in ("failed", "busy"):
        return f"{head}: {s.get('error', 'held by another process')}\n  record: {run_dir}"
    final = s.get("final") or {}
    lines = [head, f"  steps {s['steps_done']}  params {s['params']:,}  wall {s['wall_s']:.1f}s"
                   + (f"  {s['tokens_per_s']:,.0f} tokens/s" if s.get("tokens_per_s") else "")]
    if s["status"] == "diverged":
        lines.append(f"  diverged at step {s['diverged_step']} (non-finite loss or gradient)")
    else:
        lines.append(f"  eval loss {final.get('eval_loss'):.4g} (baseline {s['baseline_loss']:.4g})  "
                     f"eval accuracy {final.get('eval_accuracy'):.4f}")
        other = {k.partition("@")[2]: v for k, v in final.items() if k.startswith("eval_accuracy@")}
        if other:
            lines.append("  eval accuracy at other lengths: " + "  ".join(f"{n}: {v:.4f}" for n, v in other.items()))
        solved = f"at step {s['solved_step']}" if s["solved_step"] is not None else "not reached"
        lines.append(f"  solved ({s['solved_criterion']}): {solved}")
    lines.append(f"  record: {run_dir}")
    return "\n".join(lines)


def cmd_sweep(args) -> int:
    from .executors import EXECUTORS, Plan, refuse_others_flags
    from .executors.base import default_workers
    from .sweep import describe_point, expand, load_spec, recorded_threads, run_state, to_rerun

    from .config import parse_overrides

    _json_or_text(args)
    out = output_folder(args.out, "--out")
    spec, source = load_spec(args.spec)
    tuned = None  # a tuned sweep's points (harness.tune.Point): its final runs depend on its selection runs
    with _devices_here_or_elsewhere(args):
        if spec.tune:
            from .tune import expand_selection

            tuned = expand_selection(spec, source, parse_overrides(args.overrides))
            configs = [c for point in tuned for runs in point.selection for c in runs]
        else:
            configs = expand(spec, source, parse_overrides(args.overrides))
        configs = with_trackers(configs, args.tracker)
    sweep_dir = output_folder(str(out / spec.name), "--out")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    from .resources import resolve_resources

    resources = resolve_resources(spec.resources, args)  # a resource flag's value is checked first, any executor
    refuse_others_flags(args)
    if args.workers_per_gpu is not None:
        _check_workers_per_gpu(args, configs)
    executor = EXECUTORS[args.executor]
    settings = executor.prepare(args, spec, resources)  # its flags and settings: checked before anything is written
    if args.force and args.retry_failed:
        raise ConfigError("--force reruns every run, failed ones included; give --force or --retry-failed, not both")
    states = {c.run_id: run_state(sweep_dir / c.run_id) for c in configs}  # a corrupt record fails here, not midway
    rerun = to_rerun(configs, sweep_dir, args.force, args.retry_failed)
    todo = _to_run(configs, sweep_dir, rerun)
    if args.dry_run:
        phases, pending = {}, []
        if tuned:
            configs, phases, pending = _tuned_listing(args, spec, source, tuned, configs, sweep_dir)
            states.update({c.run_id: run_state(sweep_dir / c.run_id) for c in configs if c.run_id not in states})
            rerun |= to_rerun(configs, sweep_dir, args.force, args.retry_failed)
            todo = _to_run(configs, sweep_dir, rerun)
        return _sweep_dry_run(spec, configs, sweep_dir, states, rerun, todo, args.json, executor.here,
                              phases, pending)
    workers = args.workers or default_workers(configs[0].device, args.workers_per_gpu or 1)
    threads, note = recorded_threads(sweep_dir, workers)
    plan = Plan(sweep_dir, workers, threads, on_progress=lambda event: None,
                describe=lambda cfg: f"{source}: at {describe_point(cfg, spec)}")
    # before anything is written: refuse runs the executor cannot hold (this machine's memory, a cluster's nodes); a
    # tuned sweep's final runs take its selection runs' shapes: those are checked when none is left to run
    executor.preflight(settings, plan, todo or (configs if tuned else []))
    return _run_sweep(args, spec, source, configs, todo, plan, note, rerun, executor, settings, tuned)


def _to_run(configs, sweep_dir: Path, rerun) -> list:
    """The runs of `configs` to run: those not finished, and the finished ones in `rerun`."""
    from .records import is_finished

    return [c for c in configs if c.run_id in rerun or not is_finished(sweep_dir / c.run_id)]


def _devices_here_or_elsewhere(args):
    """Ray and SLURM runs use their nodes' devices: configs are resolved without this machine's (device=cuda on a
    CPU-only driver is fine)."""
    from .config import devices_elsewhere

    from .executors import EXECUTORS

    return contextlib.nullcontext() if EXECUTORS[args.executor].here else devices_elsewhere()


def _final_configs(args, spec, source, tuned, choices) -> list:
    """A tuned sweep's final runs for the `choices` made (harness.tune.choose), with the --tracker flags."""
    from .config import parse_overrides
    from .tune import expand_finals

    with _devices_here_or_elsewhere(args):
        finals = expand_finals(spec, source, parse_overrides(args.overrides), tuned, [c["chosen"] for c in choices])
    return with_trackers(finals, args.tracker)


def _tuned_listing(args, spec, source, tuned, selection, sweep_dir) -> tuple[list, dict, list]:
    """What a dry run of a tuned sweep lists: the selection runs, then the final runs of the points whose selection
    is finished (chosen from the records as the sweep would choose), and for the other points how many final runs
    will follow their selection. Returns (runs, run_id -> phase, the points still to select)."""
    from .tune import choose, metric, selected

    ready = [p for p in tuned if selected([p], sweep_dir)]
    name = metric(spec, source, [runs[0] for p in tuned for runs in p.selection[:1]])
    finals = _final_configs(args, spec, source, ready, choose(ready, sweep_dir, name)) if ready else []
    chosen = {id(p) for p in ready}
    pending = [{"point": p.label, "seeds": spec.seed_list(), "runs": spec.seed_count()} for p in tuned
               if id(p) not in chosen]
    phases = {**{c.run_id: "selection" for c in selection}, **{c.run_id: "final" for c in finals}}
    return [*selection, *finals], phases, pending


def _check_workers_per_gpu(args, configs) -> None:
    if args.workers_per_gpu < 1:
        raise ConfigError(f"--workers-per-gpu {args.workers_per_gpu}: must be >= 1")
    if args.workers is not None:
        raise ConfigError("--workers-per-gpu and --workers both set the number of workers: give one")
    cpu = sorted({c.device for c in configs} - {"cuda"})
    if cpu:
        raise ConfigError(f"--workers-per-gpu needs device=cuda; this sweep has runs on device={cpu[0]} "
                          "(use --workers for CPU runs)")


def _sweep_dry_run(spec, configs, sweep_dir: Path, states: dict, rerun, todo, as_json: bool, here: bool,
                   phases: dict | None = None, pending: list | None = None) -> int:
    """The runs and their states. A tuned sweep's runs carry their `phases` (selection or final); `pending` are its
    points whose final runs are not known yet (they depend on the selection), counted as runs to run."""
    from .memory import available, estimate, human
    from .sweep import describe_point, point_of, shown_keys

    phases, pending = phases or {}, pending or []
    later = sum(p["runs"] for p in pending)
    total, to_run = len(configs) + later, len(todo) + later
    sizes = {c.run_id: estimate(c).total for c in configs}
    # Ray and SLURM runs use their nodes' memory, which this machine cannot see
    free, source = available(configs[0].device) if here else (None, "not known here: the runs use the nodes' memory")
    if as_json:
        keys = shown_keys(spec)
        runs = [{"run_id": c.run_id, "state": states[c.run_id], "runs_again": c.run_id in rerun,
                 "point": dict(zip(keys, point_of(c, keys, spec))), "memory_bytes": sizes[c.run_id],
                 "run_dir": str(sweep_dir / c.run_id), **({"phase": phases[c.run_id]} if phases else {})}
                for c in configs]
        print(json.dumps({"sweep": spec.name, "sweep_dir": str(sweep_dir), "runs": runs, "total": total,
                          "to_run": to_run, "done": total - to_run, "available_bytes": free,
                          "available_source": source, **({"after_selection": pending} if spec.tune else {})},
                         indent=2))
        return 0
    for cfg in configs:
        again = "  (runs again)" if cfg.run_id in rerun else ""
        phase = f"  ({phases[cfg.run_id]})" if phases else ""
        print(f"{cfg.run_id}  {states[cfg.run_id]:<38} {describe_point(cfg, spec)}{phase}{again}")
    for p in pending:
        where = " ".join(f"{k}={v}" for k, v in p["point"].items()) or "the only point"
        print(f"{'after selection':<52} {where}: {p['runs']} final runs (seeds {', '.join(map(str, p['seeds']))}) "
              f"with the chosen {', '.join(spec.tune.keys)}")
    tuned = ""
    if spec.tune:
        selection = sum(phase == "selection" for phase in phases.values())
        tuned = (f" ({selection} selection runs, {total - selection} final runs"
                 + (f", {later} of them after selection" if later else "") + ")")
    print(f"sweep {spec.name}: {total} runs{tuned}, {to_run} to run, {total - to_run} already done -> {sweep_dir}")
    print(f"memory: the largest run needs about {human(max(sizes.values()))}; "
          + (f"{human(free)} {source}" if free is not None else f"available: {source}"))
    return 0


def _run_sweep(args, spec, source, configs, todo, plan, note, rerun, executor, settings, tuned=None) -> int:
    """Run the sweep's runs through its executor and end with the results table and the tally. A tuned sweep
    (`tuned`: its points) runs in two phases through the same executor: the selection runs (`configs`), then, once
    tuning.json records the choice, the chosen candidates on the final seeds."""
    from .progress import SweepProgress
    from .sweep import report_lines, results_table, to_rerun, write_runs_table, write_sweep_file

    sweep_dir, workers, threads = plan.sweep_dir, plan.workers, plan.threads
    tuning = {"tuned": True, "tuning": "tuning.json", "selection_run_ids": [c.run_id for c in configs]} if tuned else {}
    write_sweep_file(sweep_dir, spec, source, args.overrides, configs, threads, tuning)
    results, finals, unchosen = [], [], []
    total = len(configs) + (spec.point_count() * spec.seed_count() if tuned else 0)
    phases = f" ({len(configs)} selection runs, then {total - len(configs)} final runs)" if tuned else ""
    print(f"sweep {spec.name}: {total} runs{phases} ({len(configs) - len(todo)} already recorded), "
          f"executor {args.executor}, {workers} workers, {threads} threads per run{note} -> {sweep_dir}",
          file=sys.stderr)
    try:
        with SweepProgress(total, spec.name) as bar, _sigterm_as_interrupt():
            plan.on_progress = bar.step
            _execute(args, executor, settings, plan, configs, rerun, bar, results, todo)
            if tuned:
                finals, unchosen = _select(args, spec, source, tuned, sweep_dir)
                write_sweep_file(sweep_dir, spec, source, args.overrides, [*configs, *finals], threads, tuning)
                _execute(args, executor, settings, plan, finals,
                         to_rerun(finals, sweep_dir, args.force, args.retry_failed), bar, results)
    except KeyboardInterrupt:
        write_runs_table(sweep_dir, [c.run_id for c in [*configs, *finals]])
        print(f"sweep {spec.name}: interrupted; run the same command to resume (each unfinished run from its last "
              "checkpoint).", file=sys.stderr)
        return 130
    write_runs_table(sweep_dir, [c.run_id for c in [*configs, *finals]])
    print(results_table(spec, finals if tuned else configs, sweep_dir))
    print("\n".join(report_lines(spec.name, results, sweep_dir)))
    for label in unchosen:
        where = " ".join(f"{k}={v}" for k, v in label.items()) or "the only point"
        print(f"  tuning  {where}: no candidate completed on every selection seed; its final runs were not run "
              f"(scores in {sweep_dir / 'tuning.json'})")
    failed = any(r["status"] in ("failed", "interrupted") for r in results)
    return 1 if failed or unchosen else 0


def _select(args, spec, source, tuned, sweep_dir) -> tuple[list, list[dict]]:
    """Choose each point's candidate from its selection runs' records, write tuning.json, and return the final runs
    and the labels of the points where no candidate could be chosen."""
    from .tune import choose, metric, write_tuning

    name = metric(spec, source, [runs[0] for p in tuned for runs in p.selection[:1]])
    choices = choose(tuned, sweep_dir, name)
    path = write_tuning(sweep_dir, spec, name, choices)
    chosen = [c for c in choices if c["chosen"] is not None]
    print(f"sweep {spec.name}: chose {', '.join(spec.tune.keys)} at {len(chosen)} of {len(choices)} points by "
          f"{name} ({path})", file=sys.stderr)
    return _final_configs(args, spec, source, tuned, choices), [c["point"] for c in choices if c["chosen"] is None]


def _execute(args, executor, settings, plan, configs, rerun, bar, results: list, todo: list | None = None) -> None:
    """Run `configs` through the sweep's executor, appending each run's outcome to `results` (finished runs not in
    `rerun` as skipped); a run another sweep holds is waited for, then looked at again. `todo`: the runs to run, when
    the caller has just found them."""
    from .records import read_summary, wait_for_claim
    from .sweep import to_rerun

    sweep_dir = plan.sweep_dir
    todo = _to_run(configs, sweep_dir, rerun) if todo is None else todo
    todo_ids = {c.run_id for c in todo}
    for cfg in configs:
        if cfg.run_id not in todo_ids:
            results.append({**read_summary(sweep_dir / cfg.run_id), "skipped": True})
            bar.finished(results[-1])
    while todo:
        runs = executor.run(settings, plan, todo, frozenset(rerun))
        busy = []
        for summary in runs:
            if summary["status"] == "busy":  # another sweep holds it: wait for it below, then look again
                busy.append(summary["run_id"])
                continue
            results.append(summary)
            bar.finished(summary)
        todo = [c for c in todo if c.run_id in busy]
        # a run another sweep held may have been run again there: rerun it here only if it still failed
        rerun = to_rerun(todo, sweep_dir, False, args.retry_failed or args.force)
        for cfg in todo:
            wait_for_claim(sweep_dir / cfg.run_id)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A scheduler's SIGTERM stops a sweep as Ctrl-C does: workers checkpoint, the driver exits cleanly."""
    def handler(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_report(args) -> int:
    results = Path(args.dir)
    if not results.is_dir():
        what = "a file, not a folder" if results.exists() else "no such folder"
        raise ConfigError(f"{results}: {what}; give a results folder (e.g. results/quick)")
    if not os.access(results, os.R_OK | os.X_OK):
        raise ConfigError(f"{results}: cannot read this folder (permission denied); give a results folder you can read")
    out = output_folder(args.out if args.out is not None else str(results / "report"),
                        "--out" if args.out is not None else "--out (default DIR/report)")
    try:
        # only now: importing matplotlib may warn (an unwritable config folder), which must not precede a refusal
        from .report import build_report

        index = build_report(results, out, strict=args.strict)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except PermissionError as e:  # a record or folder inside that this user may not read or write
        why = e.strerror or "permission denied"
        raise ConfigError(f"{e.filename or results}: {why}; nothing was written") from None
    except KeyboardInterrupt:
        print(f"report: interrupted; nothing written ({out} is as it was)", file=sys.stderr)
        return 130
    print(f"report: {index}  (and {index.with_suffix('.md').name}, figures/, tables/ beside it)")
    return 0


def _csv(kind, allowed=None):
    def parse(text: str):
        items = [kind(v) for v in text.split(",") if v]
        bad = [v for v in items if (allowed is not None and v not in allowed) or (kind is int and v < 1)]
        if not items or bad:
            want = ", ".join(allowed) if allowed is not None else "positive integers"
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {want}")
        return items
    return parse


def cmd_bench(args) -> int:
    out = output_folder(args.out, "--out")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch.cuda.is_available() is False")
    if "bfloat16" in args.dtype and device != "cuda":
        raise ConfigError("--dtype bfloat16 needs --device cuda")
    if not args.no_memory_check:
        from .memory import check_bench

        check_bench(args.cells, args.batch, args.hidden, args.length, device)
    from .bench import run_bench

    path = run_bench(args.cells, args.backends, args.batch, args.hidden, args.length, args.dtype, device, out,
                     tf32=not args.no_tf32, command=args.command_line)
    print(f"bench results: {path}")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import DEFAULT_RTOL, environment_changes, environment_lines, overall, reproduce

    rtol = DEFAULT_RTOL if args.rtol is None else args.rtol
    if not rtol >= 0:  # also refuses nan
        raise ConfigError(f"--rtol {args.rtol}: must be a number >= 0 (0 = only identical bits agree)")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be >= 1")
    keep = output_folder(args.keep, "--keep") if args.keep is not None else None
    from .train import RunInterrupted  # after validation, so bad input fails fast

    try:
        with _sigterm_as_interrupt():  # SIGTERM as Ctrl-C; during the rerun both stop it at a step
            quantities, summary = reproduce(Path(args.run_dir), keep, progress=not args.quiet, threads=args.threads)
    except (KeyboardInterrupt, RunInterrupted) as e:
        at = f" at step {e.step}" if isinstance(e, RunInterrupted) else ""
        print(f"reproduce {args.run_dir}: interrupted{at}; nothing compared and no partial rerun kept"
              + (f" in {keep}" if keep else "") + "; run the same command again to start over", file=sys.stderr)
        return 130
    changes = environment_changes(Path(args.run_dir), summary)
    differing = [q for q in quantities.values() if q.differing]
    print(f"reproduce {summary['run_id']}: compared {sum(q.values for q in quantities.values()):,} values in "
          f"{len(quantities)} quantities (metrics, gradient profiles, summary; timings aside)")
    if differing:
        width = max(len(q.name) for q in differing)
        print(f"  {'quantity':<{width}}  {'differing':>13}  {'max abs diff':>12}  {'max rel diff':>12}  verdict")
        for q in differing:
            print(f"  {q.name:<{width}}  {q.differing:>6}/{q.values:<6}  {q.max_abs:>12.3g}  {q.max_rel:>12.3g}  "
                  f"{q.verdict(rtol)}")
            for line in q.mismatched[:3]:
                print(f"      {line}")
    print("\n".join(environment_lines(changes)))
    verdict = overall(quantities, rtol)
    print(f"verdict: {verdict}" + ("" if verdict == "identical" else f" (rtol {rtol:g})"))
    return 1 if verdict == "differs" else 0


def cmd_list(args) -> int:
    from .config import TASK_CONFIGS, _rows, describe_keys, user_text
    from .models import MODELS
    from .models.configs import BACKEND_NAMES
    from .models.plugins import GROUP, builtin_names_only, config_without_torch, entry_points

    # Entry points are read from their metadata; a plugin's keys are listed where its config loads without importing
    # torch, which alone takes seconds (most of what this command would otherwise cost)
    plugins = {name: ep.value for name, ep in sorted(entry_points().items()) if name not in MODELS}
    with builtin_names_only():
        rows = describe_keys()
    at = max(i for i, r in enumerate(rows) if r.key.startswith("model")) + 1  # after the built-in models' keys
    for name in reversed(plugins):
        try:
            config = config_without_torch(name)
            why = (f"keys not listed: its module imports torch, which takes seconds; `seqbench run model={name} "
                   f"--dry-run` shows them with their values")
        except ConfigError as e:  # an installed entry point that does not load: listed with the reason
            config, why = None, f"cannot be loaded: {e}"
        rows[at:at] = (_rows("model.", config, f"[{name}] ") if config else [rows[at - 1]._replace(
            key=f"model.* [{name}]", default=None, allowed="-", help=f"[{name}] {why}")])
    i = next(i for i, r in enumerate(rows) if r.key == "model")  # the model names, the entry points among them
    rows[i] = rows[i]._replace(allowed=" | ".join(sorted({*MODELS, *plugins})) + " | package.module:ConfigClass")
    if args.json:
        print(json.dumps({"tasks": sorted(TASK_CONFIGS), "models": [*MODELS, *plugins], "plugins": plugins,
                          "backends": list(BACKEND_NAMES), "keys": [row._asdict() for row in rows]}, indent=2))
        return 0
    print("tasks:    " + ", ".join(sorted(TASK_CONFIGS)))
    print("models:   " + ", ".join(MODELS))
    if plugins:
        print("plugins:  " + ", ".join(f"{name} ({value})" for name, value in plugins.items())
              + f"  (entry points, group {GROUP})")
    print("          or any import path: model=package.module:ConfigClass")
    print("backends: " + ", ".join(BACKEND_NAMES) + "  (recurrent models)")
    print("\nconfig keys (seqbench run key=value ...; [name]: only for that task or model):")
    key_w, default_w = max(len(r.key) for r in rows) + 2, max(len(user_text(r.default)) for r in rows) + 2
    allowed_w = max(len(r.allowed) for r in rows) + 2
    print(f"  {'key':<{key_w}}{'default':<{default_w}}{'allowed':<{allowed_w}}meaning")
    for r in rows:
        print(f"  {r.key:<{key_w}}{user_text(r.default):<{default_w}}{r.allowed:<{allowed_w}}{r.help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="seqbench", description="Benchmark sequence architectures on long-dependency tasks. "
                     "`seqbench COMMAND --help` describes a command; `seqbench list` every config key.")
    parser.add_argument("--version", action="version", version=f"seqbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="train one configuration and record it")
    run.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                     help="config overrides anywhere on the line, e.g. task=copy model.hidden=128 (default: none: the "
                          "defaults `seqbench list` shows)")
    run.add_argument("--out", default="results/runs", help="output folder; the record goes to OUT/<run_id>/")
    run.add_argument("--config", help="a config file to start from: YAML or JSON, in the forms of a sweep's base "
                                      "(task: adding, dotted keys, nested sections), e.g. a record's config.json")
    run.add_argument("--force", action="store_true", help="run again even if this run_id is already recorded")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved config, its run_id and memory estimate; train nothing, write nothing")
    run.add_argument("--json", action="store_true", help="with --dry-run: print it as JSON")
    add_tracker_flag(run)
    run.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a sweep spec (YAML file or preset name), resumably")
    from importlib import resources

    # the preset files, as sweep.presets() finds them (sweep.py itself imports torch: --help must answer at once)
    presets = sorted(p.name.removesuffix(".yaml") for p in (resources.files(__package__) / "sweeps").iterdir()
                     if p.name.endswith(".yaml"))
    sw.add_argument("spec", metavar="SPEC|PRESET", help="a sweep spec (YAML file) or a preset: " + ", ".join(presets))
    sw.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                    help="overrides applied to every run, over the spec's base, grid and zip, anywhere on the line "
                         "(default: none); the seeds come from the spec's `seeds:`")
    sw.add_argument("--workers", type=int, help="parallel runs (default: one per GPU, else one per core up to 8)")
    sw.add_argument("--out", default="results", help="output folder; records go to OUT/<sweep name>/")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and what is already done; run nothing")
    sw.add_argument("--json", action="store_true", help="with --dry-run: print the list as JSON")
    sw.add_argument("--retry-failed", action="store_true",
                    help="run again the runs whose record says failed (each old record is replaced only once the new "
                         "run is finished); without it a failed run is not rerun")
    sw.add_argument("--force", action="store_true", help="run every run again, finished or not")
    from .executors import add_arguments as add_executor_arguments

    add_executor_arguments(sw)
    add_tracker_flag(sw)
    sw.set_defaults(func=cmd_sweep)
    rpt = sub.add_parser("report", help="figures, tables and an HTML/Markdown page from any results folder")
    rpt.add_argument("dir", metavar="DIR", help="a results folder: single runs or sweeps, nested")
    rpt.add_argument("--out", help="output folder (default: DIR/report)")
    rpt.add_argument("--strict", action="store_true",
                     help="refuse a folder whose runs come from more than one commit or from a tree with uncommitted "
                          "changes (without it: a warning on stderr and on the page)")
    rpt.set_defaults(func=cmd_report)
    rep = sub.add_parser("reproduce", help="rerun a recorded run from its config.json and compare the records")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run's record folder (results/.../<run_id>)")
    rep.add_argument("--rtol", type=float,
                     help="relative tolerance for the `within rtol` verdict; 0 = bits only (default: 1e-3)")
    rep.add_argument("--threads", type=int, help="rerun with this many CPU threads; another count than the recorded "
                                                 "one shows how far scheduling alone moves the result (default: the "
                                                 "recorded count)")
    rep.add_argument("--keep", help="write the rerun's record to this folder (default: a temporary folder, removed)")
    rep.add_argument("--quiet", action="store_true", help="no progress output")
    rep.set_defaults(func=cmd_reproduce)
    from .config import DTYPE_NAMES
    from .models.configs import BACKEND_NAMES, GATES, MIN_GATES, SCAN_CELLS

    bn = sub.add_parser("bench", help="time recurrent layers per backend (checked against the reference first)")
    cells = (*GATES, *MIN_GATES, *SCAN_CELLS)
    bn.add_argument("--cells", type=_csv(str, cells), default=list(GATES),
                    help="recurrent cells, a comma list of " + ", ".join(cells)
                    + " (minGRU/minLSTM: torch = the log-space scan in torch; lru, mamba: torch = their chunked scan, "
                      "triton = the same scan, recorded as a fallback)")
    bn.add_argument("--backends", type=_csv(str, BACKEND_NAMES), default=["torch", "triton"],
                    help="backends, a comma list of " + ", ".join(BACKEND_NAMES))
    bn.add_argument("--batch", type=_csv(int), default=[64], help="batch sizes, a comma list")
    bn.add_argument("--hidden", type=_csv(int), default=[64, 128, 256, 512], help="hidden sizes (= input sizes)")
    bn.add_argument("--length", type=_csv(int), default=[1024], help="sequence lengths")
    bn.add_argument("--dtype", type=_csv(str, DTYPE_NAMES), default=["float32"],
                    help="dtypes, a comma list of " + ", ".join(DTYPE_NAMES) + " (bfloat16 on CUDA only)")
    bn.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto = cuda when available, else cpu")
    bn.add_argument("--no-memory-check", action="store_true",
                    help="time even sizes whose estimated memory exceeds what the device has available")
    bn.add_argument("--no-tf32", action="store_true",
                    help="float32 with IEEE products everywhere: no TF32 in cuDNN or cuBLAS (the fused kernels never "
                         "use it); without it torch's settings apply (cuDNN may use TF32)")
    bn.add_argument("--out", default="results/bench", help="folder; results go to OUT/<device>/bench-<time>.json")
    bn.set_defaults(func=cmd_bench)
    lst = sub.add_parser("list", help="tasks, models, backends and every config key with its default")
    lst.add_argument("--json", action="store_true", help="print it as JSON")
    lst.set_defaults(func=cmd_list)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.command_line = shlex.join(["seqbench", *(sys.argv[1:] if argv is None else argv)])  # as recorded
        if args.command is None:  # bare `seqbench`: what it can do
            parser.print_help()
            return EXIT_BAD_INPUT
        code = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is seen below and not at exit
        return code
    except ConfigError as e:
        print(f"seqbench: error: {' '.join(str(e).split(chr(10)))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    except BrokenPipeError:  # `seqbench sweep quick --dry-run | head`: the reader has gone; stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE


def entry() -> None:
    """The console command: `main()`, then the exit handlers every library registered (Ray's shutdown of an instance
    the command started, the trackers' last uploads), then the process ends without the interpreter's teardown of its
    modules: with torch and torch._dynamo loaded that teardown alone took 1.3-1.7 CPU-s on this project's machine,
    after every result had been written."""
    code = main()
    exit_now(code)


def exit_now(code: int) -> None:
    """End this process with `code` as a normal exit would, minus the teardown of its modules: non-daemon threads are
    waited for, exit handlers run and the standard streams are flushed, then `os._exit`."""
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: the usual exit
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
