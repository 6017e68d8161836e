"""`seqbench reproduce RUN_DIR`: rerun a recorded run from its config.json and compare the new record with the old.

Every recorded value is compared (timing fields aside), grouped by quantity (each metric, each gradient profile, each
summary field), and the verdict is `identical` (every bit), `within rtol` (numbers differ, none by more than the
relative tolerance) or `differs`. On the same CPU (provenance `cpu`) and software with the same thread count a CPU run
is identical; on CUDA (cuDNN and atomics reorder float sums), another CPU or another thread count expect `within rtol`
at best, and `differs` for a run whose training amplifies last-bit differences.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import string
import tempfile
from pathlib import Path

from .config import ConfigError, resolve
from .dotted import flatten
from .errors import RecordError
from .loaders import PROFILE_ROW, metrics_lost, read_jsonl
from .memory import check as check_memory
from .records import CHECKPOINT, claim, is_finished, json_kind, read_json, read_summary

TIMING = {"tokens_per_s", "elapsed_s"}
SUMMARY_FIELDS = ("status", "steps_done", "diverged_step", "solved_step", "params", "final")
DEFAULT_RTOL = 1e-3
#: provenance fields whose change can change a run's bits (the commit, the software, the machine, the settings);
#: `cpu` and `model_plugin` are compared by sub-key
ENVIRONMENT = ("commit", "dirty", "source_digest", "device", "device_name", "cpu_model", "cpu", "torch", "triton",
               "numpy", "python", "cuda", "cudnn", "torch_threads", "deterministic_algorithms", "cudnn_deterministic",
               "model_plugin")
NOT_RECORDED = "<not recorded>"  # the old value of a field its record predates (made before seqbench recorded it)
#: the prefix of the summary's final fields added after records existed: the held-out test set's `final.test_*`
LATER_FINAL = "test_"
ABSENT = "<absent>"
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
    """`metrics.step 40.grad_norm.head` -> `metrics: grad_norm.head`; `grad_profile.step 0 h0[3]` (position 3) and
    `grad_profile.step 0 h0.length` -> `grad_profile: h0` (one quantity per kind and layer, every step and position);
    `summary.final.eval_loss` -> `summary: final.eval_loss`."""
    part, _, rest = where.partition(".")
    if part == "metrics":
        rest = rest.split(".", 1)[1] if rest.startswith("step ") and "." in rest else "rows"
    elif part == "grad_profile":
        rest = re.match(r"[^.\[]*", rest.split(" ")[2]).group() if rest.count(" ") >= 2 else "rows"
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
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir}: no config.json here; expected a run folder (results/.../<run_id>)")
    if read_summary(run_dir) is None:
        raise ConfigError(f"{run_dir}: the run has no summary.json (unfinished); nothing to compare with")
    lost = metrics_lost(run_dir, read_summary(run_dir))
    if lost:
        raise RecordError(f"{lost}; nothing to compare the rerun with")
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
    if keep is not None:
        _check_keep(Path(keep), cfg.run_id, run_dir)
    check_memory(cfg)
    with tempfile.TemporaryDirectory(prefix="seqbench-reproduce-") as tmp:
        out = Path(keep) if keep else Path(tmp)
        summary, new_dir = _rerun(cfg, out, progress, kept=keep is not None)
        new = record_of(new_dir)
        for field in later_fields(old["summary"], new["summary"]):  # named by environment_changes instead
            new["summary"]["final"].pop(field.removeprefix("final."))
        quantities = compare(old, new)
    return quantities, summary


def later_fields(old: dict, new: dict) -> list[str]:
    """The rerun's `final.test_*` fields (summary `new`) when the record's summary (`old`) predates the test set (a
    `final` without them): the record cannot be compared on them, and its other numbers still can."""
    before, after = old.get("final"), new.get("final")
    if not isinstance(before, dict) or not isinstance(after, dict) or any(k.startswith(LATER_FINAL) for k in before):
        return []
    return [f"final.{k}" for k in sorted(after) if k.startswith(LATER_FINAL)]


def _check_keep(keep: Path, run_id: str, run_dir: Path) -> None:
    """Refuse a --keep folder whose rerun would replace the record reproduced or discard a resumable run."""
    target = keep / run_id
    if target.resolve() == run_dir.resolve():
        raise ConfigError(f"--keep {keep}: {target} is the record being reproduced, which the rerun would replace; "
                          "give another folder")
    if (target / CHECKPOINT).exists() and not is_finished(target):
        raise ConfigError(f"--keep {keep}: {target} holds an unfinished run with a checkpoint (resumable with "
                          "`seqbench run`), which the rerun would discard; give another folder or remove it")


def _rerun(cfg, out: Path, progress: bool, kept: bool) -> tuple[dict, Path]:
    """Run `cfg` afresh into `out`. Interrupted (Ctrl-C, SIGTERM), it leaves nothing of itself in a kept folder: a
    reproduce never resumes (a resumed rerun would not test the record), so its checkpoint would only be a partial
    record there. A finished record already in that folder stays: the rerun replaces it only once finished."""
    from .train import RunInterrupted, execute

    target = out / cfg.run_id
    had_record = is_finished(target)
    try:
        summary, new_dir = execute(cfg, out, progress=progress, force=True)
    except (RunInterrupted, KeyboardInterrupt):
        if kept:
            _discard_partial(target, had_record)
        raise
    if summary["status"] == "busy":
        raise ConfigError(f"--keep {out}: {target} is being written by another process (a run or a reproduce); "
                          "wait for it to end or give another folder")
    return summary, new_dir


def _discard_partial(target: Path, had_record: bool) -> None:
    """Remove an interrupted rerun of `target` (unless another process holds that run now: then it is theirs)."""
    with claim(target) as mine:
        if not mine:
            return
        shutil.rmtree(target.with_name(f".{target.name}.staging"), ignore_errors=True)
        if not had_record:
            shutil.rmtree(target, ignore_errors=True)
            return
    trash = target.with_name(f".{target.name}.old-{os.getpid()}")  # stopped inside replace_dir
    if trash.exists() and not (target / "summary.json").exists():  # between its renames: the old record back
        shutil.rmtree(target, ignore_errors=True)  # only the lock file claim() just made there
        os.replace(trash, target)
    shutil.rmtree(trash, ignore_errors=True)


def environment_changes(run_dir: Path, new: dict) -> dict[str, tuple]:
    """The provenance fields (ENVIRONMENT) in which the rerun differs from the record: {field: (old, new)}. Fields
    that hold objects (`cpu`, `model_plugin`) by dotted sub-key (`cpu.model`), ABSENT where one side lacks it; a field
    the record predates (an old record has no `cpu`) is (NOT_RECORDED, new): it cannot be compared. So are the test
    set's `final.test_*` of a record made before runs had one (see `later_fields`)."""
    recorded = read_summary(run_dir) or {}
    old, now = recorded.get("provenance", {}), new.get("provenance", {})
    changes = {}
    for k in ENVIRONMENT:
        if k not in old and k in now:
            changes[k] = (NOT_RECORDED, now[k])
        elif isinstance(old.get(k), dict) and isinstance(now.get(k), dict):
            a, b = flatten(old[k], f"{k}."), flatten(now[k], f"{k}.")
            changes.update({s: (a.get(s, ABSENT), b.get(s, ABSENT)) for s in sorted(a.keys() | b.keys())
                            if a.get(s, ABSENT) != b.get(s, ABSENT)})
        elif k in old and old[k] != now.get(k):
            changes[k] = (old[k], now.get(k, ABSENT))
    changes.update({f: (NOT_RECORDED, new["final"][f.removeprefix("final.")]) for f in later_fields(recorded, new)})
    return changes


def environment_lines(changes: dict[str, tuple]) -> list[str]:
    """What `seqbench reproduce` says of the environment: one line per change (fields with the same change on one
    line: a CPU's model name is `device_name`, `cpu_model` and `cpu.model_name`), then the fields not recorded."""
    missing = [k for k, (old, _) in changes.items() if old is NOT_RECORDED]
    merged: dict[tuple, list[str]] = {}
    for k, (old, new) in changes.items():
        if old is not NOT_RECORDED:
            same = isinstance(old, str) and isinstance(new, str)  # equal texts are one change; equal flags are not
            merged.setdefault((_show(old), _show(new)) if same else (k,), []).append(k)
    lines = []
    if merged:
        lines.append("environment differs from the record (the likely cause of any difference):")
        lines += [f"  {', '.join(keys)}: {_change(*changes[keys[0]])}" for keys in merged.values()]
        lines.append("  (bitwise agreement is expected only on the same CPU and software with the same thread count; "
                     "elsewhere at best within a tolerance)")
    else:
        unknown = [k for k in missing if not k.startswith("final.")]  # a result field says nothing of the environment
        lines.append("environment: same as the record" + (" where recorded" if unknown else "")
                     + " (commit, software, device, CPU, threads)")
    if missing:
        lines.append(f"not in the record (made before seqbench recorded them), so not compared: {', '.join(missing)}"
                     + ("; a change of CPU cannot be ruled out" if "cpu" in missing else ""))
    return lines


def _change(old, new) -> str:
    """`old -> new`; for lists (cpu.isa) what was lost and gained."""
    if isinstance(old, list) and isinstance(new, list):
        lost, gained = [x for x in old if x not in new], [x for x in new if x not in old]
        parts = [f"{what} {', '.join(map(str, xs))}" for what, xs in (("lost", lost), ("gained", gained)) if xs]
        if parts:
            return "; ".join(parts)
    return f"{_show(old)} -> {_show(new)}"


def _show(value) -> str:
    """A value as printed: a long hex digest (a file's sha256) cut to 12 digits."""
    if value == ABSENT:
        return value
    if isinstance(value, str) and len(value) >= 32 and all(c in string.hexdigits for c in value):
        return repr(value[:12] + "…")
    return repr(value)
