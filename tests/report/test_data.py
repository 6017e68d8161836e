import json
import math

import pandas as pd
import pytest

from seqbench.harness.report import data as D


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


def test_geometric_mean_interval_is_multiplicative_and_above_zero():
    gmean, factor, n = D.geo_ci([1e-4, 1e-2])
    assert n == 2 and gmean == pytest.approx(1e-3)
    half = 12.7062 * math.log(100) / math.sqrt(2) / math.sqrt(2)  # t_{0.975,1} · sd(log x) / √n, sd = ln(100)/√2
    assert factor == pytest.approx(math.exp(half), rel=1e-4)
    assert gmean / factor > 0  # an additive t-interval on these values reaches far below zero
    assert D.mean_ci([1e-4, 1e-2])[0] - D.mean_ci([1e-4, 1e-2])[1] < 0
    assert math.isnan(D.geo_ci([0.5])[1]) and math.isnan(D.geo_ci([0.5, 0.0])[0])


def test_accuracy_interval_stays_inside_0_1_and_is_deterministic():
    values = [0.0, 0.0, 1.0]
    mean, half, _ = D.mean_ci(values)
    assert mean - half < 0 and mean + half > 1  # the t-interval would leave [0, 1]
    first = D.proportion_ci(values)
    assert first[0] == pytest.approx(1 / 3) and 0 <= first[1] < first[0] < first[2] <= 1
    assert D.proportion_ci(values) == first  # fixed seed: the same report twice
    assert D.proportion_ci([0.5, 0.5]) == (0.5, 0.5, 0.5, 2)  # nothing to resample
    assert math.isnan(D.proportion_ci([0.5])[1])


def test_wilson_interval_matches_the_formula():
    k, n, z = 3, 4, 1.959964
    p, denom = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / denom, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    rate, lo, hi = D.wilson(k, n)
    assert rate == 0.75
    assert lo == pytest.approx(centre - half, abs=1e-5) and hi == pytest.approx(centre + half, abs=1e-5)
    assert D.wilson(0, 3)[1] == 0 and D.wilson(3, 3)[2] == pytest.approx(1)
    assert math.isnan(D.wilson(0, 0)[0])


def test_paired_difference_pairs_seeds_and_needs_two_pairs():
    base = [1.0, 5.0, 9.0, 13.0]  # seeds differ a lot, the models little
    a, b = [x + d for x, d in zip(base, (0.1, 0.2, 0.3, 0.4))], base
    diff, lo, hi, n = D.paired_difference(a, b)
    assert n == 4 and diff == pytest.approx(0.25) and 0.1 <= lo < 0.25 < hi <= 0.4  # unpaired: wider than ±4
    assert D.paired_difference(a, b) == (diff, lo, hi, n)
    diff, lo, hi, n = D.paired_difference([2.0], [1.0])
    assert (diff, n) == (1.0, 1) and math.isnan(lo) and math.isnan(hi)


def hand_written_cell() -> pd.DataFrame:
    """One cell's runs: three completed (losses 1, 2, 3; two solved), one diverged (solved before diverging), one
    failed, one unfinished."""
    return pd.DataFrame({
        "status": ["completed"] * 3 + ["diverged", "failed", "incomplete"],
        "config.seed": [0, 1, 2, 3, 4, 5], "config.data_seed": [0, 1, 2, 3, 4, 5],
        "final.eval_loss": [1.0, 2.0, 3.0, None, None, None],
        "final.eval_accuracy": [0.5, 0.6, 0.7, None, None, None],
        "solved_step": [100, None, 300, 50, None, None],
        "tokens_per_s": [10.0, 20.0, 30.0, 99.0, None, None],
        "params": [50, 50, 50, 50, None, None],
        "baseline_loss": [1 / 6] * 5 + [None],
    })


def test_summarise_cell_on_hand_written_runs():
    s = D.summarise_cell(hand_written_cell())
    assert s["loss_gmean"] == pytest.approx(6 ** (1 / 3)) and s["n"] == 3
    sd = pd.Series([math.log(1), math.log(2), math.log(3)]).std()
    assert s["loss_factor"] == pytest.approx(math.exp(4.3027 * sd / math.sqrt(3)), rel=1e-4)
    assert s["accuracy_mean"] == pytest.approx(0.6) and 0.5 <= s["accuracy_lo"] < 0.6 < s["accuracy_hi"] <= 0.7
    # 2 of 4 finished runs (completed or diverged): the diverged one met the criterion before diverging, yet is
    # not solved; failed and unfinished runs do not count
    assert (s["solved"], s["finished"], s["solve_rate"]) == (2, 4, 0.5)
    assert (s["solve_lo"], s["solve_hi"]) == pytest.approx(D.wilson(2, 4)[1:])
    assert s["steps_to_solve"] == 200  # median of 100 and 300
    assert s["tokens_per_s"] == 20 and s["params"] == 50  # over completed runs
    assert s["baseline_loss"] == pytest.approx(1 / 6)
    assert [s[k] for k in D.STATUSES] == [3, 1, 1, 1]
    assert s["no_final_value"] == 0 and s["repeated_seeds"] == 0


def test_a_repeated_seed_counts_once_and_a_missing_final_value_is_counted():
    runs = hand_written_cell().iloc[:3].assign(path=["a", "b", "c"])
    twice = runs.iloc[[0]].assign(path="z", **{"final.eval_loss": 100.0})  # seed 0 again, in another folder
    empty = runs.iloc[[1]].assign(**{"config.seed": 7, "config.data_seed": 7, "final.eval_loss": None})
    s = D.summarise_cell(pd.concat([twice, runs, empty], ignore_index=True))
    assert s["n"] == 3 and s["loss_gmean"] == pytest.approx(6 ** (1 / 3))  # seed 0 once: the first by path
    assert s["repeated_seeds"] == 1 and s["no_final_value"] == 1 and s["completed"] == 5


@pytest.mark.parametrize("path, backend", [
    ("torch.nn.modules.rnn.LSTM", "torch"),
    ("torch.nn.functional.scaled_dot_product_attention", "torch"),
    ("kernels.reference.GRU", "reference"),
    ("kernels.fused.LSTM: fused-triton", "triton"),
    ("kernels.fused.GRU: fused-triton-split-stepwise", "triton"),
    ("kernels.fused.LSTM: fallback-reference: hidden_size=1024 is above the split kernels' limit 512", 
     "reference (fallback)"),
    ("kernels.fused.RNN", None), (None, None),
    ("seqbench.kernels.minrnn.MinRNNStack: scan-torch", "torch"),
    ("seqbench.kernels.minrnn.MinRNNStack: reference-loop", "reference"),
    ("seqbench.kernels.minrnn.MinRNNStack: fused-triton", "triton"),
    ("seqbench.kernels.minrnn.MinRNNStack: fallback-scan: CPU tensors, and TRITON_INTERPRET=1 was not set when the "
     "kernels were loaded", "torch (fallback)"),
    ("seqbench.kernels.minrnn.MinRNNStack", None),
], ids=["torch", "attention", "reference", "fused", "split", "fallback", "no-forward", "unrecorded", "min-scan",
        "min-reference", "min-triton", "min-fallback", "min-no-forward"])
def test_backend_is_what_the_record_says_ran(path, backend):
    assert D.backend_name(path) == backend


def test_a_run_that_did_not_record_its_path_takes_its_other_seeds_backend():
    def runs(*paths):
        rows = synthetic_runs({"config.model.backend": "triton"},
                              {"config.model.backend": "triton", "config.model.hidden": 16})
        return D.add_keys(rows.assign(kernel_path=list(paths)))[0]

    fallback = "kernels.fused.LSTM: fallback-reference: CPU tensors, and TRITON_INTERPRET=1 was not set"
    found = runs(fallback, None, "kernels.fused.LSTM: fused-triton", "kernels.fused.LSTM")  # no forward: no path
    assert list(found.backend) == ["reference (fallback)", "reference (fallback)", "triton", "triton"]
    assert list(runs(None, None, None, None).backend) == ["triton"] * 4  # nothing recorded: the configured one


def synthetic_runs(*rows: dict) -> pd.DataFrame:
    """Runs as `load_runs` gives them: each row's config keys over defaults (seeds 0 and 1 of each)."""
    out = []
    for row in rows:
        for seed in (0, 1):
            model = row.get("model", "lstm")
            defaults = {"task": "adding", "model": model, "status": "completed", "path": f"{len(out)}",
                        "config.task.name": "adding", "config.task.length": 10, "config.model.name": model,
                        "config.model.layers": 2 if model == "transformer" else 1, "config.train.lr": 1e-3,
                        "config.seed": seed, "config.data_seed": seed, "config.threads": 1 + len(out),
                        "config.train.checkpoint_every": 10 * len(out), "final.eval_loss": 1.0 + seed}
            if model == "transformer":
                defaults.update({"config.model.d_model": 8, "config.model.heads": 2})
            else:
                defaults.update({"config.model.hidden": 8, "config.model.embed": row.get("config.model.hidden", 8)})
            if model == "lstm":
                defaults["config.model.forget_bias"] = 1.0
            out.append({**defaults, **{k: v for k, v in row.items() if k != "model"}})
    return pd.DataFrame(out)


@pytest.mark.parametrize("rows, keys", [
    # a plain multi-model sweep: keys only some models have, and each model's own depth, vary nothing
    ([{"model": "rnn"}, {"model": "lstm"}, {"model": "transformer"}], []),
    ([{"model": "rnn", "config.model.hidden": 16}, {"model": "lstm"}], []),  # one size per model
    # two hidden sizes of one model separate (embed, which follows hidden, is not a second key); d_model is hidden
    ([{"config.model.hidden": 8}, {"config.model.hidden": 16}, {"model": "transformer"}], ["hidden"]),
    ([{"model": "transformer"}, {"model": "transformer", "config.model.d_model": 16}], ["hidden"]),
    ([{}, {"config.model.forget_bias": None}], ["forget_bias"]),  # null is a value where the model has the key
    ([{"model": "rnn", "config.train.lr": 1e-2}, {"model": "lstm"}, {"model": "transformer", "config.train.lr": 1e-2}],
     ["lr"]),
    ([{"config.model.hidden": 16, "config.train.lr": 1e-2}, {"config.train.lr": 1e-2}, {}], ["hidden", "lr"]),
], ids=["models", "model-sizes", "hidden", "d_model", "null", "lr", "grid"])
def test_config_keys_that_vary_separate_cells(rows, keys):
    runs, found = D.add_keys(synthetic_runs(*rows))
    assert found == keys
    cells = D.cells(runs, found)
    assert len(cells) == len(rows) and (cells.n == 2).all()  # seeds and operational keys never separate


def test_cells_group_by_label_task_length_and_backend(report_data):
    cells = report_data.cells
    assert list(zip(cells.task, cells.length, cells.label)) == [
        (task, length, model) for task in ("adding", "copy") for length in (8, 12) for model in ("lstm", "transformer")]
    assert set(cells.backend) == {"torch"} and report_data.keys == []  # hidden 8 = the Transformer's d_model 8


def test_two_backends_and_two_hidden_sizes_are_four_cells(grid_data, grid_results):
    from .conftest import GRID_BACKENDS, GRID_HIDDEN

    cells = grid_data.cells
    assert grid_data.keys == ["hidden"]
    assert sorted(zip(cells.backend, cells.hidden)) == sorted((b, h) for b in GRID_BACKENDS for h in GRID_HIDDEN)
    assert list(cells.n) == [2, 2, 2, 2]  # seeds 0 and 1: seed 0's second record and the empty seed 2 add nothing
    by_cell = cells.set_index(["backend", "hidden"])
    assert by_cell.loc[("torch", 8), ["completed", "repeated_seeds", "no_final_value"]].tolist() == [4, 1, 1]
    for (backend, hidden), row in by_cell.iterrows():  # each cell holds exactly the runs of its configuration
        summaries = [json.loads(p.read_text()) for p in (grid_results / "sweep").glob("*/summary.json")]
        losses = [s["final"]["eval_loss"] for s in summaries if s["config"]["model"]["hidden"] == hidden
                  and s["config"]["model"]["backend"] == backend and s["seed"] in (0, 1)]
        assert row.loss_gmean == pytest.approx(math.exp(sum(map(math.log, losses)) / 2))


def test_comparisons_pair_two_models_over_their_shared_seeds(report_data, results):
    comp = report_data.comparisons
    assert list(zip(comp.task, comp.length)) == [(t, n) for t in ("adding", "copy") for n in (8, 12)]
    assert set(comp.label_a) == {"lstm"} and set(comp.label_b) == {"transformer"} and set(comp.pairs) == {2}
    finals = {}
    for path in results.rglob("summary.json"):
        s = json.loads(path.read_text())
        if s["status"] == "completed":
            finals[s["model"], s["task"], s["config"]["task"]["length"], s["seed"]] = s["final"]
    for row in comp.itertuples():
        diffs = [finals["lstm", row.task, row.length, seed]["eval_loss"]
                 - finals["transformer", row.task, row.length, seed]["eval_loss"] for seed in (0, 1)]
        assert row.loss_diff == pytest.approx(sum(diffs) / 2)
        assert row.loss_diff_lo == pytest.approx(min(diffs)) and row.loss_diff_hi == pytest.approx(max(diffs))


def test_no_comparison_interval_below_two_pairs(copy_runs):
    d = D.load(copy_runs(lambda s: s["seed"] == 0))
    assert set(d.comparisons.pairs) == {1} and d.comparisons.loss_diff_lo.isna().all()
    assert d.comparisons.loss_diff.notna().all()


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
