"""The report laid out by parameter budget (runs with model.params): cells keyed by the budget, not by the widths it
chose; models side by side at each budget in the summary; paired comparisons at equal budgets; the budget figure."""

import json

import pytest

from seqbench.harness.report import build_report, data, figures
from seqbench.harness.train import execute
from seqbench.harness.config import parse_overrides, resolve
from tests.harness.conftest import TINY

MODELS = ("gru", "mingru", "transformer")
BUDGETS = (3000, 9000)


@pytest.fixture(scope="module")
def budget_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets")
    for model in MODELS:
        for budget in BUDGETS:
            for seed in (0, 1):
                cfg = resolve(parse_overrides([*TINY, "device=cpu", f"model={model}", f"model.params={budget}",
                                               f"seed={seed}"]))
                execute(cfg, root / "runs", progress=False)
    return root / "runs"


def test_cells_are_keyed_by_the_budget_and_the_models_sit_side_by_side(budget_results):
    d = data.load(budget_results)
    assert "budget" in d.keys and d.runs.budget.notna().all()
    assert len(d.cells) == len(MODELS) * len(BUDGETS) and (d.cells.n == 2).all()
    # the widths differ between models (they follow from the budget) but draw no line styles
    assert d.cells.hidden.nunique() > 2
    assert set(d.cells.variant) == {f"budget={b}" for b in BUDGETS}
    assert list(zip(d.cells.budget, d.cells.label)) == [(b, m) for b in BUDGETS for m in MODELS]


def test_models_are_compared_at_equal_budgets(budget_results):
    d = data.load(budget_results)
    comp = d.comparisons
    assert len(comp) == len(BUDGETS) * 3 * 2  # three pairs of models at each budget, each on loss and accuracy
    assert (comp.pairs == 2).all()
    for row in comp.itertuples():
        a, b = d.cells.loc[row.cell_a], d.cells.loc[row.cell_b]
        assert a.budget == b.budget == row.budget and a.hidden != b.hidden


def test_the_budget_figure_and_the_tables(budget_results, tmp_path):
    index = build_report(budget_results, tmp_path / "report")
    page = index.with_suffix(".md").read_text()
    assert "![final_vs_budget](figures/final_vs_budget.png)" in page
    summary = (tmp_path / "report" / "tables" / "summary.csv").read_text().splitlines()
    header = summary[0].split(",")
    assert {"budget", "hidden", "params"} <= set(header)
    counts = {json.loads(p.read_text())["params"] for p in budget_results.glob("*/summary.json")}
    assert len(counts) == len(MODELS) * len(BUDGETS)  # each width its own count, the budget column the target


def test_no_budget_figure_without_budgets(results):
    d = data.load(results / "sweep")
    assert figures.final_vs_budget(d) is None
