"""The report's tables, written as Markdown, CSV and LaTeX (booktabs, ready to `\\input`).

`summary`: one row per model x task x length (x backend); `status` and `problems`: the runs that did not complete;
`summary_runs.csv`: every cell's run_ids. CSVs keep full-precision numbers; the other formats show rounded text.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import data as D

#: at most this many run_ids per status in the Markdown/HTML/LaTeX status table (the CSVs list them all)
SHOWN_IDS = 12


def _blank(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def mean_pm(mean, ci, fmt: str) -> str:
    """'m ± h' (no interval for a single seed), '' when there is no value."""
    if _blank(mean):
        return ""
    return f"{mean:{fmt}}" if _blank(ci) else f"{mean:{fmt}} ± {ci:{fmt}}"


def _number(x, fmt: str) -> str:
    return "" if _blank(x) else f"{x:{fmt}}"


def summary(cells: pd.DataFrame) -> pd.DataFrame:
    """The summary table as display text (see `data.summarise_cell` for what each number is)."""
    c = cells
    table = pd.DataFrame({
        "model": c.label, "task": c.task, "T": c.length.astype(str),
        "backend": c.backend,
        "final eval loss": [mean_pm(m, h, ".3g") for m, h in zip(c.loss_mean, c.loss_ci)],
        "accuracy": [mean_pm(m, h, ".3f") for m, h in zip(c.accuracy_mean, c.accuracy_ci)],
        "solve rate": [_number(x, ".2f") for x in c.solve_rate],
        "steps to solve": [_number(x, ".0f") for x in c.steps_to_solve],
        "tokens/s": [_number(x, ",.0f") for x in c.tokens_per_s],
        "params": [_number(x, ",.0f") for x in c.params],
        "n": c.n.astype(str),
    })
    if c.backend.nunique() == 1:
        table = table.drop(columns="backend")
    for status in ("diverged", "failed", "incomplete"):  # counts only where some run ended so
        if c[status].any():
            table[status] = c[status].astype(str)
    return table


def cell_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run with its cell keys, seed and status: which run_ids make up each row of the summary."""
    cols = [*D.CELL, "seed", "status", "run_id", "path"]
    return D.sort_cells(runs[cols].sort_values(["seed", "run_id"]))


def status(runs: pd.DataFrame, shown: int | None = None) -> pd.DataFrame:
    """One row per status: how many runs and their run_ids (the first `shown` of them, if given)."""
    rows = []
    for name in D.STATUSES:
        ids = sorted(runs.run_id[runs.status == name])
        if ids:
            text = ", ".join(ids[:shown])
            if shown is not None and len(ids) > shown:
                text += f", ... and {len(ids) - shown} more (summary_runs.csv)"
            rows.append({"status": name, "runs": len(ids), "run_ids": text})
    return pd.DataFrame(rows, columns=["status", "runs", "run_ids"])


def _detail(run) -> str:
    """Why a run did not complete, from its record."""
    if run.status == "diverged":
        return f"non-finite loss or gradient at step {run.get('diverged_step'):.0f}"
    if run.status == "failed":
        return str(run.get("error", "")).splitlines()[0][:200] if not _blank(run.get("error")) else "no error recorded"
    if _blank(run.get("last_step")):
        return "no summary and no metrics yet"
    return f"no summary; metrics logged up to step {run.last_step:.0f}"


def problems(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per diverged, failed or incomplete run, with what its record says went wrong."""
    bad = D.sort_cells(runs[runs.status != "completed"])
    return pd.DataFrame({"run_id": bad.run_id, "status": bad.status, "model": bad.label, "task": bad.task,
                         "T": bad.length.astype(str), "seed": bad.seed.astype(str),
                         "detail": [_detail(r) for _, r in bad.iterrows()]})


# --- formats -------------------------------------------------------------------------------------------------------
def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    def row(values):
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    return "\n".join([row(table.columns), row(["---"] * table.shape[1]), *map(row, table.itertuples(index=False))])


def latex(table: pd.DataFrame) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule) with LaTeX specials (_ % & ...) escaped."""
    styler = table.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, column_format="l" * table.shape[1])
    return text.replace("±", r"$\pm$")


def write(table: pd.DataFrame, folder: Path, name: str, csv: pd.DataFrame | None = None) -> None:
    """`name`.md, `name`.tex and `name`.csv (`csv` if given: the same rows with full-precision numbers)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(markdown(table) + "\n")
    (folder / f"{name}.tex").write_text(latex(table))
    (table if csv is None else csv).to_csv(folder / f"{name}.csv", index=False)


def write_all(d: D.ReportData, folder: Path) -> dict[str, pd.DataFrame]:
    """Write every table under `folder`; return the display tables by name, for the page."""
    shown = {"summary": summary(d.cells), "status": status(d.runs, SHOWN_IDS), "problems": problems(d.runs)}
    write(shown["summary"], folder, "summary", csv=d.cells)
    write(shown["status"], folder, "status", csv=status(d.runs))
    write(shown["problems"], folder, "problems")
    cell_runs(d.runs).to_csv(folder / "summary_runs.csv", index=False)
    return shown
