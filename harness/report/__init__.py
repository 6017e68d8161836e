"""`seqbench report`: figures, tables and a self-contained page from the records of a results folder.

Reads records only (through `harness.loaders`); nothing a run should have recorded is recomputed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path

from ..loaders import warn
from . import data, figures, page, tables
from .provenance import mixed_provenance

#: what a report consists of: the entries of its folder that a new report replaces (anything else there stays)
ENTRIES = ("figures", "tables", "index.md", "index.html")


def build_report(results_dir: Path, out_dir: Path | None = None, strict: bool = False) -> Path:
    """Report on every run under `results_dir` (single runs, sweeps, nested, any status) into `out_dir` (default
    `results_dir/report`): figures/*.png|pdf, tables/*.md|csv|tex, index.md and index.html, whose path is returned.

    The report is built in a hidden folder beside `out_dir` and moved into place only once complete: interrupted
    (Ctrl-C) or failed, it leaves `out_dir` as it was (absent, or the earlier report).

    Runs from more than one commit, or from a tree with uncommitted changes, are warned about (stderr and the page);
    `strict` refuses them instead.

    Raises ValueError("no runs under DIR") when the folder holds no run, and with `strict` when its runs' provenance
    is mixed.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    d = data.load(results_dir)
    for warning in mixed_provenance(d.recorded):  # before anything is written: --strict writes nothing
        if strict:
            raise ValueError(f"{results_dir}: --strict: {warning.removeprefix('mixed provenance: ')}; nothing written")
        warn(warning)
    created = [p for p in (out_dir.parent, *out_dir.parent.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    building.mkdir()  # not mkdtemp: its 0700 would become the report's mode
    try:
        figures_drawn = figures.draw(d, building / "figures")
        shown = tables.write_all(d, building / "tables")
        page.write(building, d, figures_drawn, shown)
        _move_into_place(building, out_dir)
    except BaseException:  # Ctrl-C included: nothing half-written stays behind
        shutil.rmtree(building, ignore_errors=True)
        for folder in created:  # the parents made for this report, innermost first, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return out_dir / "index.html"


def _move_into_place(new: Path, out: Path) -> None:
    """Make `new`'s entries `out`'s: `new` itself becomes `out` where there is none yet; otherwise the ENTRIES of an
    earlier report are replaced (other files in `out` stay), with Ctrl-C held back until all are, so that old and new
    entries never mix."""
    if not out.exists():
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    moved = []  # the renames done, to undo if one fails
    try:
        with _signals_held():
            for entry in ENTRIES:  # an entry the new report lacks (no figure drawn) goes too: nothing stale stays
                for src, dst in ((out / entry, old / entry), (new / entry, out / entry)):
                    if src.exists() or src.is_symlink():
                        src.rename(dst)
                        moved.append((src, dst))
    except BaseException:
        for src, dst in reversed(moved):  # the earlier report back as it was
            with contextlib.suppress(OSError):
                dst.rename(src)
        with contextlib.suppress(OSError):
            old.rmdir()  # kept, hidden, should anything of the earlier report still be in it
        raise
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(new, ignore_errors=True)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait (blocked, not lost) until the block ends; where signals cannot be blocked, a no-op."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


__all__ = ["build_report"]
