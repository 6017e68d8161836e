import pytest

from seqbench.harness.config import parse_overrides, resolve

TINY = ["task=adding", "task.length=12", "train.steps=6", "train.batch_size=4",
        "train.eval_every=3", "train.log_every=2", "train.eval_size=16", "train.grad_profile_batch=4"]


def tiny(*overrides: str):
    """A resolved config small enough to train in well under a second on a CPU."""
    size = (["model.d_model=8", "model.heads=2", "model.layers=1"] if "model=transformer" in overrides
            else ["model.hidden=8"])
    return resolve(parse_overrides([*TINY, *size, "device=cpu", *overrides]))


@pytest.fixture
def tiny_cfg():
    return tiny
