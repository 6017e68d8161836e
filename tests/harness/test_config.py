import pytest

from harness.config import ConfigError, RunConfig, describe_keys, parse_overrides, resolve


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
    (["model=mamba"], "model=mamba: unknown model; known: gru, lstm, rnn, transformer"),
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
    keys = {k for k, _, _ in describe_keys()}
    for key in ("task", "task.length", "task.n_symbols", "task.copy_len", "model", "model.hidden", "model.layers",
                "model.backend", "model.nonlinearity", "model.heads", "model.d_model", "train.steps",
                "train.batch_size", "train.lr", "train.optimizer", "train.clip", "train.eval_every",
                "train.log_every", "seed", "data_seed", "device", "dtype"):
        assert key in keys, key
