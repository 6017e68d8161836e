"""The `seqbench` command: `run` one configuration, `sweep` many, `report` on results, `reproduce` a record,
`list` what can be configured."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

import yaml

from .config import ConfigError, describe_keys, merge, parse_overrides, resolve

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2: the same rule as every other bad input
        raise ConfigError(message)


def _load_config_file(path: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())  # JSON is YAML
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config {path}: cannot read: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config keys")
    return data


def cmd_run(args) -> int:
    from .train import execute  # after validation, so bad input fails fast

    from .train import RunInterrupted

    raw = _load_config_file(args.config) if args.config else {}
    cfg = resolve(merge(raw, parse_overrides(args.overrides)))
    try:
        summary, run_dir = execute(cfg, Path(args.out), progress=not args.quiet, force=args.force)
    except RunInterrupted as e:
        print(f"run {cfg.run_id}: {e}; run the same command again to resume", file=sys.stderr)
        return 130
    print(describe_summary(summary, run_dir))
    return 1 if summary["status"] == "failed" else 0


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
        solved = f"at step {s['solved_step']}" if s["solved_step"] is not None else "not reached"
        lines.append(f"  solved ({s['solved_criterion']}): {solved}")
    lines.append(f"  record: {run_dir}")
    return "\n".join(lines)


def cmd_sweep(args) -> int:
    from .executors import default_workers
    from .records import is_finished
    from .sweep import describe_point, expand, load_spec, recorded_threads, run_state, to_rerun

    spec, source = load_spec(args.spec)
    configs = expand(spec, source, parse_overrides(args.overrides))
    sweep_dir = Path(args.out) / spec.name
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    if args.ray_address and args.executor != "ray":
        raise ConfigError("--ray-address needs --executor ray")
    if args.force and args.retry_failed:
        raise ConfigError("--force reruns every run, failed ones included; give --force or --retry-failed, not both")
    rerun = to_rerun(configs, sweep_dir, args.force, args.retry_failed)
    if args.dry_run:
        for cfg in configs:
            again = "  (runs again)" if cfg.run_id in rerun else ""
            print(f"{cfg.run_id}  {run_state(sweep_dir / cfg.run_id):<38} {describe_point(cfg, spec)}{again}")
        todo = sum(not is_finished(sweep_dir / c.run_id) or c.run_id in rerun for c in configs)
        print(f"sweep {spec.name}: {len(configs)} runs, {todo} to run, {len(configs) - todo} already done "
              f"-> {sweep_dir}")
        return 0
    workers = args.workers or default_workers(configs[0].device)
    threads, note = recorded_threads(sweep_dir, workers)
    return _run_sweep(args, spec, source, configs, sweep_dir, workers, threads, note, rerun)


def _run_sweep(args, spec, source, configs, sweep_dir, workers, threads, note, rerun) -> int:
    from .executors import run_local, run_ray
    from .progress import SweepProgress
    from .records import is_finished, read_summary, wait_for_claim
    from .sweep import report_lines, results_table, to_rerun, write_runs_table, write_sweep_file

    write_sweep_file(sweep_dir, spec, source, args.overrides, configs, threads)
    results = []
    todo = [c for c in configs if not is_finished(sweep_dir / c.run_id) or c.run_id in rerun]
    print(f"sweep {spec.name}: {len(configs)} runs ({len(configs) - len(todo)} already recorded), "
          f"executor {args.executor}, {workers} workers, {threads} threads per run{note} -> {sweep_dir}",
          file=sys.stderr)
    todo_ids = {c.run_id for c in todo}
    try:
        with SweepProgress(len(configs), spec.name) as bar, _sigterm_as_interrupt():
            for cfg in configs:
                if cfg.run_id not in todo_ids:
                    results.append({**read_summary(sweep_dir / cfg.run_id), "skipped": True})
                    bar.finished(results[-1])
            while todo:
                runs = (run_ray(todo, sweep_dir, threads, args.ray_address, bar.step, rerun=rerun)
                        if args.executor == "ray" else run_local(todo, sweep_dir, workers, threads, bar.step, rerun))
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
    except KeyboardInterrupt:
        write_runs_table(sweep_dir, [c.run_id for c in configs])
        print(f"sweep {spec.name}: interrupted; runs in flight were checkpointed. Run the same command to resume.",
              file=sys.stderr)
        return 130
    write_runs_table(sweep_dir, [c.run_id for c in configs])
    print(results_table(spec, configs, sweep_dir))
    print("\n".join(report_lines(spec.name, results, sweep_dir)))
    return 1 if any(r["status"] in ("failed", "interrupted") for r in results) else 0


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
    from .report import build_report

    results = Path(args.dir)
    if not results.is_dir():
        raise ConfigError(f"{results}: no such folder; give a results folder (e.g. results/quick)")
    try:
        index = build_report(results, Path(args.out) if args.out else None)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
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
    import torch

    from .bench import run_bench

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch.cuda.is_available() is False")
    if "bfloat16" in args.dtype and device != "cuda":
        raise ConfigError("--dtype bfloat16 needs --device cuda")
    path = run_bench(args.cells, args.backends, args.batch, args.hidden, args.length, args.dtype, device, args.out,
                     tf32=not args.no_tf32)
    print(f"bench results: {path}")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import DEFAULT_RTOL, environment_changes, overall, reproduce

    rtol = DEFAULT_RTOL if args.rtol is None else args.rtol
    if not rtol >= 0:  # also refuses nan
        raise ConfigError(f"--rtol {args.rtol}: must be a number >= 0 (0 = only identical bits agree)")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be >= 1")
    quantities, summary = reproduce(Path(args.run_dir), args.keep, progress=not args.quiet, threads=args.threads)
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
    if changes:
        print("environment differs from the record: "
              + "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
        print("  (bitwise agreement is expected only on the same machine and software; elsewhere within a tolerance)")
    else:
        print("environment: same as the record (commit, software, device, threads)")
    verdict = overall(quantities, rtol)
    print(f"verdict: {verdict}" + ("" if verdict == "identical" else f" (rtol {rtol:g})"))
    return 1 if verdict == "differs" else 0


def cmd_list(args) -> int:
    from ..kernels import reference  # noqa: F401  (import check: the registries below are complete)

    from .config import TASK_CONFIGS
    from .models import MODELS
    from .models.recurrent import BACKENDS

    print("tasks:    " + ", ".join(sorted(TASK_CONFIGS)))
    print("models:   " + ", ".join(MODELS))
    print("backends: " + ", ".join(BACKENDS) + "  (recurrent models)")
    print("\nconfig keys (seqbench run key=value ...):")
    rows = describe_keys()
    width = max(len(k) for k, _, _ in rows) + 2
    for key, default, help_ in rows:
        print(f"  {key:<{width}}{default:<12}{help_}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seqbench", description="Benchmark sequence architectures on long-dependency tasks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="train one configuration and record it")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. task=copy model.hidden=128")
    run.add_argument("--out", default="results/runs", help="output folder (default: results/runs)")
    run.add_argument("--config", help="a config file (YAML or JSON, e.g. a record's config.json) to start from")
    run.add_argument("--force", action="store_true", help="run again even if this run_id is already recorded")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a sweep spec (YAML file or preset name), resumably")
    sw.add_argument("spec", metavar="SPEC|PRESET")
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to the sweep's base config")
    sw.add_argument("--executor", choices=("local", "ray", "slurm"), default="local")
    sw.add_argument("--workers", type=int, help="parallel runs (default: one per GPU, else one per core up to 8)")
    sw.add_argument("--ray-address", help="connect to this Ray cluster (default: start a local one)")
    sw.add_argument("--out", default="results", help="output folder; records go to OUT/<sweep name>/ (default: results)")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and what is already done; run nothing")
    sw.add_argument("--retry-failed", action="store_true",
                    help="run again the runs whose record says failed (each old record is replaced only once the new "
                         "run is finished); without it a failed run is not rerun")
    sw.add_argument("--force", action="store_true", help="run every run again, finished or not")
    from .resources import add_arguments as add_resource_arguments

    add_resource_arguments(sw)
    sw.set_defaults(func=cmd_sweep)
    rpt = sub.add_parser("report", help="figures, tables and an HTML/Markdown page from any results folder")
    rpt.add_argument("dir", metavar="DIR", help="a results folder: single runs or sweeps, nested")
    rpt.add_argument("--out", help="output folder (default: DIR/report)")
    rpt.set_defaults(func=cmd_report)
    rep = sub.add_parser("reproduce", help="rerun a recorded run from its config.json and compare the records")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--rtol", type=float,
                     help="relative tolerance for the `within rtol` verdict (default: 1e-3); 0 = bits only")
    rep.add_argument("--threads", type=int, help="rerun with this many CPU threads instead of the recorded count "
                                                 "(to see how far scheduling alone moves the result)")
    rep.add_argument("--keep", help="write the rerun's record to this folder instead of a temporary one")
    rep.add_argument("--quiet", action="store_true", help="no progress output")
    rep.set_defaults(func=cmd_reproduce)
    from .bench import DTYPES
    from .models.recurrent import BACKENDS

    bn = sub.add_parser("bench", help="time recurrent layers per backend (checked against the reference first)")
    bn.add_argument("--cells", type=_csv(str, ("rnn", "lstm", "gru")), default=["rnn", "lstm", "gru"])
    bn.add_argument("--backends", type=_csv(str, tuple(BACKENDS)), default=["torch", "triton"])
    bn.add_argument("--batch", type=_csv(int), default=[64])
    bn.add_argument("--hidden", type=_csv(int), default=[64, 128, 256, 512])
    bn.add_argument("--length", type=_csv(int), default=[1024])
    bn.add_argument("--dtype", type=_csv(str, tuple(DTYPES)), default=["float32"])
    bn.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    bn.add_argument("--no-tf32", action="store_true",
                    help="float32 with IEEE products everywhere: no TF32 in cuDNN or cuBLAS (the fused kernels never "
                         "use it); by default torch's settings apply (cuDNN may use TF32)")
    bn.add_argument("--out", default="results/bench", help="folder; results go to OUT/<device>/bench-<time>.json")
    bn.set_defaults(func=cmd_bench)
    lst = sub.add_parser("list", help="tasks, models, backends and every config key with its default")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ConfigError as e:
        print(f"seqbench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
