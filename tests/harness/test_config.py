import math
import typing

import pytest

from seqbench.harness.config import ConfigError, RunConfig, TrainConfig, describe_keys, parse_overrides, resolve


def cfg(*items):
    return resolve(parse_overrides(list(items)))


def test_defaults_resolve_every_derived_value():
    c = cfg("seed=7")
    assert c.data_seed == 7  # derived from seed, then recorded
    assert c.device in ("cpu", "cuda")  # never "auto" in a record
    assert c.model.embed == c.model.hidden
    assert c.task.name == "adding" and c.model.name == "lstm"


def test_overrides_are_typed():
    c = cfg("task=copy", "task.length=200", "task.copy_len=5", "train.lr=3e-3", "train.early_stop=true",
            "model=rnn", "model.nonlinearity=relu", "data_seed=null")
    assert (c.task.name, c.task.length, c.task.copy_len, c.task.n_symbols) == ("copy", 200, 5, 8)
    assert c.train.lr == pytest.approx(0.003) and c.train.early_stop is True
    assert c.model.nonlinearity == "relu"


def test_run_id_is_a_hash_of_the_resolved_config():
    a = cfg("model.hidden=32", "seed=1")
    assert a.run_id == cfg("seed=1", "model.hidden=32").run_id  # order of overrides is irrelevant
    assert a.run_id == cfg("model.hidden=32", "seed=1", "data_seed=1", "model.embed=32").run_id  # defaults = explicit
    assert a.run_id != cfg("model.hidden=32", "seed=2").run_id
    assert a.run_id != cfg("model.hidden=32", "seed=1", "data_seed=5").run_id
    assert len(a.run_id) == 12
    assert RunConfig.model_validate(a.canonical()).run_id == a.run_id  # a record's config.json reproduces its id


@pytest.mark.parametrize("items, key", [
    (["task=nope"], "task=nope: unknown task; known: adding, copy"),
    (["model=s4"], "model=s4: unknown model; known: gru, lru, lstm, mamba, mingru, minlstm, rnn, transformer, or an "
                   "import path"),
    (["model.backend=cuda"], "model.backend=cuda"),
    (["train.foo=1"], "train.foo: unknown key"),
    (["frobnicate=1"], "frobnicate: unknown key"),
    (["model.heads=4"], "model.heads: unknown key"),  # a transformer key on an LSTM
    (["task.copy_len=3"], "task.copy_len: unknown key"),  # a copy key on adding
    (["model.hidden=abc"], "model.hidden=abc"),
    (["model.hidden=0"], "model.hidden=0"),
    (["model.hidden=1.5"], "model.hidden=1.5"),
    (["task.length=1"], "task.length=1"),  # adding needs one position per half
    (["task=copy", "task.length=0"], "task.length=0"),
    (["train.lr=0"], "train.lr=0"),
    (["train.lr=-1e-3"], "train.lr=-1e-3"),
    (["train.optimizer=lbfgs"], "train.optimizer=lbfgs"),
    (["model=transformer", "model.heads=5"], "model.heads=5 must divide model.d_model=64"),
    (["dtype=bfloat16", "device=cpu"], "bfloat16"),
    (["task.length"], "malformed override 'task.length'"),
    (["=3"], "malformed override"),
    (["task..length=3"], "malformed override"),
])
def test_bad_input_names_the_key(items, key):
    with pytest.raises(ConfigError) as e:
        cfg(*items)
    message = str(e.value)
    assert key in message
    assert "\n" not in message


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"allowed here: .*train\.lr"):
        cfg("train.learning_rate=1")


def test_every_documented_key_is_listed():
    keys = {row.key for row in describe_keys()}
    for key in ("task", "task.length", "task.n_symbols", "task.copy_len", "model", "model.hidden", "model.layers",
                "model.backend", "model.nonlinearity", "model.heads", "model.d_model", "train.steps",
                "train.batch_size", "train.lr", "train.optimizer", "train.clip", "train.eval_every",
                "train.log_every", "seed", "data_seed", "device", "dtype"):
        assert key in keys, key


# --- the bounds of every numeric train.* key, at the edge and just past it ------------------------------------------

# The specification the bound tests are generated from. A numeric train key missing here (a new one, or one whose
# bounds changed or were dropped) fails test_every_numeric_train_key_is_in_the_bounds_table until this table agrees.
TRAIN_BOUNDS = {
    "lr": {"gt": 0},
    "weight_decay": {"ge": 0},
    "momentum": {"ge": 0, "lt": 1},
    "batch_size": {"ge": 1},
    "steps": {"ge": 1},
    "clip": {"ge": 0},
    "eval_every": {"ge": 0},
    "eval_size": {"ge": 1},
    "log_every": {"ge": 1},
    "grad_profile_every": {"ge": 0},
    "grad_profile_batch": {"ge": 1},
    "checkpoint_every": {"ge": 0},
}
WORDS = {"ge": "greater than or equal to", "gt": "greater than", "le": "less than or equal to", "lt": "less than"}


def is_numeric(annotation) -> bool:
    return bool({int, float} & set(typing.get_args(annotation) or (annotation,)))


def declared_bounds(field) -> dict:
    return {b: getattr(m, b) for m in field.metadata for b in WORDS if hasattr(m, b)}


def test_every_numeric_train_key_is_in_the_bounds_table():
    fields = TrainConfig.model_fields
    assert {k: declared_bounds(f) for k, f in fields.items() if is_numeric(f.annotation)} == TRAIN_BOUNDS


def edge_cases() -> list:
    """(key, bound, bound value, accepted value, refused value) per bound: the edge itself, or for a strict bound the
    nearest representable value inside it, and the nearest one past it (an int's neighbour, or the next float:
    5e-324 above 0, 0.9999999999999999 below 1)."""
    cases = []
    for key, bounds in TRAIN_BOUNDS.items():
        is_int = TrainConfig.model_fields[key].annotation is int
        for bound, b in bounds.items():
            down, up = (b - 1, b + 1) if is_int else (math.nextafter(b, -math.inf), math.nextafter(b, math.inf))
            accepted, refused = {"ge": (b, down), "gt": (up, b), "le": (b, up), "lt": (down, b)}[bound]
            cases.append(pytest.param(key, bound, b, accepted, repr(refused), id=f"{key}-{bound}"))
    return cases


@pytest.mark.parametrize("key,bound,b,accepted,refused", edge_cases())
def test_train_key_bound_accepted_at_the_edge_refused_past_it(key, bound, b, accepted, refused):
    assert getattr(cfg(f"train.{key}={accepted!r}").train, key) == accepted
    with pytest.raises(ConfigError) as e:
        cfg(f"train.{key}={refused}")
    assert str(e.value) == f"train.{key}={refused}: Input should be {WORDS[bound]} {b}"


def test_every_committed_records_config_still_resolves_to_its_run_id():
    """Keys added since (LATER_KEYS) leave the identity of the records made before them: each committed config.json
    resolves to the run_id its folder is named by."""
    import json
    from pathlib import Path

    from seqbench.harness.config import RunConfig

    folders = sorted((Path(__file__).parents[2] / "results" / "reference").rglob("config.json"))
    assert len(folders) > 100
    moved = [p for p in folders if RunConfig.model_validate(json.loads(p.read_text())).run_id != p.parent.name]
    assert not moved, moved[:3]
