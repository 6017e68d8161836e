"""The `seqbench` command: `run` one configuration, `list` what can be configured."""

from __future__ import annotations

import argparse
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

    raw = _load_config_file(args.config) if args.config else {}
    cfg = resolve(merge(raw, parse_overrides(args.overrides)))
    summary, run_dir = execute(cfg, Path(args.out), progress=not args.quiet, force=args.force)
    print(describe_summary(summary, run_dir))
    return 1 if summary["status"] == "failed" else 0


def describe_summary(s: dict, run_dir: Path) -> str:
    head = f"run {s['run_id']}: {s['model']} on {s['task']} - {s['status']}"
    if s.get("skipped"):
        head += " (already recorded; pass --force to run it again)"
    if s["status"] == "failed":
        return f"{head}: {s.get('error')}\n  record: {run_dir}"
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


def cmd_list(args) -> int:
    from kernels import reference  # noqa: F401  (import check: the registries below are complete)

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
