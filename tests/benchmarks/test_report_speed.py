"""`build_report` on 1,000 runs (goal: under 30 s on a 2-core CPU).

The results folder is synthesised in the real record format: the config, summary and metrics keys of real tiny runs
(one per model and task, made with `harness.train.execute`), at the sizes of the `adding` preset (10k steps logged every
50, evaluated every 250; lengths up to 750), with some diverged, failed and unfinished runs. Under
`--benchmark-disable` (CI) the report is built once, from 3 seeds a configuration (120 runs) instead of 25, and the
assertions check its files.
"""

import copy
import json
import math
import random

import pytest

from seqbench.harness.report import build_report
from seqbench.harness.train import execute
from tests.harness.conftest import tiny

MODELS, TASKS, LENGTHS, SEEDS = ["rnn", "lstm", "gru", "transformer"], ["adding", "copy"], [50, 100, 200, 400, 750], 25
STEPS, LOG_EVERY, EVAL_EVERY = 10_000, 50, 250


def templates(folder):
    """(model, task) -> (summary, a plain metrics row, an evaluation row) of a real tiny run."""
    out = {}
    for model in MODELS:
        for task in TASKS:
            summary, run_dir = execute(tiny(f"model={model}", f"task={task}"), folder, progress=False)
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            out[model, task] = summary, rows[1], rows[-1]
    return out


def metrics_text(plain, evaluated, scale):
    """A metrics.jsonl of STEPS steps with the template rows' keys and a decaying loss."""
    lines = []
    for step in range(0, STEPS + 1, LOG_EVERY):
        row = dict(evaluated if step % EVAL_EVERY == 0 else plain, step=step)
        decay = scale * (0.05 + math.exp(-step / 2000))
        row.update({k: decay for k in ("train_loss", "eval_loss") if k in row}, grad_norm=decay * 3)
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


def profile_text(model, seq_len, rate):
    """grad_profile.jsonl at start and end: h (recurrent models) and x, exact zeros where the decay underflows."""
    norms = [rate ** (seq_len - 1 - t) if rate ** (seq_len - 1 - t) > 1e-300 else 0.0 for t in range(seq_len)]
    rows = [{"step": step, "quantity": q, "layer": 0, "dtype": "float64", "loss": 0.1, "norm": norms,
             "underflow": norms.count(0.0)}
            for step in (0, STEPS) for q in (["x"] if model == "transformer" else ["h", "x"])]
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def write_run(root, i, summary, metrics, profile, rng):
    """One run folder; every 40th diverged, every 97th failed, every 111th unfinished (cut metrics, no summary)."""
    run_id = f"{i:012x}"
    run = root / run_id
    run.mkdir()
    (run / "config.json").write_text(json.dumps(summary["config"]))
    if i % 111 == 5:
        (run / "metrics.jsonl").write_text(metrics[: len(metrics) // 2])
        return
    s = {**summary, "run_id": run_id, "final": {k: v * rng.uniform(0.5, 1.5) for k, v in summary["final"].items()},
         "tokens_per_s": summary["tokens_per_s"] * rng.uniform(0.9, 1.1)}
    if i % 40 == 7:
        s.update(status="diverged", diverged_step=STEPS // 2, final={k: None for k in s["final"]})
    elif i % 97 == 3:
        s.update(status="failed", error="RuntimeError: synthetic failure")
        metrics = profile = ""
    (run / "metrics.jsonl").write_text(metrics)
    (run / "grad_profile.jsonl").write_text(profile)
    (run / "summary.json").write_text(json.dumps(s))


def results(tmp_path_factory, seeds: int):
    base = templates(tmp_path_factory.mktemp("templates"))
    root, rng, i = tmp_path_factory.mktemp("results") / "sweep", random.Random(0), 0
    root.mkdir()
    for (model, task), (summary, plain, evaluated) in base.items():
        for length in LENGTHS:
            seq_len = length + 20 if task == "copy" else length
            metrics = metrics_text(plain, evaluated, scale=1 + MODELS.index(model))
            profile = profile_text(model, seq_len, rate=0.3 if model == "rnn" else 0.97)
            for seed in range(seeds):
                s = copy.deepcopy(summary)
                s["config"]["task"]["length"] = length
                s["config"]["seed"] = s["config"]["data_seed"] = s["seed"] = s["data_seed"] = seed
                s["baseline_loss"] = 10 * math.log(8) / seq_len if task == "copy" else 1 / 6
                write_run(root, i, s, metrics, profile, rng)
                i += 1
    assert i == len(MODELS) * len(TASKS) * len(LENGTHS) * seeds
    return root


@pytest.mark.benchmark(group="report-1000-runs")
def test_report_on_1000_runs(benchmark, tmp_path_factory, tmp_path):
    folder = results(tmp_path_factory, 3 if benchmark.disabled else SEEDS)
    index = benchmark.pedantic(build_report, args=(folder, tmp_path / "report"), rounds=1, iterations=1)
    assert index == tmp_path / "report" / "index.html" and index.stat().st_size > 10_000
    names = ["learning_curves", "final_vs_length", "grad_through_time", "input_grad_through_time", "grad_norm",
             "throughput"]
    for name in names:
        assert (tmp_path / "report" / "figures" / f"{name}.png").stat().st_size > 0
        assert (tmp_path / "report" / "figures" / f"{name}.pdf").stat().st_size > 0
    for ext in ("md", "csv", "tex"):
        assert (tmp_path / "report" / "tables" / f"summary.{ext}").exists()
