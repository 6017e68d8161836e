import json
import math

import pandas as pd
import pytest

from seqbench.harness.report import data as D
from seqbench.harness.report import tables
from seqbench.harness.report.stats import clopper_pearson, proportion_ci


@pytest.mark.parametrize("args, label", [
    (("rnn", "tanh", 1), "rnn"), (("rnn", "relu", 1), "rnn-relu"), (("lstm", None, 2), "lstm-L2"),
    (("gru", float("nan"), 1.0), "gru"), (("rnn", "relu", 3), "rnn-relu-L3"),
    (("transformer", None, 2), "transformer"), (("transformer", None, 1), "transformer-L1"),  # its default depth is 2
], ids=lambda v: v if isinstance(v, str) else None)
def test_model_label_names_what_differs_from_the_defaults(args, label):
    assert D.model_label(*args) == label


def test_labels_sort_by_base_model_then_variant():
    labels = ["transformer", "gru-L2", "s4", "rnn-relu", "lstm", "rnn", "gru", "mamba"]  # s4: not a built-in model
    assert sorted(labels, key=D.label_order) == ["rnn", "rnn-relu", "lstm", "gru", "gru-L2", "mamba", "transformer",
                                                 "s4"]


def hand_written_cell() -> pd.DataFrame:
    """One cell's runs, 500 steps each: three completed (losses 1, 2, 3; two solved), one diverged at step 60
    (solved before diverging), one failed, one unfinished."""
    return pd.DataFrame({
        "status": ["completed"] * 3 + ["diverged", "failed", "incomplete"],
        "config.seed": [0, 1, 2, 3, 4, 5], "config.data_seed": [0, 1, 2, 3, 4, 5],
        "config.train.steps": [500] * 6,
        "final.eval_loss": [1.0, 2.0, 3.0, None, None, None],
        "final.eval_accuracy": [0.5, 0.6, 0.7, None, None, None],
        "solved_step": [100, None, 300, 50, None, None], "diverged_step": [None, None, None, 60, None, None],
        "tokens_per_s": [10.0, 20.0, 30.0, 99.0, None, None],
        "params": [50, 50, 50, 50, None, None],
        "baseline_loss": [1 / 6] * 5 + [None],
    })


def test_summarise_cell_on_hand_written_runs():
    s = D.summarise_cell(hand_written_cell())
    assert s["loss_gmean"] == pytest.approx(6 ** (1 / 3)) and s["n"] == 3
    sd = pd.Series([math.log(1), math.log(2), math.log(3)]).std()
    assert s["loss_factor"] == pytest.approx(math.exp(4.3027 * sd / math.sqrt(3)), rel=1e-4)
    assert (s["accuracy_mean"], s["accuracy_lo"], s["accuracy_hi"]) == pytest.approx(proportion_ci([0.5, 0.6, 0.7])[:3])
    assert 0 <= s["accuracy_lo"] < 0.6 < s["accuracy_hi"] <= 1 and s["final_set"] == "eval"  # no test set recorded
    # 2 of 4 finished runs (completed or diverged): the diverged one met the criterion before diverging, yet is
    # not solved; failed and unfinished runs do not count
    assert (s["solved"], s["finished"], s["solve_rate"]) == (2, 4, 0.5)
    assert (s["solve_lo"], s["solve_hi"]) == pytest.approx(clopper_pearson(2, 4)[1:])
    # Kaplan–Meier: the diverged seed leaves at 60, solves at 100 (1 of 3 at risk) and 300 (1 of 2): 2/3 solved by
    # 300; the median over the solved seeds alone would say 200
    assert s["steps_to_solve"] == 300
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


def solving_cell(*solved_steps) -> pd.DataFrame:
    """Completed runs with a budget of 10 steps, each solved at its step or (None) never."""
    return pd.DataFrame({"status": "completed", "config.seed": range(len(solved_steps)),
                         "config.data_seed": range(len(solved_steps)), "config.train.steps": 10,
                         "final.eval_loss": 1.0, "solved_step": list(solved_steps)})


@pytest.mark.parametrize("solved, median, text", [((2, 4, None), 4, "4"), ((2, None, None), math.inf, "> 10"),
                                                  ((None, None), math.inf, "> 10"), ((3,), 3, "3")],
                         ids=["two-of-three", "one-of-three", "none", "one"])
def test_steps_to_solve_is_the_kaplan_meier_median_with_unsolved_seeds_censored(solved, median, text):
    s = D.summarise_cell(solving_cell(*solved))
    assert s["steps_to_solve"] == median
    assert tables.steps_text(s["steps_to_solve"], 10) == text


def test_final_values_come_from_the_test_set_where_every_run_has_one():
    runs = hand_written_cell().iloc[:3].assign(**{"final.test_loss": [2.0, 4.0, 8.0],
                                                  "final.test_accuracy": [0.1, 0.2, 0.3]})
    s = D.summarise_cell(runs)
    assert s["final_set"] == "test" and (s["loss_gmean"], s["accuracy_mean"]) == pytest.approx((4.0, 0.2))
    old = runs.assign(**{"final.test_loss": [2.0, None, 8.0]})  # one run without: the whole cell uses eval
    s = D.summarise_cell(old)
    assert s["final_set"] == "eval" and s["loss_gmean"] == pytest.approx(6 ** (1 / 3)) and s["n"] == 3


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
        losses = [s["final"][f"{row.final_set}_loss"] for s in summaries if s["config"]["model"]["hidden"] == hidden
                  and s["config"]["model"]["backend"] == backend and s["seed"] in (0, 1)]
        assert row.loss_gmean == pytest.approx(math.exp(sum(map(math.log, losses)) / 2))


def test_comparisons_pair_two_models_over_their_shared_seeds(report_data, results):
    comp = report_data.comparisons
    assert list(zip(comp.task, comp.length, comp.metric)) == [
        (t, n, m) for t in ("adding", "copy") for n in (8, 12) for m in ("final loss", "final accuracy")]
    assert set(comp.label_a) == {"lstm"} and set(comp.label_b) == {"transformer"} and set(comp.pairs) == {2}
    finals = {}
    for path in results.rglob("summary.json"):
        s = json.loads(path.read_text())
        if s["status"] == "completed":
            finals[s["model"], s["task"], s["config"]["task"]["length"], s["seed"]] = s["final"]
    for row in comp[comp.metric == "final loss"].itertuples():
        loss = f"{row.set}_loss"  # the test set where the records have one
        ratios = [finals["lstm", row.task, row.length, seed][loss]
                  / finals["transformer", row.task, row.length, seed][loss] for seed in (0, 1)]
        assert row.estimate == pytest.approx(math.sqrt(ratios[0] * ratios[1]))  # geometric mean of A / B
        assert row.lo < row.estimate < row.hi
        assert row.p in (0.5, 1.0) and row.smallest_p == 0.5 and row.verdict == "n too small"  # 2 pairs: 4 signs
    assert (comp.p_adjusted >= comp.p).all()


def test_no_comparison_interval_below_two_pairs(copy_runs):
    d = D.load(copy_runs(lambda s: s["seed"] == 0))
    assert set(d.comparisons.pairs) == {1} and d.comparisons.lo.isna().all()
    assert d.comparisons.estimate.notna().all() and set(d.comparisons.verdict) == {"n too small"}


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


def test_a_tasks_words_come_from_its_records_and_older_records_take_the_tasks_own():
    """Labels and notes are recorded with every run (the task's class attributes); a report reads them from the
    records, and for records made before they were recorded, from the registered task."""
    from seqbench.tasks import TASKS

    recorded = pd.DataFrame({"task": ["copy", "copy"], "loss_label": ["nats, as recorded", None],
                             "accuracy_label": ["recall, as recorded", None], "accuracy_note": [None, None]})
    assert D.task_words(recorded, "copy") == {"loss_label": "nats, as recorded", "accuracy_label": "recall, as recorded",
                                              "accuracy_note": TASKS["copy"].accuracy_note}
    older = pd.DataFrame({"task": ["mqar"]})
    assert D.task_words(older, "mqar") == {f: getattr(TASKS["mqar"], f) for f in D.TASK_WORDS}
    assert D.task_words(older, "a-task-from-elsewhere") == D.TASK_WORDS
    # and the chance level an older record lacks is the task's own, from the record's task keys
    old_copy = pd.DataFrame({"task": ["copy"], "config.task.n_symbols": [5], "config.task.length": [10]})
    assert D._chance(old_copy) == pytest.approx(TASKS["copy"](n_symbols=5, length=10).chance_accuracy)


def test_the_structured_kernel_record_is_read_before_the_words_of_kernel_path():
    """Records say what ran as `kernel` (backend, fallback reason); a record made before it says so in kernel_path's
    words alone, which are read for it."""
    rows = synthetic_runs({"config.model.backend": "triton"}, {"config.model.backend": "triton", "config.model.hidden": 16})
    rows = rows.assign(kernel_path=["kernels.fused.LSTM: fused-triton"] * 4,  # what the words would say
                       **{"kernel.backend": ["reference", "triton", None, "reference"],
                          "kernel.fallback": ["CPU tensors", None, None, None]})
    assert list(D.add_keys(rows)[0].backend) == ["reference (fallback)", "triton", "triton", "reference"]


@pytest.mark.parametrize("overrides", [["model=lstm", "model.backend=triton"], ["model=gru", "model.backend=reference"],
                                       ["model=rnn"], ["model=mingru", "model.backend=triton"],
                                       ["model=minlstm", "model.backend=reference"], ["model=transformer"]],
                         ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_a_runs_kernel_record_says_what_its_kernel_path_says(overrides):
    from seqbench.harness.records import MemoryWriter
    from seqbench.harness.train import run_record

    from ..harness.conftest import tiny

    summary = run_record(tiny("train.steps=2", "train.eval_every=2", *overrides), MemoryWriter(), progress=False)
    kernel, words = summary["kernel"], D.backend_name(summary["kernel_path"])
    assert kernel["backend"] + (" (fallback)" if kernel["fallback"] else "") == words
    assert (kernel["fallback"] is not None) == ("fallback" in summary["kernel_path"])
