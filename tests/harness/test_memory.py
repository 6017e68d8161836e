"""The memory estimate: its parameter count is the built model's, it tracks the peak RSS a run really reaches, and the
check refuses what does not fit unless `train.memory_check=false` (an operational key: the run_id stays)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seqbench.harness import memory
from seqbench.harness.config import ConfigError, merge, parse_overrides, resolve

from .conftest import tiny


@pytest.mark.parametrize("overrides", [
    ["model=rnn", "model.layers=3", "model.embed=5"],
    ["model=lstm", "model.layers=2", "task=copy", "task.n_symbols=5"],
    ["model=gru", "model.hidden=33"],
    ["model=transformer", "model.pos_encoding=learned", "model.ff_mult=3"],
    ["model=transformer", "model.pos_encoding=learned", "model.max_len=300"],
    ["model=transformer", "task=copy", "model.layers=3"],
    ["model=transformer", "model.pos_encoding=rope"],
    ["model=mingru", "model.layers=2", "model.hidden=20"],
    ["model=minlstm", "task=copy", "model.mlp_ratio=2"],
    ["model=lru", "model.layers=2", "model.state=24"],
    ["model=mamba", "model.layers=2", "model.state=4", "model.expand=3", "model.d_conv=2"],
], ids=lambda o: "-".join(o))
def test_parameter_count_is_the_built_models(overrides):
    cfg = tiny(*overrides)
    built = cfg.model.build(cfg.task.build())
    assert memory.parameter_count(cfg) == sum(p.numel() for p in built.parameters() if p.requires_grad)


def test_the_other_evaluation_lengths_count():
    short = memory.estimate(tiny("task=copy", "task.length=10", "train.eval_size=64"))
    long = memory.estimate(tiny("task=copy", "task.length=10", "train.eval_size=64", "eval.lengths=20,4000"))
    extra = 64 * 2 * 8 * (20 + 20 + 4000 + 20)  # x and y, int64, at both other lengths (copy_len 10)
    assert long.parts["data"] - short.parts["data"] == extra
    assert long.parts["evaluation activations"] > short.parts.get("evaluation activations", 0)


def test_the_largest_part_and_its_keys_are_named():
    est = memory.estimate(tiny("task.length=5000", "train.batch_size=512"))
    assert est.largest() == "training-step activations"
    assert "train.batch_size=512" in est.why[est.largest()] and "task.length=5000" in est.why[est.largest()]
    est = memory.estimate(tiny("model.hidden=4096", "train.batch_size=1"))
    assert est.largest() == "parameters" and "model.hidden=4096" in est.why["parameters"]


def test_check_refuses_what_does_not_fit_and_the_key_overrides_it():
    cfg = tiny("task.length=1000")
    need = memory.estimate(cfg).total
    assert memory.check(cfg, free=(need + 1, "test")).total == need
    with pytest.raises(ConfigError, match=r"memory: run \w+ needs about .* but cpu has .* \(test\).*"
                                          r"train.memory_check=false"):
        memory.check(cfg, free=(need - 1, "test"))
    with pytest.raises(ConfigError, match=r"x 2 runs at once .* fewer --workers"):
        memory.check(cfg, at_once=2, free=(need + need // 2, "test"))
    unchecked = tiny("task.length=1000", "train.memory_check=false")
    assert memory.check(unchecked, free=(1, "test")).total == need
    assert unchecked.run_id == cfg.run_id  # operational: not part of the experiment


def test_available_memory_is_a_positive_figure_with_its_source():
    free, source = memory.available("cpu")
    assert free > 0 and source


# Measured in a fresh process: after a warm-up run, reset the peak RSS (/proc/self/clear_refs), train, read VmHWM.
# Configurations unlike the ones the constants were measured on (other widths, lengths, layers, tasks, optimiser),
# each dominated by a different phase: a training step (torch and reference backends, the Transformer), an
# evaluation chunk, the gradient profile.
MEASURED = [
    "model=lstm model.layers=2 model.hidden=96 task=copy task.length=150 train.batch_size=192",
    "model=gru model.backend=reference model.hidden=48 task.length=200 train.batch_size=96",
    "model=transformer model.d_model=48 model.heads=4 model.layers=3 task.length=500 train.batch_size=48",
    "model=transformer model.d_model=32 model.heads=2 model.layers=2 task.length=400 train.batch_size=64 "
    "model.pos_encoding=rope",
    "model=rnn model.layers=2 model.hidden=128 task.length=600 train.batch_size=4 train.eval_size=256",
    "model=lstm model.hidden=64 task.length=200 train.batch_size=4 train.grad_profile_batch=48",
    "model=gru model.hidden=160 task.length=200 train.batch_size=128 train.optimizer=sgd",
    "model=minlstm model.layers=2 model.hidden=48 task=copy task.length=150 train.batch_size=96",
    "model=mingru model.backend=reference model.hidden=80 task.length=300 train.batch_size=64",
    "model=lru model.layers=2 model.hidden=48 task=copy task.length=150 train.batch_size=96",
    "model=lru model.hidden=64 model.state=128 task.length=200 train.batch_size=64",
    "model=mamba model.layers=2 model.hidden=32 task=copy task.length=100 train.batch_size=48",
]
BASE = ["device=cpu", "train.steps=2", "train.eval_every=0", "train.log_every=1", "train.eval_size=8",
        "train.grad_profile_batch=2"]
MEASURE = textwrap.dedent("""
    import ctypes, json, os, sys
    import torch
    from seqbench.harness.config import merge, parse_overrides, resolve
    from seqbench.harness.progress import Progress
    from seqbench.harness.records import MemoryWriter
    from seqbench.harness.train import Trainer

    def status(field):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024

    def train(items):
        cfg = resolve(merge(parse_overrides(BASE), parse_overrides(items)))
        trainer = Trainer(cfg)
        with Progress(cfg.train.steps, cfg.run_id, enabled=False) as bar:
            trainer.fit(MemoryWriter(), bar)

    torch.set_num_threads(1)
    train(["task.length=8", "train.batch_size=2"])  # libraries and their workspaces in place before measuring
    for line in sys.stdin:
        ctypes.CDLL(None).malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        base = status("VmRSS:")
        train(line.split())
        print(json.dumps(status("VmHWM:") - base), flush=True)
    os._exit(0)  # every figure is out; skip tearing down torch's modules
""").replace("BASE", repr(BASE))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or not Path("/proc/self/clear_refs").exists(),
                    reason="needs Linux's resettable peak RSS")
def test_the_estimate_is_within_a_factor_of_2_of_the_measured_peak():
    r = subprocess.run([sys.executable, "-c", MEASURE], input="\n".join(MEASURED), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    ratios = {}
    for items, grown in zip(MEASURED, map(int, r.stdout.split())):
        cfg = resolve(merge(parse_overrides(BASE), parse_overrides(items.split())))
        ratios[items] = round(memory.estimate(cfg).total / grown, 2)
    assert len(ratios) == len(MEASURED) and all(0.5 <= ratio <= 2 for ratio in ratios.values()), ratios
