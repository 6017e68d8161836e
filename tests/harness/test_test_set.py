"""The held-out test set (`eval.test_size`): its own data stream, scored once on the final model into the summary's
`final.test_*`, leaving the run_id of a default config, the training and every evaluation as they were; resumed runs
record the same bits, and records made before it existed still load and reproduce."""

import hashlib
import json

import pytest
import torch

from seqbench.harness import memory
from seqbench.harness.cli import main
from seqbench.harness.config import ConfigError, RunConfig
from seqbench.harness.loaders import load_runs
from seqbench.harness.records import MemoryWriter
from seqbench.harness.progress import Progress
from seqbench.harness.train import RunInterrupted, Trainer, derive_seed, execute

from .conftest import tiny
from .test_guards import poison_gradient_at, rows
from .test_resume import interrupt_at
from .test_train import records, untimed

COPY = ["task=copy", "task.length=4", "task.copy_len=6"]  # 8^6 possible sequences: a shared row is a shared stream


# --- the config -----------------------------------------------------------------------------------------------------
def old_run_id(cfg: RunConfig) -> str:
    """The run_id hashed before eval.test_size existed (the identity without the later and operational keys)."""
    old = cfg.canonical()
    old.pop("eval"), old.pop("threads"), old.pop("tracker")
    old["train"].pop("checkpoint_every"), old["train"].pop("memory_check")
    old["task"].pop("variable_delay", None), old["model"].pop("params", None), old["task"].pop("length_dist", None)
    return hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


@pytest.mark.parametrize("eval_size", [16, 40])
def test_the_default_is_the_eval_size_and_leaves_the_run_id_as_it_was(eval_size):
    cfg = tiny(f"train.eval_size={eval_size}")
    assert cfg.eval.test_size == eval_size  # resolved: the record's config.json says the size it scored
    assert cfg.run_id == old_run_id(cfg)
    assert tiny(f"train.eval_size={eval_size}", f"eval.test_size={eval_size}").run_id == cfg.run_id  # explicit = default
    assert tiny(f"train.eval_size={eval_size}", "eval.test_size=24").run_id != cfg.run_id
    recorded = cfg.canonical()
    assert RunConfig.model_validate(recorded).run_id == cfg.run_id  # a new config.json gives its id back
    recorded["eval"].pop("test_size")  # a config.json written before the key existed
    assert RunConfig.model_validate(recorded).run_id == cfg.run_id


def test_an_explicit_size_follows_no_later_change_of_the_eval_size():
    # like data_seed: a resolved config holds the size itself, so changing train.eval_size keeps a given test size
    a, b = tiny("eval.test_size=24"), tiny("eval.test_size=24", "train.eval_size=24")
    assert (a.eval.test_size, b.eval.test_size) == (24, 24) and a.run_id != b.run_id
    assert b.run_id == tiny("train.eval_size=24").run_id  # 24 is b's default: the key leaves its identity


@pytest.mark.parametrize("value,message", [
    ("0", "eval.test_size=0: Input should be greater than or equal to 1"),
    ("-5", "eval.test_size=-5: Input should be greater than or equal to 1"),
    ("many", "eval.test_size=many: Input should be a valid integer"),
    ("1.5", "eval.test_size=1.5: Input should be a valid integer"),
])
def test_a_bad_size_is_refused_naming_the_key(value, message):
    with pytest.raises(ConfigError) as err:
        tiny(f"eval.test_size={value}")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_memory_estimate_counts_the_test_set():
    base = memory.estimate(tiny(*COPY))
    more = memory.estimate(tiny(*COPY, "eval.test_size=1016"))
    one = memory._sequence_bytes(tiny(*COPY).task.build())
    assert more.parts["data"] - base.parts["data"] == 1000 * one
    assert "eval.test_size=1016" in more.why["data"]


# --- the stream -----------------------------------------------------------------------------------------------------
def test_the_test_set_is_its_own_stream():
    cfg = tiny(*COPY, "train.eval_size=16", "train.grad_profile_batch=8")
    t = Trainer(cfg)
    test_x = t.test_set()[0]
    assert len(test_x) == cfg.eval.test_size == 16
    train = t.task.sample(64, torch.Generator().manual_seed(derive_seed(cfg.data_seed, "train")))[0]
    assert torch.equal(t.task.sample(cfg.train.batch_size, t.gen)[0], train[:cfg.train.batch_size])  # first batch
    assert not rows(test_x) & rows(train), "test sequences also appear in the training stream"
    assert not rows(test_x) & rows(t.eval_set[0]), "the test set and the eval set share sequences"
    assert not rows(test_x) & rows(t.profile_batch[0]), "the test set and the gradient-profile batch share sequences"
    assert len({derive_seed(cfg.data_seed, s) for s in ("train", "eval", "profile", "test")}) == 4


def test_the_data_seed_alone_decides_the_test_set():
    x = Trainer(tiny(*COPY)).test_set()[0]
    assert torch.equal(x, Trainer(tiny(*COPY, "seed=7", "data_seed=0")).test_set()[0])  # another model init
    assert torch.equal(x, Trainer(tiny(*COPY)).test_set()[0])  # drawn afresh: the same every time
    assert not rows(x) & rows(Trainer(tiny(*COPY, "data_seed=1")).test_set()[0])


# --- the record -----------------------------------------------------------------------------------------------------
TASKS = {"adding": ["task=adding"], "copy": ["task=copy", "task.length=6", "task.copy_len=2"],
         "selective_copy": ["task=selective_copy", "task.length=8"], "mqar": ["task=mqar", "task.length=16", "task.num_kv_pairs=2", "task.vocab=64"],
         "induction": ["task=induction", "task.length=12"]}


@pytest.mark.parametrize("task", list(TASKS))
def test_the_summary_scores_the_final_model_on_the_test_set_for_every_task(task):
    cfg = tiny(*TASKS[task], "train.steps=4", "train.eval_every=0")
    t = Trainer(cfg)
    with Progress(cfg.train.steps, cfg.run_id, enabled=False) as bar:
        summary = t.fit(MemoryWriter(), bar)
    final = summary["final"]
    evals = {k.removeprefix("eval_") for k in final if k.startswith("eval_")}
    assert {k for k in final if k.startswith("test_")} == {f"test_{k}" for k in evals}  # the same statistics
    with torch.no_grad():  # the trained model, scored again by hand: what the record says
        t.model.eval()
        x, y = t.test_set()
        by_hand = {k: v.mean().item() for k, v in t.task.eval_stats(t.model(x).float(), y).items()}
    assert final["test_loss"] == pytest.approx(by_hand["loss"], rel=1e-6)
    assert final["test_accuracy"] == pytest.approx(by_hand["accuracy"], rel=1e-6)
    assert final["test_loss"] != final["eval_loss"]  # another set
    assert summary["last_eval"].keys().isdisjoint(final.keys() - {f"eval_{k}" for k in evals})


def test_the_test_set_changes_nothing_else_and_stays_out_of_the_metrics(tmp_path):
    a, dir_a = execute(tiny(*COPY, "eval.lengths=8"), tmp_path / "a", progress=False)
    b, dir_b = execute(tiny(*COPY, "eval.lengths=8", "eval.test_size=64"), tmp_path / "b", progress=False)
    (m_a, _), (m_b, _) = records(dir_a), records(dir_b)
    assert untimed(m_a) == untimed(m_b) and not any(k.startswith("test_") for r in m_a for k in r)
    assert (dir_a / "grad_profile.jsonl").read_text() == (dir_b / "grad_profile.jsonl").read_text()
    evals = {k: v for k, v in a["final"].items() if k.startswith("eval_")}
    assert evals == {k: v for k, v in b["final"].items() if k.startswith("eval_")}
    assert "eval_accuracy@8" in evals and not any("@" in k for k in a["final"] if k.startswith("test_"))
    assert a["final"]["test_loss"] != b["final"]["test_loss"]  # 16 vs 64 sequences


def test_a_diverged_run_records_empty_test_fields(tmp_path, monkeypatch):
    poison_gradient_at(monkeypatch, 3, float("nan"))
    summary, _ = execute(tiny(*COPY), tmp_path, progress=False)
    assert summary["status"] == "diverged"
    assert {k: v for k, v in summary["final"].items() if k.startswith("test_")} == {
        "test_loss": None, "test_accuracy": None, "test_exact": None}


@pytest.mark.parametrize("k", [3, 6])  # on an eval row; on the last step
def test_a_resumed_run_records_the_same_test_bits(tmp_path, monkeypatch, k):
    cfg = tiny(*COPY, "train.optimizer=adamw")
    reference, _ = execute(cfg, tmp_path / "ref", progress=False)
    with monkeypatch.context() as m:
        interrupt_at(m, k)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path / "run", progress=False)
    resumed, _ = execute(cfg, tmp_path / "run", progress=False)
    assert resumed["resumed_from_step"] == k and "test_loss" in resumed["final"]
    assert resumed["final"] == reference["final"]  # == on floats read back from JSON: bitwise


# --- records made before the test set ---------------------------------------------------------------------------
def strip_test_fields(run_dir):
    """Make `run_dir` look like a record written before runs had a test set."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary["final"] = {k: v for k, v in summary["final"].items() if not k.startswith("test_")}
    summary["config"]["eval"].pop("test_size")
    path.write_text(json.dumps(summary))
    config = json.loads((run_dir / "config.json").read_text())
    config["eval"].pop("test_size")
    (run_dir / "config.json").write_text(json.dumps(config))


def test_an_old_record_without_test_fields_still_loads(tmp_path):
    new, _ = execute(tiny(), tmp_path / "new", progress=False)
    old, old_dir = execute(tiny("seed=1"), tmp_path / "old", progress=False)
    strip_test_fields(old_dir)
    alone = load_runs(tmp_path / "old")
    assert len(alone) == 1 and "final.test_loss" not in alone and alone["final.eval_loss"].iloc[0] == old["final"]["eval_loss"]
    both = load_runs(tmp_path).set_index("run_id")
    assert both.loc[new["run_id"], "final.test_loss"] == new["final"]["test_loss"]
    assert both["final.test_loss"].isna().tolist() == [rid == old["run_id"] for rid in both.index]


def test_reproduce_compares_the_test_fields_and_names_them_when_the_record_predates_them(tmp_path, capsys):
    _, run_dir = execute(tiny(), tmp_path / "a", progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final"]["test_loss"] *= 1.5
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["reproduce", str(run_dir), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "summary: final.test_loss" in out and out.strip().splitlines()[-1].startswith("verdict: differs")

    _, old_dir = execute(tiny(), tmp_path / "b", progress=False)
    strip_test_fields(old_dir)
    assert main(["reproduce", str(old_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "verdict: identical"
    assert "so not compared: final.test_accuracy, final.test_loss" in out
    assert "environment: same as the record (" in out  # a result field the record lacks says nothing of the machine
