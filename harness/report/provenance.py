"""Whether a report's runs come from one clean commit: runs from several commits, or from a tree with uncommitted
changes, may not be the same code, and a reference made from them cannot be rerun from a commit."""

from __future__ import annotations

import pandas as pd


def _column(runs: pd.DataFrame, key: str) -> pd.Series:
    return runs.get(f"provenance.{key}", pd.Series(None, index=runs.index, dtype=object))


def commits(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per commit the runs record: commit, runs, dirty (how many of them from a tree with uncommitted
    changes); most runs first. Runs that recorded no provenance (not started yet) are left out; finished runs without
    a commit (not run from a git checkout) count under `unknown`."""
    recorded = runs.status.ne("incomplete") | _column(runs, "commit").notna() | _column(runs, "dirty").notna()
    table = pd.DataFrame({"commit": _column(runs, "commit").fillna("unknown").astype(str),
                          "dirty": _column(runs, "dirty").fillna(False).astype(bool)})[recorded]
    out = table.groupby("commit").agg(runs=("dirty", "size"), dirty=("dirty", "sum")).reset_index()
    return out.sort_values(["runs", "commit"], ascending=[False, True], ignore_index=True)


def mixed_provenance(runs: pd.DataFrame) -> list[str]:
    """The warning, as a one-item list, when the runs come from more than one commit or from a dirty tree; else []."""
    table = commits(runs)
    if len(table) <= 1 and not table.dirty.any():
        return []

    def one(row) -> str:
        dirty = ("" if not row.dirty else ", all from a dirty tree" if row.dirty == row.runs
                 else f", {row.dirty} of them from a dirty tree")
        return f"{row.commit[:12]} ({row.runs} run{'s' * (row.runs != 1)}{dirty})"

    what = f"{len(table)} commits" if len(table) > 1 else "one commit"
    why = ["numbers from different code may not be comparable"] if len(table) > 1 else []
    if table.dirty.any():
        why.append("a dirty tree's uncommitted changes are in no commit, so its runs cannot be rerun")
    return [f"mixed provenance: the runs come from {what}: {', '.join(map(one, table.itertuples()))}; {'; '.join(why)} "
            "(seqbench report --strict refuses such a folder)"]
