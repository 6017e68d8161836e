"""The report's tables, written as Markdown, CSV, LaTeX (a booktabs `table` with caption and label, ready to
`\\input`) and HTML (for the page).

`summary`: one row per cell (one configuration up to its seeds), every column; `summary_paper.tex`: the same rows
compact enough for a paper's page (`paper`); `comparisons`: paired differences between two models; `status` and
`problems`: the runs that did not complete or have no final value; `summary_runs.csv`: every cell's run_ids. CSVs keep
full-precision numbers; the other formats show rounded text, numbers right-aligned.
"""

from __future__ import annotations

import html as html_
import itertools
import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from . import data as D

#: at most this many run_ids per status in the Markdown/HTML/LaTeX status table (the CSVs list them all)
SHOWN_IDS = 12
#: how the settings are headed in the tables
SETTING_NAMES = {"hidden": "hidden", "layers": "layers", "lr": "lr", "batch_size": "batch", "steps": "steps"}
MISSING = "–"  # a key this cell's model or task does not have

#: how each interval is computed, named as the captions name it (harness/report/stats.py; docs/reports.md)
LOSS_CI = ("95% Student-t interval on the log loss (geometric mean ×/÷ factor, i.e. [mean ÷ factor, mean × factor]; "
           "exact where log losses are normal over seeds)")
ACCURACY_CI = ("95% Gaffke interval for a mean bounded in [0, 1] (Gaffke 2005, Learned-Miller & Thomas 2019): "
               "nonparametric, it holds its level whatever the seeds' distribution, seeds at exactly 0 or 1 included, "
               "and so is wide with few seeds")
SOLVE_CI = "95% Clopper–Pearson (exact binomial) interval"
STEPS_TEXT = ("Kaplan–Meier median over finished seeds, a seed that did not solve censored at its step budget (a "
              "diverged one where it diverged); '> N': fewer than half solved within the budget of N steps")


def set_text(sets) -> str:
    """Which set the final numbers of these rows come from, in words (see data.FINAL_SETS)."""
    sets = set(sets)
    if len(sets) == 1:
        return f"on the {D.FINAL_SETS[sets.pop()]}"
    return (f"on the {D.FINAL_SETS['test']} where every run of the row has one (set: test), else on the "
            f"{D.FINAL_SETS['eval']} (set: eval)")


def summary_note(sets=("test", "eval")) -> str:
    """The summary's caption, for rows whose final numbers come from `sets`."""
    return (
        "One row per configuration: task, T, model, the backend that ran (from each run's recorded kernel path: triton "
        "= a fused Triton kernel, reference (fallback) = a fused module's reference step loop, torch = torch.nn) and "
        "every config key whose value differs between the runs of this report (seeds and operational keys aside); "
        f"hidden is d_model for the Transformer. Final loss and accuracy {set_text(sets)}. Final loss: geometric mean "
        f"over seeds ×/÷ the factor of its {LOSS_CI}. Accuracy (adding: fraction with |error| < 0.04; the other tasks: "
        "accuracy on the positions that carry a target, e.g. copy's recall window, selective copy's markers, MQAR's "
        f"queries, the last step of induction heads): mean over seeds [{ACCURACY_CI}]. Solved: solved / finished "
        f"(completed or diverged) runs [{SOLVE_CI}]; a diverged run is never solved, even if it met the criterion "
        f"before diverging. Steps to solve: {STEPS_TEXT}. Baseline loss: the task's analytic baseline. tokens/s: mean "
        "steady-state training throughput. n: distinct seeds completed with a final loss (a seed recorded twice counts "
        "once); no final value: completed seeds without one (listed under problems). No interval for one seed. "
        "Figures show completed runs, one record per seed.")


def comparison_note(sets=("test", "eval")) -> str:
    """The comparisons' caption, for final numbers from `sets`."""
    return (
        "Two models in the same task, T and settings, one row per compared quantity. Runs that trained a fixed number "
        f"of steps compare final values {set_text(sets)}, over the seeds both completed (pairs): final loss as the "
        "ratio A/B of geometric means [95% Student-t interval on the paired log-loss differences], accuracy as the "
        "mean difference A − B [95% Gaffke interval for a mean bounded in [−1, 1]: it holds its level for any "
        "distribution, so it is wide with few pairs], each tested by the exact sign-flip permutation test (all 2^n "
        "sign assignments; on log losses). Where either model's runs were configured to stop at the solved criterion "
        "(train.early_stop), final values were measured at different steps and are not compared; instead solve rate "
        "(solved / finished, Fisher's exact test) and steps to solve (Kaplan–Meier medians, unsolved seeds censored at "
        "their budget; log-rank test with its exact permutation null), over every finished seed of the pair, those "
        "that ran to the end too (which seeds stop early depends on the outcome). p: the test's two-sided p-value; "
        "p (Holm): adjusted over every comparison of this report (Holm's step-down). A verdict only where p (Holm) < "
        "0.05; 'n too small' where even the most extreme outcome could not reach p < 0.05 with these seeds (3 pairs: "
        "0.25, 5 pairs: 0.0625).")


def lengths_note(sets=("test", "eval")) -> str:
    """The lengths table's caption; `sets`: where the training length's (1×) numbers come from."""
    return (
        "Length generalisation, for the configurations run with eval.lengths: final accuracy at each evaluation "
        "length, headed by its multiple of the training length T (1× is T itself, "
        f"{set_text(sets)}; the other lengths on their eval.lengths evaluation sets), as mean over seeds "
        f"[{ACCURACY_CI}]. Beyond T: each seed's mean accuracy over the evaluated lengths above T, as mean over seeds "
        "[the same interval] and as the best seed. Protocol: 'Delétang et al.' where the runs followed theirs, trained "
        "at lengths drawn per batch up to T (task.length_dist=uniform) and evaluated at every length above T, which "
        "makes this their score (they reported the best seed; the mean is the fairer summary); 'fixed T' where the "
        "runs trained at T alone or skipped lengths, so the number is the same average but not their score. n: seeds. "
        "A blank: that length was not evaluated.")


SUMMARY_NOTE, COMPARISON_NOTE, LENGTHS_NOTE = summary_note(), comparison_note(), lengths_note()
STATUS_NOTE = "Runs by status, with their run_ids."
PROBLEMS_NOTE = ("Runs that did not complete, or completed without a final eval loss (left out of the statistics, "
                 "counted under no final value), with what their records say.")


def _blank(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def sci(x, digits: int = 2, sign: bool = False) -> str:
    """Scientific notation with `digits` significant figures and a short exponent: 2.0e-4, 1.7e-1, -3.1e+2."""
    if _blank(x):
        return ""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:{'+' if sign else ''}.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def factor_text(f) -> str:
    """A multiplicative half-width with 2 significant figures: 1.3, 12, 3.4e3."""
    return sci(f) if f >= 100 else f"{f:.1f}" if f < 10 else f"{f:.0f}"


def loss_text(gmean, factor) -> str:
    """'2.0e-4 ×/÷ 2.3' (the interval [2.0e-4 / 2.3, 2.0e-4 × 2.3]); no factor for one seed; '' without a value."""
    if _blank(gmean):
        return ""
    return sci(gmean) if _blank(factor) else f"{sci(gmean)} ×/÷ {factor_text(factor)}"


def interval(value, lo, hi, fmt=".2f") -> str:
    """'0.60 [0.50, 0.70]'; the value alone without an interval; '' without a value."""
    if _blank(value):
        return ""
    text = fmt(value) if callable(fmt) else f"{value:{fmt}}"
    if _blank(lo):
        return text
    return f"{text} [{fmt(lo) if callable(fmt) else f'{lo:{fmt}}'}, {fmt(hi) if callable(fmt) else f'{hi:{fmt}}'}]"


def _number(x, fmt: str) -> str:
    return "" if _blank(x) else f"{x:{fmt}}"


def _sig3(x) -> str:
    """Three significant figures, thousands separated: 12,300, 45.6."""
    return "" if _blank(x) else f"{float(f'{x:.3g}'):,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def key_text(value) -> str:
    return D._text(value) or MISSING


def _keys(frame: pd.DataFrame, keys) -> dict:
    """The varying keys that are not settings every table shows anyway, as text columns."""
    return {k: frame[k].map(key_text) for k in keys if k not in SETTING_NAMES}


def _solved(c) -> str:
    if not c.finished:
        return ""
    return f"{c.solved}/{c.finished} [{c.solve_lo:.2f}, {c.solve_hi:.2f}]"


def _mixed(cells: pd.DataFrame) -> bool:
    """Whether some rows' final numbers come from the test set and others' from the evaluation set."""
    return "final_set" in cells and cells.final_set.nunique() > 1


def _budgets(cells: pd.DataFrame) -> pd.Series:
    return cells["steps"] if "steps" in cells else pd.Series(math.nan, index=cells.index)


def steps_text(median, budget) -> str:
    """The Kaplan–Meier median step to solve: '200'; '> 1500' where fewer than half solved within the budget of
    1500 steps ('> budget' where the budget is unknown); '' without finished seeds."""
    if _blank(median):
        return ""
    if math.isinf(median):
        return f"> {key_text(budget)}" if not _blank(budget) else "> budget"
    return f"{median:.0f}"


def summary(cells: pd.DataFrame, keys=()) -> pd.DataFrame:
    """The summary table as display text (see `data.summarise_cell` for what each number is)."""
    c = cells
    table = pd.DataFrame({
        "model": c.label, "task": c.task, "T": c.length.astype(str), "backend": c.backend, **_keys(c, keys),
        **{name: c[k].map(key_text) if k in c else MISSING for k, name in SETTING_NAMES.items()},
        "baseline loss": c.baseline_loss.map(sci),
        **({"set": c.final_set} if _mixed(c) else {}),
        "final loss": [loss_text(g, f) for g, f in zip(c.loss_gmean, c.loss_factor)],
        "accuracy": [interval(m, lo, hi) for m, lo, hi in zip(c.accuracy_mean, c.accuracy_lo, c.accuracy_hi)],
        "solved": [_solved(row) for row in c.itertuples()],
        "steps to solve": [steps_text(x, budget) for x, budget in zip(c.steps_to_solve, _budgets(c))],
        "tokens/s": c.tokens_per_s.map(_sig3),
        "params": [_number(x, ",.0f") for x in c.params],
        "n": c.n.astype(str),
    })
    extra = {"no final value": "no_final_value", "repeated seeds": "repeated_seeds", "diverged": "diverged",
             "failed": "failed", "incomplete": "incomplete"}
    for name, column in extra.items():  # counts only where some run ended so
        if c[column].any():
            table[name] = c[column].astype(str)
    return table


# --- the paper table ------------------------------------------------------------------------------------------------
#: the settings a paper table names once, in its caption, where all its rows share them: short name -> config columns
PAPER_SETTINGS = {"optimizer": ("config.train.optimizer",), **D.SETTINGS}
PAPER_FILE = "summary_paper.tex"


def _grouped(values: pd.Series, groups: pd.Series) -> str | None:
    """'1000' where every row has that value, '1000 (copy: 1500)' where the value is one per group (the most common
    first, the exceptions in parentheses); None where a group has two values."""
    values = values.map(key_text)
    per_group = values.groupby(list(groups)).unique()
    if values.nunique() == 1:
        return values.iloc[0]
    if per_group.map(len).max() > 1:
        return None
    common = Counter(v[0] for v in per_group).most_common(1)[0][0]  # the most groups' value; ties: the first group's
    others = [f"{g}: {v[0]}" for g, v in per_group.items() if v[0] != common]
    return f"{common} ({', '.join(others)})"


def count_text(x) -> str:
    """A parameter count, short: 20k, 1.5M, 800."""
    if _blank(x):
        return MISSING
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:g}"


def _seeds(seeds) -> str:
    """'0–2', '0, 1, 5' (a range where the seeds are consecutive)."""
    seeds = sorted({int(s) for s in seeds})
    if not seeds:
        return "none completed"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def paper(d: D.ReportData) -> tuple[pd.DataFrame, str]:
    """The summary compact enough for a page: the columns that differ between rows (task, T, the budget, model, the
    backend and keys that separate configurations within a task) and the results (final loss, accuracy, solved, and n
    where it differs); what every row shares (settings, seeds) and what the statistics are go in a short caption,
    returned with the table."""
    c, keys = d.cells, D.pairing_keys(d.runs, d.keys)
    in_table = [k for k in keys if c[k].map(key_text).groupby(c.task).nunique().max() > 1]  # the rest: one per task
    identity = {"task": c.task, "T": c.length.astype(str),
                **({"budget": c.budget.map(count_text)} if "budget" in in_table else {}),  # models side by side
                "model": c.label, "backend": c.backend}
    columns, shared = {}, []
    for name, values in identity.items():
        if values.nunique() > 1:
            columns[name] = values
        elif name != "backend" or values.iloc[0] != "torch":  # the usual backend goes without saying
            shared.append(f"T = {values.iloc[0]}" if name == "T" else f"{name} {values.iloc[0]}")
    for k in in_table:
        columns.setdefault(SETTING_NAMES.get(k, k), c[k].map(key_text))
    shared += [f"{k} {_grouped(c[k], c.task)}" for k in keys if k not in in_table and k not in PAPER_SETTINGS]
    shared += _shared_settings(d, taken=[*in_table, *columns])
    results = {"final loss": [loss_text(g, f) for g, f in zip(c.loss_gmean, c.loss_factor)],
               "accuracy": [interval(m, lo, hi) for m, lo, hi in zip(c.accuracy_mean, c.accuracy_lo, c.accuracy_hi)],
               "solved": [f"{s}/{f}" if f else "" for s, f in zip(c.solved, c.finished)],
               "steps to solve": [steps_text(x, b) for x, b in zip(c.steps_to_solve, _budgets(c))]}
    if _mixed(c):
        columns["set"] = c.final_set
    columns |= {name: values for name, values in results.items() if any(values)}
    done = d.runs[d.runs.counted & (d.runs.status == "completed")]
    if c.n.nunique() > 1:
        columns["n"] = c.n.astype(str)
        seeds = f"seeds {_seeds(done['config.seed'])} (n: those with a final value)"
    else:
        seeds = f"{c.n.iloc[0]} seeds ({_seeds(done['config.seed'])})"
    notes = {t: d.words(t)["accuracy_note"] for t in c.task.unique()}
    accuracy = "; ".join(f"{t}: {note}" for t, note in notes.items() if note)
    where = set_text(c.final_set) if not _mixed(c) else "(set: test = held-out test set, eval = evaluation set)"
    caption = (f"Final values {where}. Loss: geometric mean over seeds ×/÷ its 95% Student-t factor (log scale). "
               f"Accuracy{f' ({accuracy})' if accuracy else ''}: mean over seeds [95% Gaffke interval]. Solved: runs "
               "that met the task's criterion / runs finished. Steps to solve: Kaplan–Meier median ('> N': under half "
               f"solved in N steps). Each row: {seeds}; {', '.join(shared)}. Every column: summary.tex.")
    return pd.DataFrame(columns).reset_index(drop=True), caption


def _shared_settings(d: D.ReportData, taken) -> list[str]:
    """'lr 0.003', 'steps 1000 (copy: 1500)', 'layers 1 (transformer: 2)': the PAPER_SETTINGS that are not columns
    (`taken`), as every run has them, or one per task, or one per model."""
    runs, out = d.runs, []
    for name, sources in PAPER_SETTINGS.items():
        if name in taken or SETTING_NAMES.get(name) in taken:
            continue
        if D.budgeted(runs, d.keys) and name in D.WIDTHS:
            out.append("each model's width chosen to match the budget (full table)")
            continue
        values = pd.Series(None, index=runs.index, dtype=object)
        for source in (s for s in sources if s in runs):  # the Transformer's width is its d_model
            values = values.fillna(runs[source])
        values = values.dropna()
        if len(values):
            text = _grouped(values, runs.task[values.index]) or _grouped(values, runs.label[values.index])
            out.append(f"{SETTING_NAMES.get(name, name)} {text}" if text else f"{name}: differs (full table)")
    return out


def _ratio_text(r: float) -> str:
    return f"{r:g}×" if r >= 1 or math.isclose(r, round(r, 2)) else f"{r:.2g}×"


def lengths(d: D.ReportData) -> pd.DataFrame:
    """Accuracy at each evaluation length and the beyond-training score, one row per configuration with eval.lengths
    (see LENGTHS_NOTE)."""
    lc = D.length_cells(d.lengths)
    if lc.empty:
        return pd.DataFrame()
    score = D.beyond_training(d.lengths, d.runs)
    ratios = sorted(lc.ratio.unique())
    rows = []
    for cell, g in lc.groupby("cell", sort=True):
        c, at = d.cells.loc[cell], {r: row for r, row in zip(g.ratio, g.itertuples())}
        row = {"model": c.label, "task": c.task, "T": str(c.length), "backend": c.backend,
               **{k: key_text(c[k]) for k in d.keys if k not in SETTING_NAMES},
               **{_ratio_text(r): (interval(at[r].mean, at[r].lo, at[r].hi) if r in at else "") for r in ratios}}
        if cell in score.index:
            sc = score.loc[cell]
            row |= {"beyond T: mean": interval(sc["mean"], sc.lo, sc.hi), "beyond T: best seed": f"{sc.best:.2f}",
                    "protocol": "Delétang et al." if sc.deletang else "fixed T"}
        else:
            row |= {"beyond T: mean": "", "beyond T: best seed": "", "protocol": ""}
        rows.append(row | {"n": str(int(g.n.max()))})
    order = D.sort_cells(d.cells.loc[lc.cell.unique()], d.keys).index
    table = pd.DataFrame(rows, index=sorted(lc.cell.unique()))
    return table.loc[[i for i in order if i in table.index]].reset_index(drop=True)


def p_text(p) -> str:
    """A p-value with 2 significant figures: 0.25, 0.0031, 1.2e-6; '' without one."""
    return "" if _blank(p) else sci(p) if p < 1e-3 else f"{float(f'{p:.2g}'):g}"


def _count(rate, n) -> str:
    return f"{round(rate * n)}/{n}" if n else "0/0"


def effect_text(r) -> str:
    """What a comparison row found, A against B: the loss ratio or accuracy difference with its interval, solve
    counts, Kaplan–Meier medians."""
    if r.metric == "final loss":
        return "" if _blank(r.estimate) else f"A/B {interval(r.estimate, r.lo, r.hi, '.2g')}"
    if r.metric == "final accuracy":
        return f"A − B {interval(r.estimate, r.lo, r.hi, '+.2f')}"
    if r.metric == "solve rate":
        return f"{_count(r.value_a, r.n_a)} vs {_count(r.value_b, r.n_b)}"
    return f"{steps_text(r.value_a, r.steps)} vs {steps_text(r.value_b, r.steps)}"


def _seeds_compared(r) -> str:
    return f"{int(r.pairs)} pairs" if r.metric.startswith("final") else f"{int(r.n_a)} / {int(r.n_b)}"


def comparisons(comp: pd.DataFrame, keys=(), cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """The comparisons as display text (see `data.comparisons`): one row per pair of models and compared quantity;
    `cells` give the step budgets that '> N' names."""
    budget = cells["steps"].reindex(comp.cell_a).to_numpy() if cells is not None and "steps" in cells else math.nan
    c = comp.assign(steps=comp["steps"] if "steps" in comp else budget)
    backend = [a if a == b else f"{a} / {b}" for a, b in zip(c.backend_a, c.backend_b)]
    compared = [f"{m} ({s})" if s else m for m, s in zip(c.metric, c.set)] if _mixed_sets(c) else c.metric
    settings = [SETTING_NAMES[k] for k in keys if k in SETTING_NAMES]
    columns = ["task", "T", "A", "B", "backend", *_keys(c, keys), *settings, "compared", "seeds", "effect", "test",
               "p", "p (Holm)", "verdict"]
    return pd.DataFrame({
        "task": c.task, "T": c.length.astype(str), "A": c.label_a, "B": c.label_b, "backend": backend,
        **_keys(c, keys), **{SETTING_NAMES[k]: c[k].map(key_text) for k in keys if k in SETTING_NAMES},
        "compared": compared, "seeds": [_seeds_compared(r) for r in c.itertuples()],
        "effect": [effect_text(r) for r in c.itertuples()], "test": c.test,
        "p": c.p.map(p_text), "p (Holm)": c.p_adjusted.map(p_text), "verdict": c.verdict,
    }, columns=columns)


def _mixed_sets(comp: pd.DataFrame) -> bool:
    return comp.set[comp.set != ""].nunique() > 1


def sci_signed(x) -> str:
    return sci(x, sign=True)


def cell_runs(runs: pd.DataFrame, keys=()) -> pd.DataFrame:
    """Every run with its cell (the row of summary.csv), cell keys, seeds and status: which run_ids make up each row of
    the summary; `counted` is False for a record that repeats a seed already counted in its cell."""
    cols = ["cell", *D.CELL, *keys, *D.SEED, "status", "counted", "run_id", "kernel_path", "path"]
    out = runs.reindex(columns=cols).sort_values(["cell", *D.SEED, "run_id"], kind="stable")
    return out.rename(columns={c: c.removeprefix("config.") for c in D.SEED})


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
    """Why a run did not complete, or has no final value, from its record."""
    if run.status == "completed":
        return "completed without a final eval loss (NaN or null): left out of the statistics"
    if run.status == "diverged":
        return f"non-finite loss or gradient at step {run.get('diverged_step'):.0f}"
    if run.status == "failed":
        return str(run.get("error", "")).splitlines()[0][:200] if not _blank(run.get("error")) else "no error recorded"
    if _blank(run.get("last_step")):
        return "no summary and no metrics yet"
    return f"no summary; metrics logged up to step {run.last_step:.0f}"


def problems(runs: pd.DataFrame, keys=()) -> pd.DataFrame:
    """One row per diverged, failed or incomplete run, and per completed run without a final eval loss, with what
    its record says went wrong."""
    loss = pd.to_numeric(runs.get("final.eval_loss", pd.Series(math.nan, index=runs.index)), errors="coerce")
    bad = D.sort_cells(runs[(runs.status != "completed") | loss.isna()], keys)
    return pd.DataFrame({"run_id": bad.run_id, "status": bad.status, "model": bad.label, "task": bad.task,
                         "T": bad.length.astype(str), "backend": bad.backend, **_keys(bad, keys),
                         **{SETTING_NAMES[k]: bad[k].map(key_text) for k in keys if k in SETTING_NAMES},
                         "seed": bad["config.seed"].astype(str) if len(bad) else [],
                         "detail": [_detail(r) for _, r in bad.iterrows()]})


# --- formats -------------------------------------------------------------------------------------------------------
NUMBER = re.compile(r"[-+−]?\d[\d,]*(\.\d*)?(e[-+]?\d+)?(\s|/|$)")


def numeric(column: pd.Series) -> bool:
    """Whether a display column holds numbers (each shown cell starts with one): right-aligned."""
    return all(NUMBER.match(str(v)) for v in column if str(v) not in ("", MISSING))


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency), numbers right-aligned."""
    def row(values):
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    rule = ["---:" if numeric(table[c]) else "---" for c in table.columns]
    return "\n".join([row(table.columns), row(rule), *map(row, table.itertuples(index=False))])


TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
                "<": r"\textless{}", ">": r"\textgreater{}"}
TEX_SYMBOLS = {"×/÷": r"$\times/\div$", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "--", "–": "--", "≤": r"$\le$",
               "÷": r"$\div$", "×": r"$\times$"}


def tex(text) -> str:
    """`text` with LaTeX specials escaped and the report's symbols in math mode."""
    out = "".join(TEX_SPECIALS.get(ch, ch) for ch in str(text))
    for symbol, replacement in TEX_SYMBOLS.items():
        out = out.replace(symbol, replacement)
    return out


#: a compact table is set in the largest of these type sizes that fits TEXT_WIDTH_PT: points per character of the
#: reports' tables in Computer Modern (measured with pdflatex; smaller sizes are set relatively wider)
SIZES = {r"\small": 4.15, r"\footnotesize": 3.8, r"\scriptsize": 3.6}
#: the text width of LaTeX's article class at 10pt, narrower than most papers' (in points); a column gap of 4pt
TEXT_WIDTH_PT, COLUMN_GAP_PT = 345, 4


def type_size(table: pd.DataFrame) -> str:
    """The largest of SIZES in which `table` is estimated to fit TEXT_WIDTH_PT with 5% to spare, from its widest text
    per column (the smallest where none does)."""
    chars = sum(max(len(str(v)) for v in [c, *table[c]]) for c in table.columns)
    gaps = 2 * COLUMN_GAP_PT * len(table.columns)
    fits = [name for name, pt in SIZES.items() if pt * chars + gaps <= 0.95 * TEXT_WIDTH_PT]
    return fits[0] if fits else list(SIZES)[-1]


def latex(table: pd.DataFrame, caption: str = "", label: str = "", title: str = "", groups: int = 0,
          compact: bool = False) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule) in a `table` environment with `caption` (`title` in
    the list of tables) and `label`, numbers right-aligned, LaTeX specials (_ % & ...) escaped. `groups`: how many
    leading columns group the rows: a value that repeats the row above's is left blank, a rule comes before each new
    value of the first; `compact`: type small
    enough for the page's width (`type_size`) and narrow column gaps."""
    align = "".join("r" if numeric(table[c]) else "l" for c in table.columns)
    short = f"[{tex(title)}]" if title else ""
    body, previous = [], None
    for row in table.itertuples(index=False):
        row = list(row)
        lead = row[:groups]
        if previous is not None and lead[:1] != previous[:1]:
            body.append(r"\midrule")
        same = 0  # how many leading group values repeat the row above's
        while previous is not None and same < len(lead) and lead[same] == previous[same]:
            same += 1
        previous = lead
        body.append(" & ".join(["" if i < same else tex(v) for i, v in enumerate(row)]) + r" \\")
    size = [type_size(table), rf"\setlength{{\tabcolsep}}{{{COLUMN_GAP_PT}pt}}"] if compact else []
    lines = [r"\begin{table}[htbp]", r"\centering", *size, rf"\caption{short}{{{tex(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(map(tex, table.columns)) + r" \\", r"\midrule",
             *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def html(table: pd.DataFrame) -> str:
    """An HTML table, numbers right-aligned (class `num`)."""
    cls = ['class="num"' if numeric(table[c]) else "" for c in table.columns]

    def cells(tag, values):
        return "".join(f"<{tag} {c}>{html_.escape(str(v))}</{tag}>".replace(" >", ">") for c, v in zip(cls, values))

    rows = "".join(f"<tr>{cells('td', row)}</tr>" for row in table.itertuples(index=False))
    return f"<table><thead><tr>{cells('th', table.columns)}</tr></thead><tbody>{rows}</tbody></table>"


def write(table: pd.DataFrame, folder: Path, name: str, csv: pd.DataFrame | None = None,
          caption: tuple[str, str] | None = None) -> None:
    """`name`.md, `name`.tex (captioned by `caption`, (title, note), default CAPTIONS[name]) and `name`.csv (`csv` if
    given: the same rows with full-precision numbers)."""
    title, note = caption or CAPTIONS[name]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(markdown(table) + "\n")
    (folder / f"{name}.tex").write_text(latex(table, f"{title}. {note}", f"tab:seqbench-{name}", title))
    (table if csv is None else csv).to_csv(folder / f"{name}.csv", index=False)


#: name -> (title, note): each table's caption on the page and in LaTeX
CAPTIONS = {"summary": ("Summary", SUMMARY_NOTE), "comparisons": ("Paired model comparisons", COMPARISON_NOTE),
            "lengths": ("Accuracy at each length", LENGTHS_NOTE),
            "status": ("Runs by status", STATUS_NOTE), "problems": ("Problems", PROBLEMS_NOTE)}


def captions(d: D.ReportData) -> dict[str, tuple[str, str]]:
    """CAPTIONS with the notes that depend on the data said for `d`: which set the final numbers come from."""
    at_t = d.lengths.set[d.lengths.eval_length == d.lengths.length] if len(d.lengths) else []
    comp_sets = [s for s in d.comparisons.get("set", []) if s]
    return CAPTIONS | {
        "summary": (CAPTIONS["summary"][0], summary_note(d.cells.final_set)),
        "comparisons": (CAPTIONS["comparisons"][0], comparison_note(comp_sets or ["eval"])),
        "lengths": (CAPTIONS["lengths"][0], lengths_note(at_t if len(at_t) else ["eval"]))}


def write_all(d: D.ReportData, folder: Path) -> dict[str, pd.DataFrame]:
    """Write every table under `folder`; return the display tables by name, for the page."""
    shown = {"summary": summary(d.cells, d.keys),
             "comparisons": comparisons(d.comparisons, D.pairing_keys(d.runs, d.keys), d.cells),
             "lengths": lengths(d), "status": status(d.runs, SHOWN_IDS), "problems": problems(d.runs, d.keys)}
    full = {"summary": d.cells.rename_axis("cell").reset_index(), "comparisons": d.comparisons,
            "status": status(d.runs), "lengths": d.lengths}
    notes = captions(d)
    for name, table in shown.items():
        if name == "lengths" and table.empty:  # no run with eval.lengths: no stale file from an earlier report
            for ext in ("md", "tex", "csv", "html"):
                (folder / f"lengths.{ext}").unlink(missing_ok=True)
            continue
        write(table, folder, name, csv=full.get(name), caption=notes[name])
    compact, caption = paper(d)
    grouping = sum(1 for _ in itertools.takewhile(lambda c: c in ("task", "T", "budget"), compact.columns))
    (folder / PAPER_FILE).write_text(latex(compact, caption, "tab:seqbench-summary-paper", "Results", grouping,
                                           compact=True))
    cell_runs(d.runs, d.keys).to_csv(folder / "summary_runs.csv", index=False)
    return shown
