import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from seqbench.harness.report import data as D
from seqbench.harness.report import tables

from .test_data import hand_written_cell


def test_a_summary_row_from_hand_written_runs():
    cells = pd.DataFrame([{"task": "adding", "length": 100, "label": "lstm", "backend": "torch", "hidden": 64.0,
                           "layers": 1, "lr": 1e-3, "batch_size": 32, "steps": 500,
                           **D.summarise_cell(hand_written_cell())}])
    row = tables.summary(cells).iloc[0].to_dict()
    s = D.summarise_cell(hand_written_cell())
    assert row == {"model": "lstm", "task": "adding", "T": "100", "backend": "torch", "hidden": "64", "layers": "1",
                   "lr": "0.001", "batch": "32", "steps": "500", "baseline loss": "1.7e-1",
                   "final loss": f"1.8e0 ×/÷ {s['loss_factor']:.1f}",
                   "accuracy": f"0.60 [{s['accuracy_lo']:.2f}, {s['accuracy_hi']:.2f}]",
                   "solved": f"2/4 [{s['solve_lo']:.2f}, {s['solve_hi']:.2f}]", "steps to solve": "300",
                   "tokens/s": "20", "params": "50", "n": "3", "diverged": "1", "failed": "1", "incomplete": "1"}


@pytest.mark.parametrize("value, text", [(2e-4, "2.0e-4"), (4.81e-4, "4.8e-4"), (0.1667, "1.7e-1"), (1.0, "1.0e0"),
                                         (12345.0, "1.2e4"), (-0.0123, "-1.2e-2"), (0.0, "0")])
def test_losses_have_two_significant_figures_in_one_notation(value, text):
    assert tables.sci(value) == text


def test_multiplicative_and_bracketed_intervals():
    assert tables.loss_text(2e-4, 2.34) == "2.0e-4 ×/÷ 2.3" and tables.loss_text(2e-4, math.nan) == "2.0e-4"
    assert tables.loss_text(0.5, 31.6) == "5.0e-1 ×/÷ 32" and tables.loss_text(math.nan, 2.0) == ""
    assert tables.interval(0.6, 0.5, 0.7) == "0.60 [0.50, 0.70]" and tables.interval(0.6, math.nan, math.nan) == "0.60"


def test_latex_is_a_captioned_booktabs_table_with_numbers_right_aligned():
    tex = tables.latex(pd.DataFrame({"run_id": ["a_b"], "loss": ["2.0e-4 ×/÷ 2.3"], "rate": ["50%"], "n": ["3"]}),
                       caption="Losses: geometric mean ×/÷ factor", label="tab:x", title="Losses")
    assert tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    assert r"\caption[Losses]{Losses: geometric mean $\times/\div$ factor}" in tex and r"\label{tab:x}" in tex
    assert r"\begin{tabular}{lrlr}" in tex  # "50%" is text here: only numbers are right-aligned
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    assert r"run\_id" in tex and r"a\_b" in tex and r"2.0e-4 $\times/\div$ 2.3" in tex and r"50\%" in tex


def test_markdown_table_escapes_pipes_and_right_aligns_numbers():
    assert tables.markdown(pd.DataFrame({"a": ["x|y"], "b": [1]})) == "| a | b |\n| --- | ---: |\n| x\\|y | 1 |"


def test_html_table_right_aligns_number_columns():
    table = pd.DataFrame({"model": ["lstm", "gru"], "run_id": ["1e3a905ac58e", "0123abcd"],
                          "loss": ["2.0e-4 ×/÷ 2.3", ""], "solved": ["3/4 [0.30, 0.95]", "0/2 [0.00, 0.66]"],
                          "Δ": ["-1.2e-2 [-3.0e-2, 4.1e-3]", "+0.05 [-0.10, 0.20]"]})
    html = tables.html(table)
    heads = re.findall(r"<th( class=\"num\")?>([^<]*)</th>", html)
    assert [name for cls, name in heads if cls] == ["loss", "solved", "Δ"]
    assert '<td class="num">3/4 [0.30, 0.95]</td>' in html and "<td>1e3a905ac58e</td>" in html


def test_status_table_lists_run_ids_and_shortens_long_lists():
    runs = pd.DataFrame({"run_id": [f"id{i}" for i in range(5)], "status": ["completed"] * 4 + ["failed"]})
    full = tables.status(runs)
    assert full.to_dict("list") == {"status": ["completed", "failed"], "runs": [4, 1],
                                    "run_ids": ["id0, id1, id2, id3", "id4"]}
    assert tables.status(runs, shown=2).run_ids[0] == "id0, id1, ... and 2 more (summary_runs.csv)"


def test_comparison_rows_show_the_effect_the_test_and_a_verdict_only_after_holm():
    base = {"task": "adding", "length": 10, "label_a": "lstm", "label_b": "gru", "backend_a": "torch",
            "backend_b": "torch", "cell_a": 0, "cell_b": 1, "set": "test", "test": "sign-flip"}
    comp = pd.DataFrame([
        base | {"metric": "final loss", "pairs": 10, "n_a": 10, "n_b": 10, "value_a": 0.01, "value_b": 0.02,
                "estimate": 0.5, "lo": 0.25, "hi": 0.9, "p": 0.002, "smallest_p": 0.002, "p_adjusted": 0.008,
                "verdict": "lstm lower"},
        base | {"metric": "final accuracy", "pairs": 3, "n_a": 3, "n_b": 3, "value_a": 0.9, "value_b": 0.8,
                "estimate": 0.1, "lo": -0.5, "hi": 0.6, "p": 0.25, "smallest_p": 0.25, "p_adjusted": 1.0,
                "verdict": "n too small"},
        base | {"metric": "solve rate", "set": "", "test": "Fisher exact", "pairs": None, "n_a": 5, "n_b": 4,
                "value_a": 0.6, "value_b": 0.25, "estimate": 0.35, "lo": math.nan, "hi": math.nan, "p": 0.52,
                "smallest_p": 0.008, "p_adjusted": 1.0, "verdict": "no clear difference"},
        base | {"metric": "steps to solve", "set": "", "test": "log-rank (permutation)", "pairs": None, "n_a": 5,
                "n_b": 4, "value_a": 200.0, "value_b": math.inf, "estimate": math.nan, "lo": math.nan, "hi": math.nan,
                "p": 0.3, "smallest_p": 0.008, "p_adjusted": 1.0, "verdict": "no clear difference"}])
    cells = pd.DataFrame({"steps": [1500, 1500]})
    shown = tables.comparisons(comp, cells=cells)
    assert list(shown.columns) == ["task", "T", "A", "B", "backend", "compared", "seeds", "effect", "test", "p",
                                   "p (Holm)", "verdict"]
    assert list(shown.effect) == ["A/B 0.5 [0.25, 0.9]", "A − B +0.10 [-0.50, +0.60]", "3/5 vs 1/4", "200 vs > 1500"]
    assert list(shown.seeds) == ["10 pairs", "3 pairs", "5 / 4", "5 / 4"]
    assert list(shown.p) == ["0.002", "0.25", "0.52", "0.3"] and shown["p (Holm)"][0] == "0.008"
    assert list(shown.verdict) == list(comp.verdict)


def caption_and_columns(tex: str) -> tuple[str, list[str]]:
    """A LaTeX table's caption text and its header's column names."""
    caption = re.search(r"\\caption\[[^]]*\]\{(.*)\}\n", tex).group(1)
    header = tex.split("\\toprule\n")[1].split(" \\\\")[0]
    return caption, header.split(" & ")


def test_the_paper_table_keeps_what_varies_and_names_the_rest_once(report):
    tex = (report / "tables" / "summary_paper.tex").read_text()
    caption, columns = caption_and_columns(tex)
    assert columns == ["task", "T", "model", "final loss", "accuracy", "solved", "steps to solve"]
    assert re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1) == "lrlrrrl"  # '> 6' is text
    assert len(caption) < 600  # the full table's caption: about 2,000 characters
    for shared in ("2 seeds (0, 1)", "optimizer adam", "hidden 8", "layers 1 (transformer: 2)", "lr 0.001", "batch 4",
                   "steps 6", "geometric mean", "Student-t", "Gaffke", "Kaplan--Meier"):
        assert shared in caption, shared
    rows = tex.split("\\midrule\n", 1)[1].split("\\bottomrule")[0]
    assert rows.count("\\midrule") == 1  # between the two tasks
    first, second = rows.splitlines()[:2]
    assert first.startswith("adding & 8 & lstm & ") and second.startswith(" &  & transformer & ")  # no repeats
    for line in (r"\toprule", r"\bottomrule"):
        assert line in tex
    assert sum(size in tex for size in tables.SIZES) == 1  # a type size that fits the page
    full = (report / "tables" / "summary.tex").read_text()
    assert len(caption_and_columns(full)[1]) > 15  # every column stays in the full table


def test_configurations_are_columns_of_the_paper_table_and_one_model_goes_in_the_caption(grid_data):
    table, caption = tables.paper(grid_data)
    assert list(table.columns) == ["backend", "hidden", "final loss", "accuracy", "solved", "steps to solve"]
    assert sorted(zip(table.backend, table.hidden)) == [(b, h) for b in ("reference", "torch") for h in ("16", "8")]
    assert "model lstm" in caption and "task adding" in caption and "T = 8" in caption and "hidden" not in caption


WIDE = pd.DataFrame({"task": ["selective_copy"] * 2, "T": ["1000"] * 2, "budget": ["80k"] * 2,
                     "model": ["transformer", "minlstm-L2"], "final loss": ["6.1e-4 ×/÷ 1.1e2"] * 2,
                     "accuracy": ["0.82 [0.48, 1.00]"] * 2, "solved": ["10/10", "9/10"], "n": ["10", "9"]})


def test_a_wide_paper_table_is_set_in_smaller_type():
    assert tables.type_size(WIDE.iloc[:, [1, 3, 4, 5, 6]]) == r"\small"  # T, model and the results
    assert tables.type_size(WIDE) == r"\scriptsize"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex")
def test_paper_tables_fit_the_text_width(report, tmp_path):
    (tmp_path / "wide.tex").write_text(tables.latex(WIDE, "A caption.", "tab:wide", groups=3, compact=True))
    shutil.copy(report / "tables" / "summary_paper.tex", tmp_path / "report.tex")
    for name in ("wide", "report"):
        (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                          f"\\input{{{name}.tex}}\n\\end{{document}}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        log = (tmp_path / "doc.log").read_text(errors="replace")
        assert done.returncode == 0, log[-2000:]
        assert "Overfull \\hbox" not in log, name  # wider than \textwidth (345pt)
