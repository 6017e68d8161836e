"""How much tuning a result took: the expected best selection score of k tuning trials, k = 1..N, with its variance
(Dodge et al. 2019, "Show your work: improved reporting of experimental results", EMNLP, section 3), from the
`tuning.json` records that tuned sweeps write.

A model that reaches its best only when all N candidates are tried is not better tuned than one that gets there with
one trial; the curve shows which is which, where a single chosen value hides it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RecordError
from ..records import json_kind, read_json

#: columns of `curves`: one row per tuning point and number of trials k
CURVE_COLUMNS = ["sweep", "task", "length", "label", "variant", "metric", "goal", "k", "mean", "sd", "lo", "hi",
                 "scored", "candidates", "seeds"]
#: the point keys that say where a line goes (panel, colour); every other key of a point tells lines apart
PLACED = ("task", "task.length", "model")


def expected_best(scores, k, goal: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """The expected best of k draws, with replacement, from the empirical distribution of `scores`, and its variance,
    for each k of `k` (Dodge et al. 2019, eq. 1): with the scores sorted, v(1) <= ... <= v(N), the best of k draws is
    v(i) with probability (i/N)^k - ((i-1)/N)^k, so E = sum_i v(i) [(i/N)^k - ((i-1)/N)^k] and
    Var = sum_i v(i)^2 [...] - E^2. Tied scores share their probability exactly. `goal` "min" (a loss): the expected
    smallest. ValueError without scores or with a non-finite one."""
    v = np.asarray(scores, dtype="float64").ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"expected_best: need finite scores, got {list(v)}")
    if goal not in ("max", "min"):
        raise ValueError(f"expected_best: goal {goal!r}; expected 'max' or 'min'")
    sign = 1.0 if goal == "max" else -1.0
    v = np.sort(sign * v)  # the smallest loss is the largest negated loss
    i = np.arange(1, v.size + 1) / v.size
    k = np.atleast_1d(np.asarray(k, dtype="float64"))[:, None]  # (K, 1) against (N,)
    p = i**k - (i - 1 / v.size) ** k  # (K, N): P(best of k = v(i))
    mean = p @ v
    var = np.clip(p @ v**2 - mean**2, 0.0, None)  # rounding can leave -1e-17 where all draws agree
    return sign * mean, var


def load(root: Path) -> list[dict]:
    """Every `tuning.json` under `root`, checked, each with its `path`; [] where there is none. RecordError (one line
    naming the file and the field) for a file that is not a tuning record."""
    docs = []
    for path in sorted(Path(root).rglob("tuning.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
            continue  # a hidden folder: a report or sweep being staged
        docs.append({**_checked(path, read_json(path)), "path": str(path)})
    return docs


def _checked(path: Path, doc) -> dict:
    def bad(what: str):
        return RecordError(f"{path}: not a tuning record: {what}")

    if not isinstance(doc, dict):
        raise bad(f"expected a JSON object, got a JSON {json_kind(doc)}")
    if not isinstance(doc.get("points"), list):
        raise bad("`points` must be a list")
    goal = doc.get("goal", "min" if "loss" in str(doc.get("metric", "")) else "max")
    if goal not in ("max", "min"):
        raise bad(f"`goal` is {goal!r}; expected 'max' or 'min'")
    for n, point in enumerate(doc["points"]):
        if not isinstance(point, dict) or not isinstance(point.get("point", {}), dict) \
                or not isinstance(point.get("candidates"), list) \
                or not all(isinstance(c, dict) for c in point["candidates"]):
            raise bad(f"points[{n}] must be an object with a `point` object and a `candidates` list of objects")
        for c, candidate in enumerate(point["candidates"]):
            score = candidate.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                raise bad(f"points[{n}].candidates[{c}].score is {score!r}; expected a number or null")
    return {**doc, "goal": goal}


def _score(candidate: dict) -> float:
    """A candidate's selection score (the mean over its selection seeds), NaN where it has none: the sweep gives none
    unless every selection run completed with a finite value, and such a candidate could not be chosen either. A
    record without the field: the mean of its `scores` where every one is a number."""
    score = candidate.get("score")
    if "score" not in candidate:
        seeds = candidate.get("scores") or []
        valid = seeds and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in seeds)
        score = float(np.mean(seeds)) if valid else None
    return float(score) if score is not None and math.isfinite(score) else math.nan


def _where(point: dict, runs: pd.DataFrame) -> dict:
    """Task, length and model label of a tuning point: from the records of its candidates' runs where the report
    holds them (the sweep's point labels may leave out a key the grid does not vary), else from the point's labels."""
    ids = {i for c in point["candidates"] for i in c.get("run_ids") or []}
    found = runs[runs.run_id.isin(ids)] if len(runs) and "run_id" in runs else runs.iloc[:0]
    labels = point.get("point", {})
    if len(found):
        first = found.iloc[0]
        return {"task": first.task, "length": int(first.length), "label": first.label}
    model = str(labels.get("model", "model"))
    length = labels.get("task.length")
    return {"task": str(labels.get("task", "task")), "length": int(length) if length is not None else None,
            "label": model.split()[0] if model.split() else model}  # a bare name is its own label (data.model_label)


def _variant(point: dict) -> str:
    """The point's other keys (`hidden=16`; a model entry's own keys, `mingru layers=2` -> `layers=2`): what tells
    apart two lines of one model in a panel."""
    labels = point.get("point", {})
    extra = str(labels.get("model", "")).split()[1:]
    return ", ".join([*extra, *(f"{k}={v}" for k, v in labels.items() if k not in PLACED)])


def curves(docs: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """The expected best score of k = 1..N trials for every tuning point of `docs` (`load`), tidy (CURVE_COLUMNS):
    `mean`, `sd` (its standard deviation), `lo`/`hi` (mean ∓ sd kept inside the scores' range: the best of k draws
    never leaves it), `scored` (N: candidates with a score) of `candidates`. Candidates without a score are left out.
    `runs`: the report's runs table (run_id, task, length, label), to place each point."""
    frames = []
    for doc in docs:
        sweep = Path(doc["path"]).parent.name
        for point in doc["points"]:
            scores = np.array([_score(c) for c in point["candidates"]], dtype="float64")
            scored = scores[np.isfinite(scores)]
            if scored.size == 0:
                continue
            k = np.arange(1, scored.size + 1)
            mean, var = expected_best(scored, k, doc["goal"])
            sd = np.sqrt(var)
            frames.append(pd.DataFrame({
                "sweep": sweep, **_where(point, runs), "variant": _variant(point),
                "metric": str(doc.get("metric", "score")), "goal": doc["goal"], "k": k, "mean": mean, "sd": sd,
                "lo": np.clip(mean - sd, scored.min(), scored.max()), "hi": np.clip(mean + sd, scored.min(),
                                                                                   scored.max()),
                "scored": scored.size, "candidates": len(scores), "seeds": len(doc.get("seeds") or [])}))
    if not frames:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    out = pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]
    # one point tuned by two sweeps: two lines, told apart by the sweep's name
    twice = out.groupby(["task", "length", "label", "variant", "metric", "k"], dropna=False).sweep.transform("nunique")
    named = out.variant.where(out.variant == "", out.variant + ", ") + "sweep=" + out.sweep
    return out.assign(variant=out.variant.where(twice == 1, named))
