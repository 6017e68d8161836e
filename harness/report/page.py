"""The report's pages: `index.md` (figures linked) and a self-contained `index.html` (figures embedded as base64 PNG,
no external assets), both rendered from one list of blocks so they always say the same thing."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from . import data as D
from .figures import FIGURES
from .tables import markdown

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{padding:3px 8px;text-align:left}
thead th{border-bottom:1px solid #444}tbody tr:nth-child(even){background:#f4f4f4}
img{max-width:100%}figcaption{font-size:13px;color:#444}pre{background:#f4f4f4;padding:1em;overflow-x:auto}
.skipped{color:#a33}"""

SUMMARY_NOTE = ("Final eval loss and accuracy: mean ± half-width of the 95% t-interval over completed seeds (none for "
                "one seed); accuracy is the recall accuracy for copy and the fraction with |error| < 0.04 for adding. "
                "Solve rate: fraction of finished (completed or diverged) runs that met the solved criterion; steps to "
                "solve: median over solved seeds. tokens/s: mean steady-state training throughput. n: completed seeds. "
                "Figures show completed runs only.")


# --- blocks: ("h", level, text) ("p", text) ("list", items) ("code", lines) ("table", DataFrame) ("figure", ...) ---
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


def blocks(d: D.ReportData, figures: dict, tables: dict) -> list[tuple]:
    counts = ", ".join(f"{n} {s}" for s, n in d.runs.status.value_counts().items())
    out = [("h", 1, "seqbench report"), ("p", f"Results: {d.root} — {len(d.runs)} runs ({counts})."),
           ("h", 2, "Summary"), ("p", SUMMARY_NOTE), ("table", tables["summary"]),
           ("h", 2, "Runs by status"), ("table", tables["status"])]
    if len(tables["problems"]):
        out += [("p", "Runs that did not complete:"), ("table", tables["problems"])]
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
    "code": lambda lines: "```bash\n" + "\n".join(lines) + "\n```",
    "table": markdown,
    "figure": _md_figure,
}
HTML = {
    "h": lambda level, text: f"<h{level}>{html.escape(text)}</h{level}>",
    "p": lambda text: f"<p>{html.escape(text)}</p>",
    "list": lambda items: "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>",
    "code": lambda lines: f"<pre>{html.escape(chr(10).join(lines))}</pre>",
    "table": lambda table: table.to_html(index=False, border=0),
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
