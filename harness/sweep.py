"""Sweeps: a YAML spec (a base config, a grid, zipped lists, seeds) expanded into runs and carried out by an executor.

Records go to `OUT/<sweep name>/<run_id>/`, the same records `seqbench run` writes; a finished run is never run again,
an unfinished one resumes from its checkpoint, and the sweep folder gets `sweep.json` and a consolidated `runs.parquet`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import sys
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import OPERATIONAL_KEYS, ConfigError, RunConfig, from_mapping, merge, read_yaml, resolve, user_text
from .dotted import flatten
from .loaders import load_runs
from .provenance import git_state
from .resources import Resources, SlurmSettings
from .records import CHECKPOINT, read_json, read_summary, remove_stale_temps, write_json
from .status import FINISHED, Status
from .runs import Outcome

#: what a sweep's run can come back as (status.Status), in the order the tally names them
STATUSES = tuple(status.value for status in Status)
#: the most runs one sweep may have: counted before the points are expanded, so that `seeds: 100000000` or a grid of
#: ten keys with ten values each is refused in one line instead of exhausting memory (100,000 runs expand in about a
#: minute and a couple of GiB; split a larger study into several sweeps)
MAX_RUNS = 100_000
#: what a tuned sweep may select by (the evaluation set's final values; never the test set's) and which way is better
TUNE_METRICS = {"eval_accuracy": "max", "eval_loss": "min"}


class TuneSpec(BaseModel):
    """`tune:` of a spec: candidate values of some config keys, tried on selection seeds at every point of the grid;
    the best by `metric` then runs on the spec's seeds (see `harness.tune`)."""

    model_config = ConfigDict(extra="forbid")

    keys: dict[str, list] = Field(description="config key -> candidate values; every combination is a candidate")
    seeds: list[int] = Field(description="the selection seeds, none of them one of the spec's (final) seeds")
    metric: str | None = Field(None, description="eval_accuracy or eval_loss (default: eval_loss for the adding "
                                                 "task, else eval_accuracy)")

    @field_validator("keys")
    @classmethod
    def _candidates(cls, keys):
        if not keys:
            raise ValueError("no key to tune; give at least one, e.g. keys: {train.lr: [0.001, 0.003]}")
        for key, values in keys.items():
            if not values:
                raise ValueError(f"{key}: empty list; give at least one candidate value")
        return keys

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds):
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={seeds}: give a non-empty list of distinct selection seeds")
        return seeds

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric):
        if metric is not None and metric not in TUNE_METRICS:
            why = "; selection never looks at the test set" if str(metric).startswith("test_") else ""
            raise ValueError(f"{metric!r}: unknown metric; allowed: eval_accuracy (higher is better), eval_loss "
                             f"(lower is better){why}")
        return metric

    def candidate_count(self) -> int:
        return math.prod(len(values) for values in self.keys.values())


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the sweep's folder name under --out")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="config keys, as for seqbench run")
    grid: dict[str, list] = Field(default_factory=dict, description="key -> values: every combination runs")
    zip: dict[str, list] | list[dict[str, list]] = Field(default_factory=list,
                                                         description="key -> values varied together (equal lengths)")
    seeds: int | list[int] = Field(1, description="a count (seeds 0..n-1) or an explicit list")
    resources: Resources = Field(default_factory=Resources, description="what each run asks of Ray or SLURM")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings, description="the SLURM array job's settings")
    tune: TuneSpec | None = Field(None, description="tune some keys per point on selection seeds first")

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid):
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid.{key}: empty list; give at least one value")
        return grid

    @field_validator("zip")
    @classmethod
    def _equal_lengths(cls, groups):
        for group in [groups] if isinstance(groups, dict) else groups:
            lengths = {key: len(values) for key, values in group.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip lists must have equal lengths, got {lengths}")
            if 0 in lengths.values():
                raise ValueError(f"zip.{next(iter(lengths))}: empty list")
        return groups

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds):
        if isinstance(seeds, int) and seeds < 1:
            raise ValueError(f"seeds={seeds}: give a count >= 1 or a list of seeds")
        if isinstance(seeds, list) and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError(f"seeds={seeds}: give a non-empty list of distinct seeds")
        return seeds

    def zip_groups(self) -> list[dict[str, list]]:
        """The zip groups that vary something (`zip: {}` varies nothing: it is no group, not a group of no rows)."""
        return [g for g in ([self.zip] if isinstance(self.zip, dict) else self.zip) if g]

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def seed_count(self) -> int:
        return self.seeds if isinstance(self.seeds, int) else len(self.seeds)

    def point_count(self) -> int:
        """How many points the grid and zip groups make (seeds aside), without expanding a single one."""
        grid = math.prod(len(values) for values in self.grid.values())
        return grid * math.prod(len(next(iter(group.values()))) for group in self.zip_groups())

    def run_count(self) -> int:
        """How many runs the spec makes (points x seeds, plus points x candidates x selection seeds when tuned)."""
        tuned = self.tune.candidate_count() * len(self.tune.seeds) if self.tune else 0
        return self.point_count() * (self.seed_count() + tuned)


def presets() -> dict[str, Path]:
    folder = resources.files(__package__) / "sweeps"
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_spec(spec: str) -> tuple[SweepSpec, Path]:
    """A sweep spec from a YAML file, or a preset shipped with seqbench by its name."""
    path = Path(spec)
    if not path.is_file():
        known = presets()
        if spec not in known:
            raise ConfigError(f"sweep {spec!r}: no such file and no such preset; presets: {', '.join(sorted(known))}")
        path = known[spec]
    data = read_yaml(path, "sweep")  # a key given twice in one mapping is refused, not "the last one wins"
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with name, base, grid, zip, seeds")
    try:
        return SweepSpec.model_validate(data), path
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed: {', '.join(_fields_at(err['loc'][:-1]))}"
        raise ConfigError(f"{path}: {key}: {msg}") from None


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed in the spec's section at `loc` (the top level, `resources`, `slurm`)."""
    model = SweepSpec
    for part in loc:
        inner = model.model_fields.get(str(part))
        # `tune: TuneSpec | None`: the section's model is the union's BaseModel member
        kinds = [inner.annotation, *typing.get_args(inner.annotation)] if inner is not None else []
        section = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if section is None:
            break
        model = section
    return list(model.model_fields)


def grid_points(spec: SweepSpec) -> list[dict]:
    """The sweep's points up to the seeds, as {dotted key: value}: grid product x each zip group's rows."""
    grid = [[(k, v) for v in values] for k, values in spec.grid.items()]
    zips = [[tuple(zip(group, row)) for row in zip(*group.values())] for group in spec.zip_groups()]
    out = []
    for combo in itertools.product(*grid, *zips):
        point: dict = {}
        for part in combo:
            point.update(dict(part) if isinstance(part[0], tuple) else dict([part]))
        out.append(point)
    return out


def points(spec: SweepSpec) -> list[dict]:
    """The sweep's points as {dotted key: value}: grid product x each zip group's rows x seeds."""
    return [{**point, "seed": seed} for point in grid_points(spec) for seed in spec.seed_list()]


def expand(spec: SweepSpec, source: Path, overrides: dict) -> list[RunConfig]:
    """Every run of the sweep as a resolved config, in the spec's order. The command line's overrides apply on top of
    the base and of every point (`train.steps=50` shortens every run, whatever the grid says). Refused: a key varied
    in two places, an override of `seed` (the spec's `seeds:` sets it), and two points that are the same run.
    A tuned sweep's runs depend on its selection: see `harness.tune`."""
    check_spec(spec, source, overrides)
    return configs_at(spec, source, overrides, points(spec))


def check_spec(spec: SweepSpec, source: Path, overrides: dict) -> None:
    """What expanding the sweep would refuse before its first point: too many runs, a key varied twice, seeds set
    elsewhere than in `seeds:`."""
    check_size(spec, source)
    _check_varied_once(spec, source)
    if "seed" in flatten(overrides):
        raise ConfigError(f"seed={user_text(flatten(overrides)['seed'])}: sweep {spec.name} sets the seeds itself "
                          f"(seeds: {spec.seeds} in {source}); give the seeds in a spec file's `seeds:`")


def configs_at(spec: SweepSpec, source: Path, overrides: dict, at: list[dict]) -> list[RunConfig]:
    """The runs at the points `at` ({dotted key: value}, seed included) as resolved configs: the spec's base, then
    the point, then the overrides. Two points that are the same run are refused, naming both."""
    base = from_mapping(spec.base, f"{source}: base: ")
    configs: dict[str, RunConfig] = {}
    where: dict[str, str] = {}
    points_by_id: dict[str, dict] = {}
    for point in at:
        here = ", ".join(f"{k}={user_text(v)}" for k, v in point.items())
        try:
            cfg = resolve(merge(merge(base, from_mapping(point, f"{source}: ")), overrides))
        except ConfigError as e:
            raise ConfigError(f"{source}: at {here}: {e}") from None
        if cfg.run_id in configs:
            pair = f"the points {where[cfg.run_id]} and {here}"
            varied = {k for p in (point, points_by_id[cfg.run_id]) for k in flatten(from_mapping(p))}
            blamed = [(k, v) for k, v in flatten(overrides).items() if k in varied]
            if blamed:
                raise ConfigError(f"{blamed[0][0]}={user_text(blamed[0][1])}: sweep {spec.name} varies it, and the "
                                  f"override makes {pair} the same run ({cfg.run_id}); leave it out or change the spec")
            raise ConfigError(f"{source}: {pair} are the same run ({cfg.run_id}); remove one (keys such as "
                              f"{', '.join(OPERATIONAL_KEYS)} do not make a new run)")
        configs[cfg.run_id], where[cfg.run_id], points_by_id[cfg.run_id] = cfg, here, point
    return list(configs.values())


def check_size(spec: SweepSpec, source: Path) -> None:
    """ConfigError, before a single point is expanded, when the spec makes more than MAX_RUNS runs: naming `seeds`
    when the seeds alone are too many, else the grid and zip groups that multiply them."""
    total = spec.run_count()
    if total <= MAX_RUNS:
        return
    bound = f"a sweep may have at most {MAX_RUNS:,} runs"
    if spec.tune:
        raise ConfigError(f"{source}: grid x zip x (seeds + tune candidates x tune seeds) make {total:,} runs "
                          f"({spec.point_count():,} points x ({spec.seed_count():,} + {spec.tune.candidate_count():,}"
                          f" x {len(spec.tune.seeds):,})); {bound}: vary or tune fewer values, or split the study")
    if spec.seed_count() > MAX_RUNS:
        raise ConfigError(f"{source}: seeds: {spec.seed_count():,} seeds are {spec.seed_count():,} runs; {bound}: "
                          "give fewer seeds (or split the study into several sweeps)")
    parts = [*(f"grid.{key}: {len(values):,} values" for key, values in spec.grid.items()),
             *(f"zip group {i + 1}: {len(next(iter(g.values()))):,} rows" for i, g in enumerate(spec.zip_groups())),
             f"seeds: {spec.seed_count():,}"]
    raise ConfigError(f"{source}: grid x zip x seeds make {total:,} runs ({' x '.join(parts)}); {bound}: vary fewer "
                      "values, or split the study into several sweeps")


def _check_varied_once(spec: SweepSpec, source: Path) -> None:
    """A key varied by the grid and a zip group (or by two groups) would silently take one of its values; `seed` is
    what `seeds:` varies, so it may be neither varied nor fixed in the base (where it was once silently replaced)."""
    if "seed" in spec.base:
        raise ConfigError(f"{source}: base.seed: the sweep sets each run's seed from `seeds:` (a count, or a list such "
                          f"as seeds: [{user_text(spec.base['seed'])}]); remove base.seed and give the seeds there")
    seen: dict[str, str] = {}
    for place, keys in [("grid", list(spec.grid)), *((f"zip group {i + 1}", list(g))
                                                      for i, g in enumerate(spec.zip_groups()))]:
        for key in keys:
            if key == "seed":
                raise ConfigError(f"{source}: {place}: seed: give the seeds with `seeds:` (a count or a list)")
            if key in seen:
                raise ConfigError(f"{source}: {key}: varied twice (in {seen[key]} and {place}); vary it in one place")
            seen[key] = place


def run_state(run_dir: Path) -> str:
    summary = read_summary(run_dir)
    if summary is not None:
        return f"done ({summary['status']})"
    if (run_dir / CHECKPOINT).exists():
        return "partial (resumes from its checkpoint)"
    return "to run"


def varied_keys(spec: SweepSpec) -> list[str]:
    """The keys the sweep's grid and zip groups vary (seeds aside), in the spec's order."""
    return [k for k in dict.fromkeys([*spec.grid, *(k for g in spec.zip_groups() for k in g)]) if k != "seed"]


def entry_keys(spec: SweepSpec) -> dict[str, list[str]]:
    """For `model` and `task` varied as whole entries: the keys besides the name that any entry sets, in order of
    first appearance ({"model": ["layers"]} for `model: [mingru, {name: mingru, layers: 2}]`); a key the sweep also
    varies on its own (`model.hidden` in the grid) is left to its own column."""
    # asked once per run (a dry run of 9,000 runs spent 0.8 s here uncached): cached by the grid and zip groups
    return _entry_keys(json.dumps([spec.grid, spec.zip_groups()], default=str))


@functools.lru_cache(maxsize=16)
def _entry_keys(varied_json: str) -> dict[str, list[str]]:
    grid, zips = json.loads(varied_json)
    groups = [grid, *zips]
    varied = {k for g in groups for k in g}
    out = {}
    for section in ("model", "task"):
        entries = [v for g in groups for v in g.get(section, [])]
        keys = (k.removeprefix(section + ".") for e in entries for k in flatten(from_mapping({section: e})))
        out[section] = [k for k in dict.fromkeys(keys) if k != "name" and f"{section}.{k}" not in varied]
    return out


def point_of(cfg: RunConfig, keys: list[str], spec: SweepSpec) -> tuple:
    """A run's values of `keys`. A `task`/`model` entry is labelled by its name and the value of every key the sweep's
    entries for it set ("mingru layers=2"): by its name alone, runs of different configurations would share a label
    (and a row of the results table)."""
    flat = flatten(cfg.canonical())
    labelled = entry_keys(spec)

    def value(key: str):
        if key not in labelled:
            return flat.get(key)
        parts = [f"{k}={user_text(flat[f'{key}.{k}'])}" for k in labelled[key] if f"{key}.{k}" in flat]
        return " ".join([str(flat.get(key + ".name")), *parts])

    return tuple(user_text(v) if isinstance(v, list) else v for v in map(value, keys))  # hashable: eval.lengths


def shown_keys(spec: SweepSpec) -> list[str]:
    """The keys that tell a sweep's runs apart: those it varies, those it tunes, the seed."""
    return [*varied_keys(spec), *(spec.tune.keys if spec.tune else []), "seed"]


def describe_point(cfg: RunConfig, spec: SweepSpec) -> str:
    """The values that vary across the sweep, for one run."""
    keys = shown_keys(spec)
    return " ".join(f"{k}={v}" for k, v in zip(keys, point_of(cfg, keys, spec)))


def recorded_threads(sweep_dir: Path, workers: int) -> tuple[int, str]:
    """CPU threads per run for the runs of this sweep that set none: decided when the sweep first runs (its share of
    the cores, `threads_per_worker`) and kept in sweep.json, so resuming with another --workers changes no bits.
    Returns (threads, a note for the user when they come from the record)."""
    from .executors.base import threads_per_worker

    try:
        recorded = read_json(sweep_dir / "sweep.json").get("threads")
    except (OSError, ValueError):
        recorded = None
    if not recorded:
        return threads_per_worker(workers), ""
    note = ""
    if recorded != threads_per_worker(workers):
        note = (f" (recorded when this sweep first ran; --workers {workers} alone would give "
                f"{threads_per_worker(workers)}: pass threads=N to change it for runs not yet started)")
    return recorded, note


def to_rerun(configs: list[RunConfig], sweep_dir: Path, force: bool, retry_failed: bool) -> frozenset[str]:
    """The finished runs to run again: all of them with --force, the failed ones with --retry-failed."""
    def wanted(run_dir: Path) -> bool:
        summary = read_summary(run_dir)
        return summary is not None and (force or (retry_failed and summary.get("status") == "failed"))
    return frozenset(c.run_id for c in configs if (force or retry_failed) and wanted(sweep_dir / c.run_id))


def write_sweep_file(sweep_dir: Path, spec: SweepSpec, source: Path, overrides: list[str],
                     configs: list[RunConfig], threads: int, extra: dict | None = None) -> None:
    """sweep.json: the spec, overrides, run_ids, thread share, command and commit; `extra` adds fields (a tuned
    sweep's `tuned`, `tuning`, `selection_run_ids`)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(sweep_dir)
    write_json(sweep_dir / "sweep.json", {
        "name": spec.name, "spec": spec.model_dump(mode="json"), "source": str(source), "overrides": overrides,
        "run_ids": [c.run_id for c in configs], "threads": threads,
        "command": " ".join(["seqbench", *sys.argv[1:]]), **git_state(), **(extra or {}),
    })


def write_runs_table(sweep_dir: Path, run_ids: list[str]) -> Path:
    """The consolidated runs table of this sweep (Parquet), readable with `load_runs(path)` or pandas."""
    runs = load_runs(sweep_dir)
    runs = runs[runs.run_id.isin(run_ids)].reset_index(drop=True)
    runs = runs.astype({c: "string" for c in runs.columns if runs[c].dtype == object})  # mixed None/str/number
    path = sweep_dir / "runs.parquet"
    tmp = path.with_name(f".runs.parquet.tmp-{os.getpid()}")
    runs.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def tally(results: list[Outcome]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts["skipped" if r.get("skipped") else r["status"]] += 1
    return counts


def report_lines(name: str, results: list[Outcome], sweep_dir: Path) -> list[str]:
    counts = tally(results)
    earlier = {k: sum(r.get("skipped", False) and r["status"] == k for r in results) for k in FINISHED}
    parts = [f"{k} {v}" + (f" (recorded earlier: {', '.join(f'{s} {n}' for s, n in earlier.items() if n)})"
                           if k == "skipped" and v else "") for k, v in counts.items()
             if v or k != "interrupted"]  # named only when it happened: the usual line stays as it was
    lines = [f"sweep {name}: {len(results)} runs - " + ", ".join(parts)]
    lines += [f"  failed  {r['run_id']} {r.get('model')}/{r.get('task')}: {r.get('error')}"
              for r in results if r["status"] == "failed" and not r.get("skipped")]
    if earlier["failed"]:
        command = " ".join(["seqbench", *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else "seqbench sweep ..."
        lines.append(f"  {earlier['failed']} run(s) recorded as failed were not run again; to retry them: "
                     f"{command} --retry-failed")
    lines += [f"  busy    {r['run_id']}: held by another process; run the sweep again once it is done"
              for r in results if r["status"] == "busy"]
    lines += [f"  interrupted {r['run_id']} " + (f"at step {r['step']}: stopped by a signal" if r.get("step") is not None
                                                 else "before it started: its worker was stopped by a signal")
              + "; run the sweep again to resume it" for r in results if r["status"] == "interrupted"]
    lines.append(f"  records: {sweep_dir}  table: {sweep_dir / 'runs.parquet'}")
    return lines


def results_table(spec: SweepSpec, configs: list[RunConfig], sweep_dir: Path) -> str:
    """The sweep's results at a glance, one row per point of the sweep up to the seeds: final eval loss and accuracy
    (mean over the seeds whose runs completed) and how many runs met the task's solved criterion. A tuned sweep's
    rows also show the values chosen for its tuned keys."""
    keys = [*varied_keys(spec), *(spec.tune.keys if spec.tune else [])]
    rows: dict[tuple, list[dict]] = {}
    for cfg in configs:
        summary = read_summary(sweep_dir / cfg.run_id) or {"status": "incomplete"}
        rows.setdefault(point_of(cfg, keys, spec), []).append(summary)
    header = [*(k.removesuffix(".name") for k in keys), "runs", "final eval loss", "accuracy", "solved"]
    lines = [header]
    for point, summaries in rows.items():
        done = [s for s in summaries if s.get("status") == "completed"]
        loss = [s["final"]["eval_loss"] for s in done if (s.get("final") or {}).get("eval_loss") is not None]
        acc = [s["final"]["eval_accuracy"] for s in done if (s.get("final") or {}).get("eval_accuracy") is not None]
        solved = sum(s.get("status") == "completed" and s.get("solved_step") is not None for s in summaries)
        other = sorted({s.get("status") for s in summaries} - {"completed"})
        lines.append([*map(str, point), f"{len(done)}/{len(summaries)}" + (f" ({', '.join(other)})" if other else ""),
                      f"{sum(loss) / len(loss):.3g}" if loss else "-", f"{sum(acc) / len(acc):.3f}" if acc else "-",
                      f"{solved}/{len(summaries)}"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(w) if i >= len(keys) else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in lines]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])
