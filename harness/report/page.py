"""The report's pages: `index.md` (figures linked) and a self-contained `index.html` (figures embedded as base64 PNG,
no external assets), both rendered from one list of blocks so they always say the same thing."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from . import data as D
from .figures import FIGURES
from .provenance import mixed_provenance
from .tables import CAPTIONS, PAPER_FILE, captions, html as html_table, key_text, markdown

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{padding:3px 8px;text-align:left}
thead th{border-bottom:1px solid #444}tbody tr:nth-child(even){background:#f4f4f4}
img{max-width:100%}figcaption{font-size:13px;color:#444}pre{background:#f4f4f4;padding:1em;overflow-x:auto}
.skipped{color:#a33}.warning{color:#a33}td.num,th.num{text-align:right}td.num{white-space:nowrap}"""

# --- blocks: ("h", level, text) ("p", text) ("list", items) ("warnings", items) ("code", lines) ("table", DataFrame)
# ("figure", name, caption, png or why skipped) ---------------------------------------------------------------------
def _column(runs: pd.DataFrame, key: str) -> pd.Series:
    """A provenance column, all null where no run recorded it (e.g. only incomplete runs)."""
    return runs.get(f"provenance.{key}", pd.Series(None, index=runs.index, dtype=object))


def _values(runs: pd.DataFrame, key: str) -> str:
    return ", ".join(sorted(_column(runs, key).dropna().astype(str).unique())) or "unknown"


def _provenance(d: D.ReportData) -> list[tuple]:
    runs = d.runs
    commits = runs.groupby([_column(runs, "commit").fillna("unknown"), _column(runs, "dirty").astype(str)]).size()
    dates = _column(runs, "utc").dropna()
    items = [f"commit {commit}{' (dirty tree)' if dirty == 'True' else ''}: {n} runs"
             for (commit, dirty), n in commits.items()]
    items += [f"{key}: {_values(runs, key)}" for key in ("python", "torch", "triton", "numpy")]
    items += [f"devices: {_values(runs, 'device_name')}",
              f"dates (UTC): {dates.min()} – {dates.max()}" if len(dates) else "dates: unknown"]
    return [("h", 2, "Provenance"), ("list", items), ("p", "To reproduce:"), ("code", reproduce(d))]


def reproduce(d: D.ReportData) -> list[str]:
    """Shell lines that rerun the records: each sweep's command at its commit, then loose runs from their configs."""
    lines, swept = [], set()
    for s in d.sweeps:
        swept |= set(s.get("run_ids", []))
        dirty = "  # the tree was dirty: uncommitted changes are not in this commit" if s.get("dirty") else ""
        lines += [f"# sweep {s.get('name')} ({s['path']})", f"git checkout {s.get('commit') or '<unknown commit>'}"
                  + dirty, s.get("command", ""), ""]
    loose = d.runs[~d.runs.run_id.isin(swept)]
    for c, group in loose.groupby(_column(loose, "commit").fillna("<unknown commit>")):
        lines += [f"git checkout {c}", *(f"seqbench run --config {p}/config.json" for p in group.path), ""]
    return lines[:-1]


def _cell_name(d: D.ReportData, cell: int) -> str:
    """'lstm, adding, T = 12, torch, hidden=8': a cell as the reader finds it in the summary."""
    c = d.cells.loc[cell]
    keys = ", ".join(f"{k}={key_text(c[k])}" for k in d.keys)
    return f"{c.label}, {c.task}, T = {c.length}, {c.backend}" + (f", {keys}" if keys else "")


def warnings(d: D.ReportData) -> list[str]:
    """What a reader must know before trusting the numbers: seeds recorded more than once in a cell (counted once),
    completed runs without a final eval loss (left out of the statistics) and records that lost a part."""
    def where(path) -> str:
        return str(Path(path).relative_to(d.root)) if Path(path).is_relative_to(d.root) else str(path)

    out = [f"{_cell_name(d, r.cell)}: seed {r.seed} is recorded by {len(r.run_ids)} runs "
           f"({', '.join(map(where, r.paths))}); it counts once ({where(r.paths[0])}), not as {len(r.run_ids)} samples."
           for r in D.duplicate_seeds(d.runs).itertuples()]
    loss = pd.to_numeric(d.runs.get("final.eval_loss", pd.Series(None, index=d.runs.index)), errors="coerce")
    empty = d.runs[(d.runs.status == "completed") & loss.isna()]
    out += [f"{_cell_name(d, cell)}: completed run {run_id} (seed {seed}) has no final eval loss; it is left out of "
            "the statistics and counted under no final value."
            for cell, run_id, seed in zip(empty.cell, empty.run_id, empty["config.seed"])]
    out += d.record_warnings  # records that lost a part: a finished run without config.json, a completed run's metrics
    out += mixed_provenance(d.recorded)  # runs from several commits or a dirty tree
    return out


def _table(name: str, table: pd.DataFrame, notes: dict) -> list[tuple]:
    title, note = notes[name]
    return [("h", 2, title), ("p", note), ("table", table)]


def blocks(d: D.ReportData, figures: dict, tables: dict) -> list[tuple]:
    counts = ", ".join(f"{n} {s}" for s, n in d.runs.status.value_counts().items())
    out = [("h", 1, "seqbench report"), ("p", f"Results: {d.root} — {len(d.runs)} runs ({counts}).")]
    if len(d.selection):
        keys = ", ".join(sorted({k for doc in d.tuning for k in doc["keys"]}))
        out.append(("p", f"{len(d.selection)} selection runs of tuned sweeps are not in the tables: they chose each "
                         f"tuned cell's {keys} on the evaluation set (tuning.json; the expected_best figure). A tuned "
                         "cell (column tuned) reports its final seeds only."))
    notes = captions(d)  # the captions as the .tex files have them: which set the final numbers come from
    warned = warnings(d)
    if warned:
        out += [("h", 2, "Warnings"), ("warnings", warned)]
    out += _table("summary", tables["summary"], notes)
    out.append(("p", f"For a paper: tables/{PAPER_FILE}, this table compact enough for a page (the columns that differ "
                     "between rows, and the results; the settings every row shares and the statistics in its caption). "
                     "Every column: tables/summary.tex, .md and .csv."))
    if len(tables["comparisons"]):
        out += _table("comparisons", tables["comparisons"], notes)
    else:
        out += [("h", 2, CAPTIONS["comparisons"][0]),
                ("p", "No two models ran the same task, length and settings: nothing to compare.")]
    if len(tables["lengths"]):
        out += _table("lengths", tables["lengths"], notes)
    out += _table("status", tables["status"], notes)
    if len(tables["problems"]):
        out += [("p", CAPTIONS["problems"][1]), ("table", tables["problems"])]
    out.append(("h", 2, "Figures"))
    for name, (_, caption, _) in FIGURES.items():
        out += [("h", 3, name), ("figure", name, caption, figures[name])]
    return out + _provenance(d)


# --- rendering: one function per kind of block and format -----------------------------------------------------
def _md_figure(name: str, caption: str, png) -> str:
    if not isinstance(png, Path):
        return f"*Skipped: {png}.*"
    return f"![{name}](figures/{name}.png)\n\n{caption} ([PDF](figures/{name}.pdf))"


def _html_figure(name: str, caption: str, png) -> str:
    if not isinstance(png, Path):
        return f'<p class="skipped">Skipped: {html.escape(png)}.</p>'
    data = base64.b64encode(png.read_bytes()).decode()  # embedded: the page needs no other file
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}' \
           "</figcaption></figure>"


MARKDOWN = {
    "h": lambda level, text: "#" * level + " " + text,
    "p": lambda text: text,
    "list": lambda items: "\n".join(f"- {item}" for item in items),
    "warnings": lambda items: "\n".join(f"- **Warning:** {item}" for item in items),
    "code": lambda lines: "```bash\n" + "\n".join(lines) + "\n```",
    "table": markdown,
    "figure": _md_figure,
}
HTML = {
    "h": lambda level, text: f"<h{level}>{html.escape(text)}</h{level}>",
    "p": lambda text: f"<p>{html.escape(text)}</p>",
    "list": lambda items: "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>",
    "warnings": lambda items: '<ul class="warning">' + "".join(f"<li>Warning: {html.escape(item)}</li>"
                                                               for item in items) + "</ul>",
    "code": lambda lines: f"<pre>{html.escape(chr(10).join(lines))}</pre>",
    "table": html_table,
    "figure": _html_figure,
}


def to_markdown(blocks: list[tuple]) -> str:
    return "\n\n".join(MARKDOWN[kind](*args) for kind, *args in blocks) + "\n"


def to_html(blocks: list[tuple]) -> str:
    body = "\n".join(HTML[kind](*args) for kind, *args in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>seqbench report</title>'
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def write(out_dir: Path, d: D.ReportData, figures: dict, tables: dict) -> Path:
    """Write index.md and index.html under `out_dir`; return the path of index.html."""
    content = blocks(d, figures, tables)
    (out_dir / "index.md").write_text(to_markdown(content))
    index = out_dir / "index.html"
    index.write_text(to_html(content))
    return index
