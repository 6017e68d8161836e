"""Length generalisation (`eval.lengths`): the config's checks, the per-length records, that they change nothing
else, that each length's numbers are an ordinary evaluation at that length, and the tidy loader."""

import json
import math

import pytest
import torch

from seqbench.harness.cli import main
from seqbench.harness.config import ConfigError
from seqbench.harness.loaders import load_lengths
from seqbench.harness.train import EVAL_CHUNK, Trainer, eval_chunk, execute

from .conftest import tiny
from .test_sweep import untimed_metrics

COPY = ["task=copy", "task.length=6", "task.copy_len=2"]


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- the config -----------------------------------------------------------------------------------------------------
def test_lengths_are_sorted_and_their_order_is_not_part_of_the_run_id():
    a, b = tiny(*COPY, "eval.lengths=24,12"), tiny(*COPY, "eval.lengths=[12, 24]")
    assert a.eval.lengths == b.eval.lengths == [12, 24] and a.run_id == b.run_id
    assert a.run_id != tiny(*COPY).run_id != tiny(*COPY, "eval.lengths=12").run_id


def test_without_lengths_the_run_id_is_what_it_was_before_the_key_existed():
    # the identity hashed before eval.lengths (and copy's variable_delay, model.params) existed
    import hashlib

    cfg = tiny(*COPY)
    old = cfg.canonical()
    old.pop("eval"), old.pop("threads"), old.pop("tracker")
    old["train"].pop("checkpoint_every"), old["train"].pop("memory_check")
    old["task"].pop("variable_delay", None), old["model"].pop("params", None), old["task"].pop("length_dist", None)
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert cfg.run_id == hashlib.sha256(blob.encode()).hexdigest()[:12]


def test_a_later_key_at_its_old_behaviour_leaves_the_run_id_and_otherwise_changes_it():
    assert tiny(*COPY, "task.variable_delay=false").run_id == tiny(*COPY).run_id
    assert tiny(*COPY, "task.variable_delay=true").run_id != tiny(*COPY).run_id
    learned = ["model=transformer", "model.pos_encoding=learned", *COPY]
    assert tiny(*learned).run_id != tiny(*learned, "model.max_len=40").run_id


@pytest.mark.parametrize("value,message", [
    ("12,12", "eval.lengths=12,12: length 12 is given twice; give each length once"),
    ("0", "eval.lengths=0: every length must be an integer >= 1 (got 0)"),
    ("twelve", "eval.lengths.0=twelve: Input should be a valid integer"),
    ("20..10", "eval.lengths=20..10: '20..10': a range needs FIRST <= LAST and STEP >= 1"),
    ("8..x", "eval.lengths=8..x: '8..x': a range is FIRST..LAST or FIRST..LAST:STEP, in integers"),
    ("1..5000", "eval.lengths=1..5000: '1..5000': 5000 lengths; at most 1000 (use a STEP)"),
])
def test_bad_lengths_are_refused_with_the_key(value, message):
    with pytest.raises(ConfigError) as err:
        tiny(*COPY, f"eval.lengths={value}")
    assert str(err.value).startswith(message)


def test_a_length_the_task_refuses_is_refused_at_config_time():
    with pytest.raises(ConfigError, match=r"^eval\.lengths=\[1\]: at length 1: task\.length must be >= 2"):
        tiny("task=adding", "eval.lengths=1")


def test_a_learned_positional_encoding_must_cover_every_evaluation_length():
    learned = ["model=transformer", "model.pos_encoding=learned", *COPY]  # training sequences: 6 + 2*2 = 10 steps
    with pytest.raises(ConfigError, match=r"eval\.lengths=\[12\]: at length 12 a sequence has 16 steps, beyond the "
                                          r"learned positional encoding's 10 \(model\.max_len"):
        tiny(*learned, "eval.lengths=12")
    with pytest.raises(ConfigError, match=r"^model\.max_len=8: the training sequences have 10 steps"):
        tiny(*learned, "model.max_len=8")
    with pytest.raises(ConfigError, match=r"^model\.max_len=30: applies to model\.pos_encoding=learned only"):
        tiny("model=transformer", *COPY, "model.max_len=30")
    cfg = tiny(*learned, "eval.lengths=12", "model.max_len=16")
    assert cfg.model.build(cfg.task.build()).encoder.pos.shape == (16, 8)
    assert tiny(*learned, "eval.lengths=4").model.max_len is None  # shorter lengths fit the default


def test_the_command_line_refuses_bad_lengths_in_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["run", *COPY, "device=cpu", "eval.lengths=3,3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "eval.lengths=3,3" in err and not (tmp_path / "o").exists()


# --- the records ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_every_evaluation_records_each_length_and_training_is_unchanged(tmp_path, model):
    plain, run_plain = execute(tiny(*COPY, f"model={model}"), tmp_path / "a", progress=False)
    summary, run_dir = execute(tiny(*COPY, f"model={model}", "eval.lengths=3,6,24"), tmp_path / "b", progress=False)
    evals = [r for r in rows(run_dir) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    for r in evals:  # the training length (6) is the ordinary eval_*; no eval_*@6
        assert {k for k in r if k.startswith("eval_")} == {f"eval_{s}{at}" for s in ("loss", "accuracy", "exact")
                                                           for at in ("", "@3", "@24")}
    assert {k for k in summary["final"] if k.startswith("eval_")} == {k for k in evals[-1] if k.startswith("eval_")}
    # evaluating at more lengths perturbs neither training nor the training-length evaluation
    assert untimed_metrics(run_plain) == [{k: v for k, v in r.items() if "@" not in k} for r in untimed_metrics(run_dir)]
    assert summary["final"]["eval_loss"] == plain["final"]["eval_loss"]


def test_a_length_is_an_ordinary_evaluation_of_the_same_model_at_that_length():
    cfg = tiny(*COPY, "model=gru", "eval.lengths=20")
    trainer = Trainer(cfg)
    for _ in range(3):
        trainer.step()
    stats = trainer.evaluate()
    at_20 = Trainer(tiny("task=copy", "task.copy_len=2", "task.length=20", "model=gru"))  # the same "eval" stream
    at_20.model.load_state_dict(trainer.model.state_dict())
    assert torch.equal(at_20.eval_set[0], trainer.length_sets[20][1][0])
    direct = at_20.evaluate()
    for stat in ("loss", "accuracy", "exact"):
        assert stats[f"eval_{stat}@20"] == pytest.approx(direct[f"eval_{stat}"], rel=1e-5, abs=1e-7)
    assert stats["eval_loss@20"] != stats["eval_loss"]


def test_a_lengths_set_does_not_depend_on_the_other_lengths():
    a, b = Trainer(tiny(*COPY, "eval.lengths=9")), Trainer(tiny(*COPY, "eval.lengths=9,30"))
    assert all(torch.equal(u, v) for u, v in zip(a.length_sets[9][1], b.length_sets[9][1]))


def test_long_lengths_are_evaluated_in_chunks_of_bounded_size():
    assert eval_chunk(10) == EVAL_CHUNK and eval_chunk(1 << 15) == 1 and eval_chunk(1 << 20) == 1
    assert eval_chunk(4096) * 4096 <= 1 << 15 < (eval_chunk(4096) + 1) * 4096


def test_sinusoidal_transformer_outputs_on_a_prefix_do_not_depend_on_the_length():
    cfg = tiny("model=transformer", *COPY)
    model = cfg.model.build(cfg.task.build()).eval()
    x = torch.randint(0, 10, (2, 40), generator=torch.Generator().manual_seed(0))  # 4x the training sequence
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :10], model(x[:, :10]))


def test_a_run_with_lengths_reproduces_identically(tmp_path, capsys):
    _, run_dir = execute(tiny(*COPY, "model=lstm", "eval.lengths=12"), tmp_path, progress=False)
    assert main(["reproduce", str(run_dir), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "verdict: identical"


# --- the loader -----------------------------------------------------------------------------------------------------
def test_load_lengths_is_tidy(tmp_path):
    _, a = execute(tiny(*COPY, "model=gru", "eval.lengths=3,24"), tmp_path, progress=False)
    _, b = execute(tiny(*COPY, "model=lstm"), tmp_path, progress=False)
    frame = load_lengths(tmp_path)
    assert list(frame.columns[:6]) == ["run_id", "step", "length", "train_length", "extrapolated", "final"]
    assert {"loss", "accuracy", "exact"} <= set(frame.columns)
    ra, rb = frame[frame.run_id == a.name], frame[frame.run_id == b.name]
    assert len(ra) == 3 * 3 and sorted(set(ra.length)) == [3, 6, 24] and len(rb) == 3 and set(rb.length) == {6}
    assert (frame.train_length == 6).all() and (frame.extrapolated == (frame.length > 6)).all()
    final = ra[ra.final].set_index("length")
    summary = json.loads((a / "summary.json").read_text())["final"]
    assert final.loc[24, "accuracy"] == summary["eval_accuracy@24"] and final.loc[6, "loss"] == summary["eval_loss"]
    assert set(ra[ra.final].step) == {6} and math.isfinite(final.loc[3, "exact"])


def test_a_sweep_can_vary_the_lengths_and_tabulates_them(tmp_path, capsys):
    import yaml

    spec = tmp_path / "lg.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "lg", "base": {"task": "copy", "task.copy_len": 2, "model.hidden": 8, "device": "cpu",
                               "train.steps": 4, "train.eval_every": 2, "train.eval_size": 8, "train.batch_size": 4,
                               "train.grad_profile_batch": 2},
        "zip": {"task.length": [3, 5], "eval.lengths": [[6, 12], [10]]}, "seeds": 1}))
    assert main(["sweep", str(spec), "--out", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "[6, 12]" in out and "[10]" in out and (tmp_path / "lg" / "runs.parquet").exists()
    assert set(load_lengths(tmp_path / "lg").length) == {3, 5, 6, 10, 12}


# --- Delétang et al.'s training protocol: lengths drawn per batch ---------------------------------------------------
def test_uniform_training_lengths_cover_the_tasks_valid_lengths_evenly_and_depend_on_the_step_alone():
    from seqbench.harness.train import Trainer

    uniform = Trainer(tiny("task=mqar", "task.vocab=64", "task.num_kv_pairs=2", "task.length=16",
                           "task.length_dist=uniform"))
    assert uniform.train_lengths == [8, 10, 12, 14, 16]  # MQAR: even lengths from 4D
    drawn = [uniform.task_at(k).length for k in range(1, 5001)]
    for length in uniform.train_lengths:  # 1000 expected each; 5 standard deviations is about 140
        assert abs(drawn.count(length) - 1000) < 140, (length, drawn.count(length))
    again = Trainer(uniform.cfg)
    assert [again.task_at(k).length for k in range(1, 200)] == drawn[:199]  # no generator state: resumable
    other = Trainer(tiny("task=mqar", "task.vocab=64", "task.num_kv_pairs=2", "task.length=16",
                         "task.length_dist=uniform", "data_seed=5"))
    assert [other.task_at(k).length for k in range(1, 200)] != drawn[:199]
    fixed = Trainer(tiny("task=copy", "task.length=6"))
    assert fixed.train_lengths == [6] and {fixed.task_at(k).length for k in range(1, 50)} == {6}
    assert tiny("task=copy", "task.length=6", "task.length_dist=fixed").run_id == fixed.cfg.run_id


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_a_run_at_uniform_lengths_trains_on_them_and_resumes_bitwise(tmp_path, monkeypatch, model):
    from seqbench.harness.records import CHECKPOINT
    from seqbench.harness.train import RunInterrupted, Trainer

    from .test_resume import interrupt_at
    from .test_train import records, untimed

    cfg = tiny(f"model={model}", "task=copy", "task.length=6", "task.length_dist=uniform", "train.steps=8",
               "train.eval_every=4", "train.log_every=2")
    seen, forward = [], Trainer.step

    def step(self, group_norms=False):
        seen.append(self.task_at(self.at_step).seq_len)
        return forward(self, group_norms)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "step", step)
        _, ref_dir = execute(cfg, tmp_path / "ref", progress=False)
    assert len(set(seen)) > 1 and max(seen) <= cfg.task.build().seq_len  # L = T + 2c, T drawn from 1..6
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        with pytest.raises(RunInterrupted):
            execute(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / cfg.run_id / CHECKPOINT).exists()
    execute(cfg, tmp_path / "run", progress=False)
    (m_ref, s_ref), (m_run, s_run) = records(ref_dir), records(tmp_path / "run" / cfg.run_id)
    assert untimed(m_run) == untimed(m_ref) and s_run["final"] == s_ref["final"]


def test_a_range_of_lengths_is_every_length_or_every_step_th_and_the_same_run_as_its_list():
    ranged = tiny(*COPY, "eval.lengths=12..20:4")
    assert ranged.eval.lengths == [12, 16, 20] and ranged.run_id == tiny(*COPY, "eval.lengths=12,16,20").run_id
    assert tiny(*COPY, "eval.lengths=[9..11, 30]").eval.lengths == [9, 10, 11, 30]


def test_length_dist_takes_fixed_or_uniform():
    with pytest.raises(ConfigError, match="^task.length_dist=random: Input should be 'fixed' or 'uniform'"):
        tiny(*COPY, "task.length_dist=random")
