"""Tuned sweeps (`tune:` in a spec): at every point of the grid, each candidate of the tuned keys runs on the selection
seeds; the candidate with the best evaluation-set metric (mean over those seeds) then runs on the spec's own seeds.

Selection runs are ordinary runs of the sweep folder (resumed and skipped as any run); the candidates, their scores
and the choice go to `OUT/<sweep name>/tuning.json`. Selection reads `final.eval_*` only, never the test set.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

from .config import ConfigError, RunConfig, from_mapping, user_text
from .dotted import flatten
from .records import is_finished, read_summary, write_json
from .sweep import TUNE_METRICS, SweepSpec, check_spec, configs_at, grid_points, point_of, varied_keys

TUNING = "tuning.json"


@dataclasses.dataclass
class Point:
    """One point of a tuned sweep: its `label` (the grid's varied keys as the sweep labels them), its keys and values
    (`values`, seed aside), and per candidate its selection runs (one per selection seed)."""

    label: dict
    values: dict
    candidates: list[dict]
    selection: list[list[RunConfig]]

    def selection_ids(self) -> list[str]:
        return [c.run_id for runs in self.selection for c in runs]


def candidates(spec: SweepSpec) -> list[dict]:
    """Every combination of the tuned keys' values, in the spec's order (the first key varies slowest)."""
    keys = spec.tune.keys
    return [dict(zip(keys, combo)) for combo in itertools.product(*keys.values())]


def expand_selection(spec: SweepSpec, source: Path, overrides: dict) -> list[Point]:
    """The selection runs of a tuned sweep, point by point, resolved and checked: ConfigError for selection seeds
    that are also final seeds, a tuned key that the grid, a zip group or an override also sets, one that is not a
    config key of a point's runs, and a default metric that the sweep's tasks do not share."""
    check_spec(spec, source, overrides)
    _check_tune(spec, source, overrides)
    grid, cands, seeds = grid_points(spec), candidates(spec), spec.tune.seeds
    _check_keys_exist(spec, source, overrides, grid)
    runs = configs_at(spec, source, overrides, [{**p, **c, "seed": s} for p in grid for c in cands for s in seeds])
    keys, out = varied_keys(spec), []
    for i, values in enumerate(grid):
        mine = runs[i * len(cands) * len(seeds):(i + 1) * len(cands) * len(seeds)]
        selection = [mine[j * len(seeds):(j + 1) * len(seeds)] for j in range(len(cands))]
        out.append(Point(dict(zip(keys, point_of(mine[0], keys, spec))), values, cands, selection))
    metric(spec, source, [c for p in out for c in p.selection[0][:1]])  # a default metric the tasks share
    return out


def _check_tune(spec: SweepSpec, source: Path, overrides: dict) -> None:
    tune = spec.tune
    shared = sorted(set(tune.seeds) & set(spec.seed_list()))
    if shared:
        final = f"{spec.seeds} = 0..{spec.seeds - 1}" if isinstance(spec.seeds, int) else spec.seeds
        raise ConfigError(f"{source}: tune.seeds: {', '.join(map(str, shared))} also among the final seeds (seeds: "
                          f"{final}); selection seeds must differ from the final ones")
    # the keys each varied value sets ({name: rnn, hidden: 64} sets model.name and model.hidden)
    varied = {k: place for place, group in [("grid", spec.grid), *((f"zip group {i + 1}", g)
                                                                   for i, g in enumerate(spec.zip_groups()))]
              for key, values in group.items() for v in values for k in flatten(from_mapping({key: v}))}
    given = flatten(overrides)
    for key in tune.keys:
        if key in ("seed", "data_seed") or key.startswith("seed."):
            raise ConfigError(f"{source}: tune.keys.{key}: the seeds are not tuned (seeds: and tune.seeds set them)")
        clash = next((k for k in varied if _overlap(k, key)), None)
        if clash is not None:
            raise ConfigError(f"{source}: tune.keys.{key}: also set by the {varied[clash]} ({clash}); a key is either "
                              "varied or tuned")
        clash = next((k for k in given if _overlap(k, key)), None)
        if clash is not None:
            raise ConfigError(f"{clash}={user_text(given[clash])}: sweep {spec.name} tunes {key} (tune.keys in "
                              f"{source}); leave the override out or change the spec")


def _overlap(a: str, b: str) -> bool:
    """Whether dotted keys `a` and `b` set the same value (equal, or one a section holding the other)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _check_keys_exist(spec: SweepSpec, source: Path, overrides: dict, grid: list[dict]) -> None:
    """A tuned key that is not a config key of some point's runs, named before the points are expanded with it (where
    the error would name a whole point)."""
    seed = spec.seed_list()[0]
    for values, cfg in zip(grid, configs_at(spec, source, overrides, [{**p, "seed": seed} for p in grid])):
        flat = flatten(cfg.canonical())
        for key in spec.tune.keys:
            if not any(_overlap(k, key) for k in flat):
                here = ", ".join(f"{k}={user_text(v)}" for k, v in values.items()) or "every point"
                raise ConfigError(f"{source}: tune.keys.{key}: not a config key of the runs at {here} (model "
                                  f"{cfg.model.name}, task {cfg.task.name}); `seqbench list` shows the keys")


def metric(spec: SweepSpec, source: Path, configs: list[RunConfig]) -> str:
    """The selection metric: tune.metric, else the default of the sweep's tasks (eval_loss for adding, whose
    accuracy is a tolerance band, else eval_accuracy); ConfigError when the tasks' defaults differ."""
    if spec.tune.metric:
        return spec.tune.metric
    defaults = {c.task.name: "eval_loss" if c.task.name == "adding" else "eval_accuracy" for c in configs}
    if len(set(defaults.values())) > 1:
        tasks = ", ".join(f"{t}: {m}" for t, m in sorted(defaults.items()))
        raise ConfigError(f"{source}: tune.metric: not given, and the default differs between the sweep's tasks "
                          f"({tasks}); give tune.metric: eval_loss or eval_accuracy")
    return next(iter(defaults.values()))


def score(summary: dict | None, name: str) -> float | None:
    """A selection run's score: its final evaluation-set `name`, or None when it did not complete with a finite
    value (failed, diverged, unfinished)."""
    if not summary or summary.get("status") != "completed":
        return None
    value = (summary.get("final") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def choose(points: list[Point], sweep_dir: Path, name: str) -> list[dict]:
    """tuning.json's `points`: per point, each candidate's run_ids, scores (one per selection seed) and score (their
    mean; null unless every selection run completed with a finite value), and the chosen candidate: the best score,
    ties going to the candidate listed first (the spec's order); null when no candidate has a score."""
    better = max if TUNE_METRICS[name] == "max" else min
    out = []
    for point in points:
        rows = []
        for values, runs in zip(point.candidates, point.selection):
            scores = [score(read_summary(sweep_dir / c.run_id), name) for c in runs]
            mean = None if None in scores else sum(scores) / len(scores)
            rows.append({"values": values, "run_ids": [c.run_id for c in runs], "scores": scores, "score": mean})
        scored = [r for r in rows if r["score"] is not None]
        # max/min return the first of equal scores: a tie goes to the candidate the spec lists first
        best = better(scored, key=lambda r: r["score"]) if scored else None
        out.append({"point": point.label, "candidates": rows, "chosen": best["values"] if best else None})
    return out


def selected(points: list[Point], sweep_dir: Path) -> bool:
    """Whether every selection run of these points is finished (the choice can be made)."""
    return all(is_finished(sweep_dir / run_id) for p in points for run_id in p.selection_ids())


def expand_finals(spec: SweepSpec, source: Path, overrides: dict, points: list[Point],
                  chosen: list[dict | None]) -> list[RunConfig]:
    """The final runs: each point with its chosen candidate, on the spec's seeds (points without a choice have none)."""
    at = [{**p.values, **c, "seed": s} for p, c in zip(points, chosen) if c is not None for s in spec.seed_list()]
    return configs_at(spec, source, overrides, at)


def write_tuning(sweep_dir: Path, spec: SweepSpec, name: str, choices: list[dict]) -> Path:
    path = sweep_dir / TUNING
    write_json(path, {"metric": name, "goal": TUNE_METRICS[name], "keys": spec.tune.keys, "seeds": spec.tune.seeds,
                      "points": choices})
    return path
