import json
import math

import pandas as pd
import pytest

from harness.report import data as D


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042),
                                          (1000, 1.962)], ids=lambda v: f"{v}")
def test_t_quantile_matches_the_tables(df, expected):
    assert D.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_mean_ci_on_known_numbers():
    mean, half, n = D.mean_ci([1, 2, 3])
    assert mean == 2 and n == 3
    assert half == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)  # t_{0.975,2} · s/√n with s = 1: 2.484
    assert half == pytest.approx(2.484, abs=1e-3)


def test_mean_ci_skips_nulls_and_gives_no_interval_for_one_seed():
    mean, half, n = D.mean_ci([0.5, None, float("nan")])
    assert (mean, n) == (0.5, 1) and math.isnan(half)
    mean, half, n = D.mean_ci([])
    assert n == 0 and math.isnan(mean) and math.isnan(half)


@pytest.mark.parametrize("args, label", [
    (("rnn", "tanh", 1), "rnn"), (("rnn", "relu", 1), "rnn-relu"), (("lstm", None, 2), "lstm-L2"),
    (("gru", float("nan"), 1.0), "gru"), (("rnn", "relu", 3), "rnn-relu-L3"),
    (("transformer", None, 2), "transformer"), (("transformer", None, 1), "transformer-L1"),  # its default depth is 2
], ids=lambda v: v if isinstance(v, str) else None)
def test_model_label_names_what_differs_from_the_defaults(args, label):
    assert D.model_label(*args) == label


def test_labels_sort_by_base_model_then_variant():
    labels = ["transformer", "gru-L2", "mamba", "rnn-relu", "lstm", "rnn", "gru"]
    assert sorted(labels, key=D.label_order) == ["rnn", "rnn-relu", "lstm", "gru", "gru-L2", "transformer", "mamba"]


def hand_written_cell() -> pd.DataFrame:
    """One cell's runs: three completed (losses 1, 2, 3), one diverged (solved before diverging), one failed, one
    unfinished."""
    return pd.DataFrame({
        "status": ["completed"] * 3 + ["diverged", "failed", "incomplete"],
        "final.eval_loss": [1.0, 2.0, 3.0, None, None, None],
        "final.eval_accuracy": [0.5, 0.6, 0.7, None, None, None],
        "solved_step": [100, None, 300, 50, None, None],
        "tokens_per_s": [10.0, 20.0, 30.0, 99.0, None, None],
        "params": [50, 50, 50, 50, None, None],
        "baseline_loss": [1 / 6] * 5 + [None],
    })


def test_summarise_cell_on_hand_written_runs():
    s = D.summarise_cell(hand_written_cell())
    assert s["loss_mean"] == 2 and s["loss_ci"] == pytest.approx(2.484, abs=1e-3) and s["n"] == 3
    assert s["accuracy_mean"] == pytest.approx(0.6) and s["accuracy_ci"] == pytest.approx(0.2484, abs=1e-4)
    assert s["solve_rate"] == 0.75  # 3 of 4 finished runs (completed or diverged); failed, unfinished don't count
    assert s["steps_to_solve"] == 100  # median of 100, 300 and 50
    assert s["tokens_per_s"] == 20 and s["params"] == 50  # over completed runs
    assert s["baseline_loss"] == pytest.approx(1 / 6)
    assert [s[k] for k in D.STATUSES] == [3, 1, 1, 1]


def test_cells_group_by_label_task_length_and_backend(report_data):
    cells = report_data.cells
    assert list(zip(cells.task, cells.length, cells.label)) == [
        (task, length, model) for task in ("adding", "copy") for length in (8, 12) for model in ("lstm", "transformer")]
    assert set(cells.backend) == {"torch"}


BENCH = {"machine": {"device_name": "NVIDIA H100"}, "results": [
    {"cell": cell, "backend": backend, "batch": 32, "hidden": 64, "length": length, "dtype": "float32", "pass": p,
     "median_us": 100.0, "p20_us": 90.0, "p80_us": 110.0, "tokens_per_s": 32 * length / 1e-4}
    for cell in ("lstm", "gru") for backend in ("triton", "cudnn") for length in (100, 1000)
    for p in ("forward", "backward")]}


def test_load_bench_reads_the_documented_schema(tmp_path):
    (tmp_path / "bench" / "h100").mkdir(parents=True)
    (tmp_path / "bench" / "h100" / "lstm.json").write_text(json.dumps(BENCH))
    bench = D.load_bench(tmp_path)
    assert len(bench) == 16 and set(bench.cell) == {"lstm", "gru"} and set(bench.machine) == {"NVIDIA H100"}
    assert D.load_bench(tmp_path / "elsewhere").empty


def test_load_bench_names_a_file_of_another_schema(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "odd.json").write_text(json.dumps({"results": [{"cell": "lstm", "time": 1}]}))
    with pytest.raises(ValueError, match="odd.json"):
        D.load_bench(tmp_path)
