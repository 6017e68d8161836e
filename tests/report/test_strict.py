"""Runs from several commits or a dirty tree: a warning on stderr and on the page; `report --strict` refuses them."""

import json

import pandas as pd
import pytest

from seqbench.harness.cli import main
from seqbench.harness.report.provenance import commits, mixed_provenance

A, B = "a" * 40, "b" * 40


def set_provenance(folder, assign):
    """Give the runs under `folder` (in run_id order) the commit and dirty flag `assign(i)` returns."""
    for i, path in enumerate(sorted(folder.glob("*/summary.json"))):
        summary = json.loads(path.read_text())
        summary["provenance"]["commit"], summary["provenance"]["dirty"] = assign(i)
        path.write_text(json.dumps(summary))


@pytest.fixture
def lstm_adding(copy_runs):
    """The fixture's four completed lstm runs on adding (two lengths, two seeds), in a folder of their own."""
    return copy_runs(lambda s: s["model"] == "lstm" and s["task"] == "adding" and s["status"] == "completed")


def test_mixed_commits_are_refused_by_strict_in_one_line_writing_nothing(lstm_adding, tmp_path, capsys):
    set_provenance(lstm_adding, lambda i: (A, False) if i < 3 else (B, True))
    out = tmp_path / "reports" / "out"
    assert main(["report", str(lstm_adding), "--strict", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"seqbench: error: {lstm_adding}: --strict: ")
    assert f"{A[:12]} (3 runs)" in err[0] and f"{B[:12]} (1 run, all from a dirty tree)" in err[0]
    assert not (tmp_path / "reports").exists()


def test_mixed_commits_are_warned_once_on_stderr_and_on_the_page(lstm_adding, tmp_path, capsys):
    set_provenance(lstm_adding, lambda i: (A, False) if i % 2 else (B, False))
    out = tmp_path / "out"
    assert main(["report", str(lstm_adding), "--out", str(out)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "mixed provenance" in line]
    assert len(warned) == 1 and warned[0].startswith("seqbench: warning: mixed provenance: the runs come from 2 ")
    assert f"{A[:12]} (2 runs)" in warned[0] and f"{B[:12]} (2 runs)" in warned[0] and "dirty" not in warned[0]
    for page in ("index.md", "index.html"):
        assert (out / page).read_text().count("mixed provenance") == 1, page


def test_one_clean_commit_passes_strict_without_a_warning(lstm_adding, tmp_path, capsys):
    set_provenance(lstm_adding, lambda i: (A, False))
    out = tmp_path / "out"
    assert main(["report", str(lstm_adding), "--strict", "--out", str(out)]) == 0
    assert "mixed provenance" not in capsys.readouterr().err
    assert "mixed provenance" not in (out / "index.md").read_text()


def runs(commit, dirty, status="completed"):
    return pd.DataFrame({"status": status, "provenance.commit": commit, "provenance.dirty": dirty})


def test_one_dirty_commit_is_mixed_provenance_too():
    warning = mixed_provenance(runs([A, A, A], [False, True, False]))
    assert len(warning) == 1 and f"one commit: {A[:12]} (3 runs, 1 of them from a dirty tree)" in warning[0]


def test_runs_that_recorded_no_provenance_yet_are_left_out():
    # an incomplete run killed before it started recorded nothing: it is no evidence of another commit
    table = runs([A, None, None], [False, None, None], ["completed", "incomplete", "completed"])
    assert commits(table).set_index("commit").runs.to_dict() == {A: 1, "unknown": 1}
    assert mixed_provenance(table.iloc[:2]) == []
    assert len(mixed_provenance(table)) == 1  # a finished run without a commit: not the same code as far as we know
