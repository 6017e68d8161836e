import math

import pandas as pd

from harness.report import data as D
from harness.report import tables

from .test_data import hand_written_cell


def test_a_summary_row_from_hand_written_runs():
    cells = pd.DataFrame([{"task": "adding", "length": 100, "label": "lstm", "backend": "torch",
                           **D.summarise_cell(hand_written_cell())}])
    row = tables.summary(cells).iloc[0].to_dict()
    assert row == {"model": "lstm", "task": "adding", "T": "100", "final eval loss": "2 ± 2.48",
                   "accuracy": "0.600 ± 0.248", "solve rate": "0.75", "steps to solve": "100", "tokens/s": "20",
                   "params": "50", "n": "3", "diverged": "1", "failed": "1", "incomplete": "1"}


def test_one_seed_has_no_interval_and_no_value_is_blank():
    assert tables.mean_pm(0.5, math.nan, ".3g") == "0.5"
    assert tables.mean_pm(math.nan, math.nan, ".3g") == ""


def test_latex_is_booktabs_with_specials_escaped():
    tex = tables.latex(pd.DataFrame({"run_id": ["a_b"], "loss": ["1 ± 2"], "rate": ["50%"]}))
    assert tex.startswith(r"\begin{tabular}{lll}") and tex.rstrip().endswith(r"\end{tabular}")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    assert r"run\_id" in tex and r"a\_b" in tex and r"1 $\pm$ 2" in tex and r"50\%" in tex


def test_markdown_table_escapes_pipes():
    assert tables.markdown(pd.DataFrame({"a": ["x|y"], "b": [1]})) == "| a | b |\n| --- | --- |\n| x\\|y | 1 |"


def test_status_table_lists_run_ids_and_shortens_long_lists():
    runs = pd.DataFrame({"run_id": [f"id{i}" for i in range(5)], "status": ["completed"] * 4 + ["failed"]})
    full = tables.status(runs)
    assert full.to_dict("list") == {"status": ["completed", "failed"], "runs": [4, 1],
                                    "run_ids": ["id0, id1, id2, id3", "id4"]}
    assert tables.status(runs, shown=2).run_ids[0] == "id0, id1, ... and 2 more (summary_runs.csv)"
