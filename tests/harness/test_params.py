"""`model.params`: a parameter budget chooses the width (hidden, or d_model in steps of heads) whose trainable parameter
count is closest to it; the record keeps the budget, the width and the count; impossible budgets are refused."""

import json

import pytest

from seqbench.harness.config import ConfigError, RunConfig, parse_overrides, resolve
from seqbench.harness.memory import parameter_count
from seqbench.harness.train import execute


MODELS = ["model=rnn", "model=lstm", "model=gru", "model=transformer", "model=lstm model.layers=2",
          "model=gru model.layers=3 model.embed=16", "model=transformer model.layers=4 model.heads=2", "model=mingru",
          "model=minlstm model.layers=2", "model=lru", "model=lru model.layers=2 model.state=32",
          "model=mamba", "model=mamba model.layers=2 model.state=8"]
TASKS = ["task=copy", "task=adding", "task=selective_copy", "task=induction"]


def matched(model: str, task: str, budget: int) -> RunConfig:
    return resolve(parse_overrides([*model.split(), task, "device=cpu", f"model.params={budget}"]))


def built_count(cfg: RunConfig) -> int:
    return sum(p.numel() for p in cfg.model.build(cfg.task.build()).parameters() if p.requires_grad)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_built_in_model_lands_within_a_few_percent_and_as_close_as_its_width_allows(model, task):
    # a Transformer's d_model moves in steps of heads: below ~100k parameters one step is more than 5% of the count
    for budget in ((100_000, 500_000) if "transformer" in model else (30_000, 200_000)):
        cfg = matched(model, task, budget)
        count = built_count(cfg)
        assert count == parameter_count(cfg)
        assert abs(count / budget - 1) < (0.05 if "transformer" in model else 0.03), (budget, count)
        key = "d_model" if "transformer" in model else "hidden"
        width, step = getattr(cfg.model, key), getattr(cfg.model, "heads", 1)
        for other in (width - step, width + step):  # no neighbouring width is closer
            if other >= step:
                neighbour = cfg.model_copy(deep=True)
                setattr(neighbour.model, key, other)
                if hasattr(neighbour.model, "embed") and "model.embed" not in model:
                    neighbour.model.embed = other
                assert abs(parameter_count(neighbour) - budget) >= abs(count - budget)
        if "model.embed=16" in model:
            assert cfg.model.embed == 16  # a given embed stays
        elif hasattr(cfg.model, "embed"):
            assert cfg.model.embed == width  # else it follows the chosen hidden size, as without a budget
        if key == "d_model":
            assert width % cfg.model.heads == 0


def test_a_recorded_config_resolves_to_the_same_run():
    for model in ("model=lstm", "model=gru model.embed=16", "model=transformer"):
        cfg = matched(model, "task=copy", 60_000)
        again = RunConfig.model_validate(json.loads(json.dumps(cfg.canonical())))
        assert again.canonical() == cfg.canonical() and again.run_id == cfg.run_id


def test_the_budget_is_part_of_the_experiment():
    a, b = matched("model=gru", "task=copy", 60_000), matched("model=gru", "task=copy", 61_000)
    assert a.run_id != b.run_id
    plain = resolve(parse_overrides(["model=gru", "task=copy", "device=cpu", f"model.hidden={a.model.hidden}"]))
    assert plain.run_id != a.run_id and plain.model.params is None


@pytest.mark.parametrize("overrides,message", [
    (["model=lstm", "model.params=5"], r"^model\.params=5: lstm on this task has 44 parameters at model\.hidden=1 "
                                       r"and [\d,]+ at model\.hidden=65536; choose a budget in that range$"),
    (["model=lstm", "model.params=50000", "model.hidden=32"],
     r"^model\.params=50000 and model\.hidden=32: the budget chooses model\.hidden=\d+; give one of the two$"),
    (["model=transformer", "model.params=50000", "model.d_model=64"],
     r"^model\.params=50000 and model\.d_model=64: the budget chooses model\.d_model=\d+"),
    (["model=rnn", "model.params=0"], r"^model\.params=0: Input should be greater than or equal to 1"),
])
def test_impossible_or_contradictory_budgets_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(parse_overrides([*overrides, "task=copy", "device=cpu"]))


def test_a_matched_run_records_budget_width_and_count(tmp_path):
    from .conftest import TINY

    cfg = resolve(parse_overrides([*TINY, "device=cpu", "model=gru", "model.params=3000"]))
    summary, run_dir = execute(cfg, tmp_path, progress=False)
    recorded = json.loads((run_dir / "config.json").read_text())["model"]
    assert recorded["params"] == 3000 and recorded["hidden"] == cfg.model.hidden
    assert summary["params"] == built_count(cfg) and abs(summary["params"] / 3000 - 1) < 0.05
