"""`seqbench reproduce RUN_DIR`: rerun a recorded run from its config.json and compare the new record with the old.

Every recorded value is compared (timing fields aside), grouped by quantity (each metric, each gradient profile, each
summary field), and the verdict is `identical` (every bit), `within rtol` (numbers differ, none by more than the
relative tolerance) or `differs`. On the same machine and software a CPU run is identical; on CUDA (cuDNN and atomics
reorder float sums) or another machine expect `within rtol`.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

from .config import ConfigError, resolve
from .errors import RecordError
from .loaders import PROFILE_ROW, read_jsonl
from .memory import check as check_memory
from .records import json_kind, read_json, read_summary

TIMING = {"tokens_per_s", "elapsed_s"}
SUMMARY_FIELDS = ("status", "steps_done", "diverged_step", "solved_step", "params", "final")
DEFAULT_RTOL = 1e-3
#: provenance fields whose change can change a run's bits (the commit, the software, the machine, the settings)
ENVIRONMENT = ("commit", "dirty", "source_digest", "device", "device_name", "cpu_model", "torch", "triton", "numpy", "python", "cuda",
               "cudnn", "torch_threads", "deterministic_algorithms", "cudnn_deterministic", "model_plugin")
VERDICTS = ("identical", "within rtol", "differs")


@dataclasses.dataclass
class Quantity:
    """One compared quantity (a metric, a gradient profile, a summary field) over all its recorded values."""

    name: str
    values: int = 0
    differing: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatched: list[str] = dataclasses.field(default_factory=list)  # not numbers, or not both present

    def add(self, where: str, old, new) -> None:
        self.values += 1
        if old == new or (_number(old) and _number(new) and math.isnan(old) and math.isnan(new)):
            return
        self.differing += 1
        if not (_number(old) and _number(new)) or not (math.isfinite(old) and math.isfinite(new)):
            self.mismatched.append(f"{where}: {old!r} -> {new!r}")
            return
        diff = abs(old - new)
        self.max_abs = max(self.max_abs, diff)
        self.max_rel = max(self.max_rel, diff / max(abs(old), abs(new)))

    def verdict(self, rtol: float) -> str:
        if not self.differing:
            return "identical"
        return "differs" if self.mismatched or self.max_rel > rtol else "within rtol"


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _leaves(value, path: str):
    """(path, leaf) pairs of a JSON-like value; a list's length is a leaf of its own."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            if key not in TIMING:
                yield from _leaves(value[key], f"{path}.{key}")
    elif isinstance(value, list):
        yield f"{path}.length", len(value)
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def compare(old: dict, new: dict) -> dict[str, Quantity]:
    """Compare two records (see `record_of`) value by value, grouped into quantities."""
    quantities: dict[str, Quantity] = {}
    for part in ("summary", "metrics", "grad_profile"):
        a, b = dict(_leaves(old.get(part, {}), part)), dict(_leaves(new.get(part, {}), part))
        for where in sorted(set(a) | set(b)):
            q = quantities.setdefault(_quantity(where), Quantity(_quantity(where)))
            q.add(where, a.get(where, "<absent>"), b.get(where, "<absent>"))
    return quantities


def _quantity(where: str) -> str:
    """`metrics.step 40.grad_norm.head` -> `metrics: grad_norm.head`; `grad_profile.step 0 h0.3` -> `grad_profile:
    h0`; `summary.final.eval_loss` -> `summary: final.eval_loss`."""
    part, _, rest = where.partition(".")
    if part == "metrics":
        rest = rest.split(".", 1)[1] if rest.startswith("step ") and "." in rest else "rows"
    elif part == "grad_profile":
        rest = rest.split(" ")[2].split(".")[0] if rest.count(" ") >= 2 else "rows"
    return f"{part}: {rest}"


def overall(quantities: dict[str, Quantity], rtol: float) -> str:
    verdicts = {q.verdict(rtol) for q in quantities.values()}
    return max(verdicts, key=VERDICTS.index) if verdicts else "identical"


def record_of(run_dir: Path) -> dict:
    summary = read_summary(run_dir) or {}
    return {
        "summary": {k: summary.get(k) for k in SUMMARY_FIELDS},
        "metrics": {f"step {row['step']}": row for row in read_jsonl(run_dir / "metrics.jsonl")},
        "grad_profile": {f"step {r['step']} {r['quantity']}{r['layer']}": r["norm"]
                         for r in read_jsonl(run_dir / "grad_profile.jsonl", PROFILE_ROW)},
    }


def reproduce(run_dir: Path, keep: Path | None = None, progress: bool = True, threads: int | None = None):
    """Rerun the run recorded in `run_dir` with its recorded config (thread count included, unless `threads` says
    otherwise: a way to see how far scheduling moves the last bits); returns (quantities compared, rerun's summary)."""
    from .train import execute

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir}: no config.json here; expected a run folder (results/.../<run_id>)")
    if read_summary(run_dir) is None:
        raise ConfigError(f"{run_dir}: the run has no summary.json (unfinished); nothing to compare with")
    recorded = read_json(run_dir / "config.json")
    if not isinstance(recorded, dict):
        raise RecordError(f"{run_dir / 'config.json'}:1: not a run config: expected a JSON object, got a JSON "
                          f"{json_kind(recorded)}")
    try:
        cfg = resolve({**recorded, "tracker": []})  # a check in a scratch folder: not mirrored
    except ConfigError as e:
        raise ConfigError(f"{run_dir / 'config.json'}: {e}") from None
    if threads is not None:
        cfg = cfg.model_copy(update={"threads": threads})
    old = record_of(run_dir)  # before the rerun: a corrupt record is refused with nothing written
    check_memory(cfg)
    with tempfile.TemporaryDirectory(prefix="seqbench-reproduce-") as tmp:
        out = Path(keep) if keep else Path(tmp)
        summary, new_dir = execute(cfg, out, progress=progress, force=True)
        quantities = compare(old, record_of(new_dir))
    return quantities, summary


def environment_changes(run_dir: Path, new: dict) -> dict[str, tuple]:
    """The provenance fields (ENVIRONMENT) in which the rerun differs from the record: {field: (old, new)}."""
    old, now = (read_summary(run_dir) or {}).get("provenance", {}), new.get("provenance", {})
    return {k: (old.get(k), now.get(k)) for k in ENVIRONMENT if old.get(k) != now.get(k) and (k in old or k in now)}
