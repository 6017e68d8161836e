"""`seqbench report`: figures, tables and a self-contained page from the records of a results folder.

Reads records only (through `harness.loaders`); nothing a run should have recorded is recomputed.
"""

from __future__ import annotations

from pathlib import Path

from . import data, figures, page, tables


def build_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Report on every run under `results_dir` (single runs, sweeps, nested, any status) into `out_dir` (default
    `results_dir/report`): figures/*.png|pdf, tables/*.md|csv|tex, index.md and index.html, whose path is returned.

    Raises ValueError("no runs under DIR") when the folder holds no run.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    d = data.load(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = figures.draw(d, out_dir / "figures")
    shown = tables.write_all(d, out_dir / "tables")
    return page.write(out_dir, d, drawn, shown)


__all__ = ["build_report"]
