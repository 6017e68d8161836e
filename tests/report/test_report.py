import json
import math
import re
import statistics

import pandas as pd
import pytest
import torch

from seqbench.harness.report import build_report

from .conftest import SWEEP_COMMIT

FIGURES = ["learning_curves", "final_vs_length", "fraction_solved", "grad_through_time", "input_grad_through_time",
           "grad_norm", "throughput"]


def test_every_figure_as_png_and_pdf(report):
    for name in FIGURES:
        png, pdf = (report / "figures" / f"{name}.png").read_bytes(), (report / "figures" / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, name
        assert pdf.startswith(b"%PDF"), name


def test_every_table_as_markdown_csv_and_latex(report):
    for name in ("summary", "comparisons", "status", "problems"):
        md = (report / "tables" / f"{name}.md").read_text()
        tex = (report / "tables" / f"{name}.tex").read_text()
        assert md.startswith("| ") and r"\toprule" in tex and r"\bottomrule" in tex
        assert rf"\label{{tab:seqbench-{name}}}" in tex and r"\caption[" in tex
        assert len(pd.read_csv(report / "tables" / f"{name}.csv")) == md.count("\n") - 2


def recorded_losses(results):
    """Final eval losses of completed runs per (model, task, T), read straight from the summaries."""
    out = {}
    for path in results.rglob("summary.json"):
        s = json.loads(path.read_text())
        if s["status"] == "completed":
            final = s["final"].get("test_loss", s["final"]["eval_loss"])  # the test set where recorded
            out.setdefault((s["model"], s["task"], s["config"]["task"]["length"]), []).append(final)
    return out


def test_summary_rows_hold_the_recorded_values(report, results):
    table = pd.read_csv(report / "tables" / "summary.csv")
    losses = recorded_losses(results)
    assert sorted(zip(table.label, table.task, table.length)) == sorted(losses)
    for row in table.itertuples():
        values = losses[row.label, row.task, row.length]
        logs = [math.log(v) for v in values]
        assert row.n == len(values) == 2
        assert row.loss_gmean == pytest.approx(math.exp(statistics.mean(logs)))
        assert row.loss_factor == pytest.approx(math.exp(12.7062 * statistics.stdev(logs) / 2 ** 0.5), rel=1e-4)
        assert row.loss_lo == pytest.approx(row.loss_gmean / row.loss_factor) and row.loss_lo > 0
        assert (row.hidden, row.lr, row.batch_size, row.steps) == (8, 1e-3, 4, 6)
    cell = table.set_index(["label", "task", "length"]).loc[("lstm", "adding", 12)]
    assert (cell.completed, cell.diverged, cell.failed, cell.incomplete) == (2, 1, 1, 1)
    assert table.drop(columns=["completed", "n"]).query("label != 'lstm' or length != 12 or task != 'adding'")[
        ["diverged", "failed", "incomplete"]].eq(0).all().all()
    shown = (report / "tables" / "summary.md").read_text()
    assert "| diverged | failed | incomplete |" in shown
    assert set(table.layers[table.label == "transformer"]) == {2} and set(table.layers[table.label == "lstm"]) == {1}


def test_a_diverged_run_is_never_solved(report, results):
    diverged = [json.loads(p.read_text()) for p in (results / "extra").glob("*/summary.json")]
    diverged = [s for s in diverged if s["status"] == "diverged"]
    assert len(diverged) == 1 and diverged[0]["solved_step"] == 0  # it met the criterion, then diverged
    cell = pd.read_csv(report / "tables" / "summary.csv").set_index(["label", "task", "length"]).loc[
        ("lstm", "adding", 12)]
    assert (cell.solved, cell.finished, cell.solve_rate) == (0, 3, 0)  # 2 completed and 1 diverged, none solved
    assert "| 0/3 [0.00, 0.71] |" in (report / "tables" / "summary.md").read_text()  # Clopper–Pearson


def test_runs_by_status_with_ids_and_what_went_wrong(report, results):
    status = pd.read_csv(report / "tables" / "status.csv").set_index("status")
    assert status.runs.to_dict() == {"completed": 16, "diverged": 1, "failed": 1, "incomplete": 1}
    by_status = {}
    for d in (results / "extra").iterdir():
        s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {"status": "incomplete"}
        by_status[s["status"]] = d.name
    problems = pd.read_csv(report / "tables" / "problems.csv").set_index("status")
    assert problems.run_id.to_dict() == by_status
    assert status.run_ids["failed"] == by_status["failed"]
    assert problems.detail["failed"] == "RuntimeError: kaboom"
    assert problems.detail["diverged"] == "non-finite loss or gradient at step 3"
    assert problems.detail["incomplete"] == "no summary; metrics logged up to step 3"  # the cut 4th line is skipped


def test_summary_runs_maps_every_run_to_its_cell(report, results):
    runs = pd.read_csv(report / "tables" / "summary_runs.csv")
    assert sorted(runs.run_id) == sorted(p.parent.name for p in results.rglob("config.json"))
    cell = runs[(runs.label == "lstm") & (runs.task == "adding") & (runs.length == 12)]
    assert sorted(cell.seed) == [0, 1, 2, 3, 4]


def test_html_is_self_contained_and_embeds_every_figure(report):
    html = (report / "index.html").read_text()
    assert "http://" not in html and "https://" not in html and 'src="file' not in html
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(sources) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert html.count("<table") == 4 and "RuntimeError: kaboom" in html  # summary, comparisons, status, problems
    assert '<th class="num">final loss</th>' in html and '<th>model</th>' in html


def test_page_has_provenance_and_commands_to_reproduce(report, results):
    md = (report / "index.md").read_text()
    assert f"git checkout {SWEEP_COMMIT}\nseqbench sweep fixture.yaml" in md
    for run in (results / "extra").iterdir():
        assert f"seqbench run --config {run}/config.json" in md
    assert f"- torch: {torch.__version__}" in md and "- dates (UTC): 20" in md
    assert all(f"![{name}](figures/{name}.png)" in md for name in FIGURES)


def test_missing_data_skips_figures_and_says_so(copy_runs):
    root = copy_runs(lambda s: s["model"] == "transformer" and s["task"] == "adding" and s["seed"] == 0)
    for path in root.glob("*/grad_profile.jsonl"):
        path.unlink()
    index = build_report(root)  # into root/report by default
    assert index == root / "report" / "index.html"
    figures = root / "report" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(
        f"{name}.{ext}" for name in ["learning_curves", "final_vs_length", "fraction_solved", "grad_norm", "throughput"]
        for ext in ("png", "pdf"))
    html = index.read_text()
    assert "Skipped: no gradient profiles of a recurrent layer." in html and "Skipped: no gradient profiles." in html


def test_a_folder_without_runs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=f"no runs under {tmp_path}"):
        build_report(tmp_path)
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ValueError, match="no runs under"):
        build_report(tmp_path / "missing")
    assert not (tmp_path / "report").exists()


def test_comparisons_table_gives_the_evidence(report):
    csv = pd.read_csv(report / "tables" / "comparisons.csv")
    md = (report / "tables" / "comparisons.md").read_text()
    assert len(csv) == 8 and md.count("\n") == 2 + 8 and "| lstm | transformer |" in md  # loss and accuracy
    assert {"p", "p_adjusted", "verdict"} <= set(csv.columns) and set(csv.verdict) == {"n too small"}  # 2 pairs
    assert "Paired model comparisons" in (report / "index.html").read_text()
    assert "p (Holm)" in (report / "tables" / "comparisons.tex").read_text()


def test_a_repeated_seed_is_a_warning_not_a_sample(grid_report, grid_results):
    run_id = next((grid_results / "merged").iterdir()).name
    for page in ("index.md", "index.html"):
        text = (grid_report / page).read_text()
        assert f"seed 0 is recorded by 2 runs (merged/{run_id}, sweep/{run_id}); it counts once" in text
        assert "Warning" in text
    summary = pd.read_csv(grid_report / "tables" / "summary.csv")
    assert list(summary.n) == [2, 2, 2, 2] and summary.repeated_seeds.sum() == 1
    assert "| repeated seeds |" in (grid_report / "tables" / "summary.md").read_text().replace(" | incomplete", "")


def test_a_completed_run_without_a_final_value_is_shown(grid_report, grid_results):
    empty = [p.parent.name for p in grid_results.rglob("summary.json")
             if json.loads(p.read_text())["final"]["eval_loss"] is None]
    assert len(empty) == 1
    problems = pd.read_csv(grid_report / "tables" / "problems.csv")
    assert problems.run_id.tolist() == empty and problems.status.tolist() == ["completed"]
    assert "no final eval loss" in problems.detail[0] or "without a final eval loss" in problems.detail[0]
    summary = pd.read_csv(grid_report / "tables" / "summary.csv").set_index(["backend", "hidden"])
    assert summary.no_final_value.to_dict() == {("reference", 8): 0, ("reference", 16): 0, ("torch", 8): 1,
                                                ("torch", 16): 0}
    assert summary.completed[("torch", 8)] == 4  # seeds 0 (twice), 1 and 2
    assert "| no final value |" in (grid_report / "tables" / "summary.md").read_text()
    assert f"completed run {empty[0]} (seed 2) has no final eval loss" in (grid_report / "index.md").read_text()


def test_summary_runs_maps_each_configuration_to_its_run_ids(grid_report, grid_results):
    runs = pd.read_csv(grid_report / "tables" / "summary_runs.csv")
    summary = pd.read_csv(grid_report / "tables" / "summary.csv")
    assert sorted(runs.cell.unique()) == list(summary.cell) == [0, 1, 2, 3]
    for path in grid_results.rglob("summary.json"):
        s = json.loads(path.read_text())
        row = runs[runs.path == str(path.parent)].iloc[0]
        cell = summary.loc[row.cell]
        assert (cell.backend, cell.hidden) == (s["config"]["model"]["backend"], s["config"]["model"]["hidden"])
        assert row.run_id == s["run_id"] and row.hidden == s["config"]["model"]["hidden"]
    assert runs.counted.sum() == len(runs) - 1
    assert "| hidden |" in (grid_report / "tables" / "summary.md").read_text()


def test_the_same_records_give_the_same_report_byte_for_byte(report, results, tmp_path):
    again = build_report(results, tmp_path / "again").parent
    files = sorted(p.relative_to(report) for p in report.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    changed = [str(f) for f in files if (report / f).read_bytes() != (again / f).read_bytes()]
    assert changed == []  # no creation dates in the PDFs, no timestamps on the page


def test_the_page_says_which_table_is_for_a_paper(report):
    for page in ("index.md", "index.html"):
        text = (report / page).read_text()
        assert "For a paper: tables/summary_paper.tex" in text and "Every column: tables/summary.tex" in text
    assert (report / "tables" / "summary_paper.tex").exists()
