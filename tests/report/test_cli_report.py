"""`seqbench report` as a command: Ctrl-C, unreadable results, unwritable output; and how a new report replaces an
earlier one (built beside it, moved into place whole)."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from seqbench.harness import report as R
from seqbench.harness.cli import main
from seqbench.harness.report import figures as F


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupt(_):
    raise KeyboardInterrupt


@pytest.mark.parametrize("earlier", [False, True], ids=["no-earlier-report", "earlier-report"])
def test_ctrl_c_is_one_line_exit_130_and_leaves_no_partial_report(results, report, tmp_path, monkeypatch, capsys,
                                                                  earlier):
    out = tmp_path / "reports" / "out"
    if earlier:
        shutil.copytree(report, out)
    before = snapshot(out) if earlier else None
    # the second figure: the first one has been written (into the folder being built) when Ctrl-C comes
    monkeypatch.setitem(F.FIGURES, "final_vs_length", F.FIGURES["final_vs_length"]._replace(build=interrupt))
    assert main(["report", str(results), "--out", str(out)]) == 130
    err = "\n".join(line for line in capsys.readouterr().err.splitlines()  # a warning (a dirty tree's runs) aside
                    if not line.startswith("seqbench: warning:"))
    assert len(err.splitlines()) == 1 and "interrupted" in err and "Traceback" not in err
    if earlier:
        assert snapshot(out) == before and os.listdir(out.parent) == ["out"]  # no half-built folder beside it
    else:
        assert not (tmp_path / "reports").exists()  # nor the parent made for it


def test_a_new_report_replaces_the_earlier_ones_entries_and_keeps_other_files(tmp_path):
    out, new = tmp_path / "out", tmp_path / ".out.partial"
    for folder, tag in ((out, "old"), (new, "new")):
        (folder / "tables").mkdir(parents=True)
        (folder / "tables" / "summary.md").write_text(tag)
        (folder / "index.html").write_text(tag)
    (out / "figures").mkdir()
    (out / "figures" / "stale.png").write_text("old")  # the new report drew no figure
    (out / "notes.txt").write_text("mine")
    R._move_into_place(new, out)
    assert snapshot(out) == {"index.html": b"new", "notes.txt": b"mine", "tables/summary.md": b"new"}
    assert os.listdir(tmp_path) == ["out"]


def test_a_failed_move_puts_the_earlier_report_back(tmp_path, monkeypatch):
    out, new = tmp_path / "out", tmp_path / ".out.partial"
    for folder, tag in ((out, "old"), (new, "new")):
        (folder / "figures").mkdir(parents=True)
        (folder / "figures" / "a.png").write_text(tag)
        (folder / "index.md").write_text(tag)
    rename, calls = Path.rename, []

    def failing(self, target):
        calls.append(self)
        if len(calls) == 3:  # figures swapped, then index.md fails
            raise OSError("disk gone")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk gone"):
        R._move_into_place(new, out)
    monkeypatch.undo()
    assert snapshot(out) == {"figures/a.png": b"old", "index.md": b"old"}
    assert sorted(os.listdir(tmp_path)) == [".out.partial", "out"]  # what was built: removed by build_report


def permission_bits_apply(folder: Path, mode: int, access: int) -> bool:
    """chmod `folder` to `mode`; whether the bits now keep this user out (not so for root)."""
    folder.chmod(mode)
    return not os.access(folder, access)


@pytest.mark.parametrize("out", [False, True], ids=["default-out", "out-elsewhere"])
def test_an_unreadable_results_folder_is_one_line_exit_2(results, tmp_path, capsys, out):
    runs = tmp_path / "runs"
    shutil.copytree(next((results / "sweep").glob("*/summary.json")).parent, runs / "run")
    try:
        if not permission_bits_apply(runs, 0o000, os.R_OK):
            pytest.skip(f"permission bits do not apply to this user (uid {os.geteuid()})")
        args = ["report", str(runs)] + (["--out", str(tmp_path / "out")] if out else [])
        assert main(args) == 2
    finally:
        runs.chmod(0o755)
    err = capsys.readouterr().err
    assert err.splitlines() == [f"seqbench: error: {runs}: cannot read this folder (permission denied); give a "
                                "results folder you can read"]
    assert sorted(os.listdir(tmp_path)) == ["runs"] and os.listdir(runs) == ["run"]  # nothing written


def test_a_record_that_cannot_be_read_is_one_line_exit_2(results, tmp_path, monkeypatch, capsys):
    record = results / "sweep" / "somewhere" / "summary.json"

    def denied(root):
        raise PermissionError(13, "Permission denied", str(record))

    monkeypatch.setattr(R.data, "load", denied)  # as root the bits cannot be tested; the error can
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"seqbench: error: {record}: Permission denied; nothing was "
                                                    "written"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["read-only-folder", "file-in-the-way"])
def test_an_unwritable_out_is_refused_before_matplotlib_is_imported(results, tmp_path, monkeypatch, capsys, where):
    parent = tmp_path / "parent"
    if where == "read-only-folder":
        parent.mkdir()
        if not permission_bits_apply(parent, 0o555, os.W_OK):
            parent.chmod(0o755)
            pytest.skip(f"permission bits do not apply to this user (uid {os.geteuid()})")
    else:
        parent.write_text("a file")
    # importing these now fails: the refusal must come first, or matplotlib's own warnings (an unwritable config
    # folder) are printed before it
    for module in ("matplotlib", "seaborn", "seqbench.harness.report"):
        monkeypatch.setitem(sys.modules, module, None)
    try:
        assert main(["report", str(results), "--out", str(parent / "out")]) == 2
    finally:
        if parent.is_dir():
            parent.chmod(0o755)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"seqbench: error: --out {parent / 'out'}: ")
    assert not (parent / "out").exists()
