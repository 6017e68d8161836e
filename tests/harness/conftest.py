import pytest

from seqbench.harness.config import merge, parse_overrides, resolve

TINY = ["task=adding", "task.length=12", "train.steps=6", "train.batch_size=4",
        "train.eval_every=3", "train.log_every=2", "train.eval_size=16", "train.grad_profile_batch=4"]


def tiny(*overrides: str):
    """A resolved config small enough to train in well under a second on a CPU."""
    size = (["model.d_model=8", "model.heads=2", "model.layers=1"] if "model=transformer" in overrides
            else ["model.hidden=8"])
    # layered: the command line refuses a key given twice, but a test's overrides replace TINY's
    return resolve(merge(merge(parse_overrides([*TINY, "device=cpu"]), parse_overrides(size)),
                         parse_overrides(list(overrides))))


@pytest.fixture
def tiny_cfg():
    return tiny


def as_from_a_terminal():
    """`preexec_fn` for a command a test stops with Ctrl-C: SIGINT at its default, as a terminal's process has it.
    A test suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and Python then keeps it
    ignored in every child, so Ctrl-C and submitit's local cancel (a SIGINT) would not reach them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
