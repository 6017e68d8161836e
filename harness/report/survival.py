"""Time to solve as censored data: the Kaplan–Meier estimate of the fraction of seeds solved by each step.

A seed that solved its task at step s is an event at s. A seed that did not solve is censored: at its budget (the
steps it was allowed) if it completed, at its last step if it diverged or stopped (a diverged run never solves later,
but it is not evidence that it would not have solved within the budget, so it leaves the risk set there). Dropping
the unsolved seeds, as a median over solved seeds does, makes a model that solves one seed in three look as fast as
one that solves all three.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def km_curve(steps, solved) -> pd.DataFrame:
    """The Kaplan–Meier estimate of P(solved by step s): one row per distinct event step (columns `step`,
    `fraction_solved`, `at_risk`, `events`), starting from (0, 0.0). `steps[i]` is seed i's solve step where
    `solved[i]`, else the step at which it was censored. Seeds with no step (NaN) are left out."""
    steps = np.asarray(steps, dtype="float64")
    solved = np.asarray(solved, dtype=bool)
    keep = ~np.isnan(steps)
    steps, solved = steps[keep], solved[keep]
    rows = [{"step": 0.0, "fraction_solved": 0.0, "at_risk": len(steps), "events": 0}]
    surviving = 1.0
    for s in np.unique(steps[solved]):
        at_risk = int((steps >= s).sum())
        events = int(((steps == s) & solved).sum())
        surviving *= 1 - events / at_risk
        rows.append({"step": float(s), "fraction_solved": 1 - surviving, "at_risk": at_risk, "events": events})
    return pd.DataFrame(rows)


def km_median(steps, solved) -> float:
    """The Kaplan–Meier median step to solve: the first event step at which the estimated fraction solved reaches
    one half; +inf where it never does (fewer than half solved within their budgets: report it as '> budget'); NaN
    without seeds."""
    curve = km_curve(steps, solved)
    if curve.at_risk.iloc[0] == 0:
        return math.nan
    reached = curve[curve.fraction_solved >= 0.5 - 1e-12]
    return float(reached.step.iloc[0]) if len(reached) else math.inf
