"""Run configuration: every knob a run depends on, validated, resolved (no `auto`, no derived defaults left) and hashed.

Users write dotted overrides (`task=adding task.length=200 train.lr=3e-3`) or config files in the same forms (dotted
keys, nested sections, `task: adding`); `resolve()` turns them into a `RunConfig` or raises `ConfigError` with one line
naming the offending key and what is allowed. Nothing here imports torch until a config's `device` is resolved, so
listing the keys (`seqbench list`) stays fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union

from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, create_model, field_validator,
                      model_validator)

from ..tasks import TASKS
from ..tasks.base import Task

from .dotted import flatten
from .errors import ConfigError
from .models import ModelConfigBase
from .models.plugins import canonical_name, known_names, model_class
from .trackers import parse_names

#: what a run computes in (`dtype`; `seqbench bench --dtype` takes the same names)
Dtype = Literal["float32", "bfloat16"]
DTYPE_NAMES: tuple[str, ...] = Dtype.__args__


class Strict(BaseModel):
    # inf and nan are refused in every float key: a run with lr=inf would only record a divergence
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _TaskConfig(Strict):
    task_class: ClassVar[type[Task]]
    #: keys of the `task` section that are the harness's, not the task's: how training uses the task
    HARNESS_KEYS: ClassVar[tuple[str, ...]] = ("name", "length_dist")

    def build(self) -> Task:
        return self.task_class(**self.model_dump(exclude=set(self.HARNESS_KEYS)))


def _task_config(task_cls: type[Task]) -> type[_TaskConfig]:
    """A pydantic model for one task, built from its dataclass fields, so a task declares its parameters once."""
    hints = typing.get_type_hints(task_cls)
    fields: dict[str, Any] = {"name": (Literal[task_cls.name], task_cls.name)}
    for f in dataclasses.fields(task_cls):
        bounds = {k: v for k, v in f.metadata.items() if k in ("ge", "gt", "le", "lt")}
        fields[f.name] = (hints[f.name], Field(f.default, description=f.metadata.get("help", ""), **bounds))
    fields["length_dist"] = (Literal["fixed", "uniform"], Field(
        "fixed", description="training lengths: every batch at task.length (fixed), or each batch at a length drawn "
        "uniformly from the task's valid lengths up to task.length (uniform: Delétang et al. 2023's protocol for "
        "length generalisation); evaluation stays at task.length and eval.lengths"))
    model = create_model(f"{task_cls.__name__}Config", __base__=_TaskConfig, **fields)
    model.task_class = task_cls
    return model


TASK_CONFIGS = {name: _task_config(cls) for name, cls in TASKS.items()}
TaskConfig = Annotated[Union[tuple(TASK_CONFIGS.values())], Field(discriminator="name")]

DEFAULT_TASK = "adding"
DEFAULT_MODEL = "lstm"


class TrainConfig(Strict):
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = Field("adam", description="optimiser")
    lr: float = Field(1e-3, gt=0, description="learning rate (constant)")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (decoupled for adamw)")
    momentum: float = Field(0.0, ge=0, lt=1, description="momentum for sgd and rmsprop")
    batch_size: int = Field(64, ge=1, description="sequences per training step")
    steps: int = Field(1000, ge=1, description="training steps")
    clip: float = Field(1.0, ge=0, description="global gradient-norm clipping threshold; 0 = off")
    eval_every: int = Field(100, ge=0, description="evaluate every N steps (and always at the end); 0 = only at the end")
    eval_size: int = Field(1024, ge=1, description="sequences in the fixed evaluation set")
    log_every: int = Field(10, ge=1, description="record metrics every N steps")
    early_stop: bool = Field(False, description="stop at the first evaluation that meets the task's solved criterion")
    grad_profile_every: int = Field(0, ge=0, description="profile dL/dh_t every N steps besides the start and end; 0 = off")
    grad_profile_batch: int = Field(32, ge=1, description="sequences in the fixed gradient-profile batch")
    grad_profile_dtype: Literal["float32", "float64"] = Field("float64", description="dtype of the gradient-profile pass")
    checkpoint_every: int = Field(200, ge=0, description="checkpoint every N steps (and on SIGINT/SIGTERM); 0 = only "
                                  "on a signal. Not part of run_id: it does not change results")
    deterministic: bool = Field(False, description="CUDA: deterministic algorithms only (torch, cuBLAS workspace, "
                                "cuDNN); slower. No effect on CPU, which is deterministic already")
    memory_check: bool = Field(True, description="refuse, before anything is written, a run whose estimated memory "
                               "exceeds what its device has available; false = run anyway. Not part of run_id")


def _length_range(text: str) -> list[int]:
    """`A..B` (every length from A to B) or `A..B:S` (every S-th): the lengths, or ValueError saying what is allowed."""
    span, _, step = text.partition(":")
    first, _, last = span.partition("..")
    try:
        a, b, s = int(first), int(last), int(step) if step else 1
    except ValueError:
        raise ValueError(f"{text!r}: a range is FIRST..LAST or FIRST..LAST:STEP, in integers") from None
    if s < 1 or b < a:
        raise ValueError(f"{text!r}: a range needs FIRST <= LAST and STEP >= 1")
    if (b - a) // s + 1 > MAX_LENGTHS:
        raise ValueError(f"{text!r}: {(b - a) // s + 1} lengths; at most {MAX_LENGTHS} (use a STEP)")
    return list(range(a, b + 1, s))


#: evaluation lengths one run may have (each is its own evaluation set, scored at every evaluation)
MAX_LENGTHS = 1000


class EvalConfig(Strict):
    lengths: list[int] = Field([], description="length generalisation: evaluate also at these task lengths (each "
                               "task says what its length is; e.g. copy: the delay T) besides the training length, at "
                               "every evaluation; recorded as eval_<metric>@<length>")

    @field_validator("lengths", mode="before")
    @classmethod
    def _from_text(cls, value):
        """On the command line: `eval.lengths=128,256` or `eval.lengths=[128,256]` (a single `256` too); a range
        `17..64` is every length from 17 to 64, `17..64:4` every fourth (17, 21, ..., 61), in a list too."""
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value).strip().removeprefix("[").removesuffix("]")
            value = [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, list):
            return [n for part in value for n in (_length_range(part) if isinstance(part, str) and ".." in part
                                                  else [part])]
        return value

    @field_validator("lengths")
    @classmethod
    def _distinct_sorted(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v < 1]
        if bad:
            raise ValueError(f"every length must be an integer >= 1 (got {bad[0]})")
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise ValueError(f"length {twice[0]} is given twice; give each length once")
        return sorted(value)  # the order a user lists them in is not part of the experiment

    test_size: int | None = Field(None, ge=1, description="sequences in the held-out test set, scored once on the "
                                  "final model and recorded as final.test_<metric>; never used for selection, early "
                                  "stopping or the solved step. Default (null): train.eval_size")


class SameAs(NamedTuple):
    """A LATER_KEYS value that is another key's value: `eval.test_size` defaults to `train.eval_size`."""

    key: str


#: keys added after records already existed, with the value that reproduces the earlier behaviour: at that value a
#: key stays out of run_id, so an experiment run before the key existed keeps its identity (and its records). A run
#: before `eval.test_size` existed had no test set: its default size leaves the id as it was (the test set adds
#: numbers to the record but changes nothing the run did before)
LATER_KEYS = {"eval.lengths": [], "task.variable_delay": False, "model.max_len": None, "model.params": None,
              "eval.test_size": SameAs("train.eval_size"), "task.random_non_queries": True,
              "task.loss_positions": "last", "task.length_dist": "fixed"}

#: dotted keys that say how a run is carried out, not which experiment it is: left out of run_id (and of a report's
#: cells). `threads` can change the last bits of a CPU run, so it is recorded and reused, but the experiment is the same.
OPERATIONAL_KEYS = ("train.checkpoint_every", "train.memory_check", "threads", "tracker")


class RunConfig(Strict):
    task: TaskConfig = Field(description="task")
    model: SerializeAsAny[ModelConfigBase] = Field(description="model")
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seed: int = Field(0, ge=0, description="model-initialisation seed")
    data_seed: int | None = Field(None, ge=0, description="data seed; default: the value of seed")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    dtype: Dtype = Field("float32", description="bfloat16 = autocast on CUDA")
    threads: int | None = Field(None, ge=1, description="CPU threads the run computes with; default: decided when the "
                                "run first starts (a sweep's share of the cores, else all) and recorded, so a resumed "
                                "or reproduced run uses the same. Not part of run_id")
    tracker: list[str] = Field([], description="experiment trackers the finished record is mirrored to: tensorboard, "
                               "wandb, mlflow (a list or a comma string). Not part of run_id")

    @field_validator("model", mode="wrap")
    @classmethod
    def _model_class(cls, value, handler):
        """The model's own config class, by name: a built-in, an import path or an entry point (models/plugins.py)."""
        if isinstance(value, dict):
            name = value.get("name", DEFAULT_MODEL)
            try:
                config_class = model_class(name)
            except ConfigError as e:
                raise ValueError(str(e).partition(": ")[2]) from None
            return config_class.model_validate({**value, "name": canonical_name(name)})
        return handler(value)

    @field_validator("tracker", mode="before")
    @classmethod
    def _tracker_names(cls, value):
        return parse_names(value)

    @model_validator(mode="after")
    def _resolve(self) -> RunConfig:
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.eval.test_size is None:
            self.eval.test_size = self.train.eval_size
        import torch  # here, not at the top: only resolving a device needs it

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not _DEVICE_ELSEWHERE.get() and not torch.cuda.is_available():
            raise ValueError("device=cuda but torch.cuda.is_available() is False; use device=cpu or auto")
        if self.dtype == "bfloat16" and self.device != "cuda":
            raise ValueError("dtype=bfloat16 is autocast on CUDA only; use dtype=float32 on device=cpu")
        self._match_params()
        self._check_lengths()
        return self

    #: the widest model `model.params` may choose
    MAX_WIDTH: ClassVar[int] = 1 << 16

    def _match_params(self) -> None:
        """`model.params=N`: the width (the model's `width_key`: hidden, or d_model in steps of `heads`) whose parameter
        count is closest to N, found by bisection (the count grows with the width); a budget outside the reachable
        range is refused. A config that already holds the width (a recorded config.json, resumed or reproduced) must
        hold the one the budget chooses; a user who gives both is asked to give one."""
        budget = self.model.params
        if budget is None:
            return
        key = self.model.width_key
        if key is None:
            raise ValueError(f"model.params={budget}: model {self.model.name} names no width knob (its config's "
                             f"width_key), so no budget can choose its size; set its width keys instead")
        given = getattr(self.model, key) if key in self.model.model_fields_set else None
        saved = dict(self.model.__dict__)
        for reading in self.model.width_readings():  # a recorded config may be read more than one way: any may match
            width = self._closest_width(budget, reading)
            if given is None or width == given:
                return
        self.model.__dict__.update(saved)
        raise ValueError(f"model.params={budget} and model.{key}={given}: the budget chooses model.{key}={width}; "
                         f"give one of the two")

    def _closest_width(self, budget: int, reading) -> int:
        from .memory import parameter_count

        step, key = self.model.width_step(), self.model.width_key

        def count(units: int) -> int:
            self.model.set_width(units * step, reading)
            return parameter_count(self)

        lo, hi = 1, self.MAX_WIDTH // step
        smallest, largest = count(lo), count(hi)
        if smallest > budget or largest < budget:
            raise ValueError(f"model.params={budget}: {self.model.name} on this task has {smallest:,} parameters at "
                             f"model.{key}={step} and {largest:,} at model.{key}={hi * step}; choose a budget in "
                             f"that range")
        while lo < hi:  # the smallest width whose count reaches the budget
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if count(mid) < budget else (lo, mid)
        best = min((u for u in (lo - 1, lo) if u >= 1), key=lambda u: (abs(count(u) - budget), u))
        count(best)
        return best * step

    def _check_lengths(self) -> None:
        """Every evaluation length makes a valid task, and a learned positional encoding covers every sequence."""
        task = self.task.build()
        given = f"eval.lengths={user_text(self.eval.lengths)}"
        tasks = {}
        for length in self.eval.lengths:
            try:
                tasks[length] = dataclasses.replace(task, length=length)
            except ValueError as e:
                raise ValueError(f"{given}: at length {length}: {e}") from None
        limit = getattr(self.model, "max_len", None)
        if getattr(self.model, "pos_encoding", None) != "learned":
            if limit is not None:
                raise ValueError(f"model.max_len={limit}: applies to model.pos_encoding=learned only (with "
                                 f"{self.model.pos_encoding} there is no table of positions to size)")
            return
        if limit is not None and task.seq_len > limit:
            raise ValueError(f"model.max_len={limit}: the training sequences have {task.seq_len} steps "
                             f"(task.length={task.length}); set model.max_len >= {task.seq_len}")
        limit = limit or task.seq_len
        for length, t in tasks.items():
            if t.seq_len > limit:
                raise ValueError(f"{given}: at length {length} a sequence has {t.seq_len} steps, beyond the learned "
                                 f"positional encoding's {limit} (model.max_len, default: the training sequence "
                                 f"length); set model.max_len >= {t.seq_len} or use model.pos_encoding=sinusoidal")

    def canonical(self) -> dict:
        """The resolved config as plain JSON data: what `run_id` hashes and what `config.json` holds."""
        return self.model_dump(mode="json")

    @property
    def run_id(self) -> str:
        identity = self.canonical()
        flat = flatten(identity)  # before anything is dropped: a SameAs default reads its key here
        for key in (*OPERATIONAL_KEYS, *LATER_KEYS):
            *parents, leaf = key.split(".")
            node = identity
            for part in parents:
                node = node[part]
            default = LATER_KEYS.get(key)
            if isinstance(default, SameAs):
                default = flat[default.key]
            if key in OPERATIONAL_KEYS or (leaf in node and node[leaf] == default):
                node.pop(leaf, None)
        if not identity["eval"]:
            identity.pop("eval")
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- overrides and config files -------------------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict:
    """`["task=adding", "task.length=100"]` -> `{"task": {"name": "adding", "length": "100"}}` (values stay strings).

    A key given twice is refused (`task=adding ... task=copy` would otherwise run whichever came last)."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _well_formed(key):
            raise ConfigError(f"malformed override {item!r}: expected key=value, e.g. task.length=100")
        pairs.append((key, _scalar(value)))
    return nested(pairs)


def _well_formed(key) -> bool:
    return isinstance(key, str) and bool(key) and all(part.strip() == part and part for part in key.split("."))


def _scalar(text: str):
    # pydantic coerces the strings "100", "3e-3", "true" to the field's type; only null needs a word of its own.
    return None if text.lower() in ("null", "none") else text


def user_text(value) -> str:
    """A value as a user types it: null, true/false, numbers and names bare."""
    if value is None or isinstance(value, (bool, dict, list)):
        return json.dumps(value)
    return str(value)


def nested(pairs: list[tuple[str, Any]], where: str = "") -> dict:
    """Dotted (key, value) pairs -> the nested tree that `resolve` takes. `task`/`model` alone name the task/model
    (`task.name`). A key given twice is an error (`where` prefixes the message, e.g. the file)."""
    tree: dict = {}
    seen: dict[str, str] = {}
    for key, value in pairs:
        canonical = f"{key}.name" if key in ("task", "model") else key
        given = f"{key}={user_text(value)}"
        if canonical in seen:
            raise ConfigError(f"{where}{given}: {key} is given twice (first {seen[canonical]}); give each key once")
        seen[canonical] = given
        set_dotted(tree, key, value)
    return tree


def from_mapping(data: dict, where: str = "") -> dict:
    """A config mapping in any of the forms a user writes (dotted keys, nested sections, `task: adding`, mixed) ->
    the nested tree that `resolve` takes, refusing a key given twice in two forms."""
    return nested(_dotted_pairs(data, "", where), where)


def _dotted_pairs(data: dict, prefix: str, where: str) -> list[tuple[str, Any]]:
    pairs = []
    for key, value in data.items():
        if not _well_formed(key):
            raise ConfigError(f"{where}{prefix}{key!r}: not a config key; keys are names such as task.length")
        if isinstance(value, dict):
            pairs += _dotted_pairs(value, f"{prefix}{key}.", where)
        else:
            pairs.append((prefix + key, value))
    return pairs


def set_dotted(tree: dict, key: str, value) -> None:
    """Set `a.b.c` in a nested dict. A bare `task`/`model` value names the task/model (sets `task.name`)."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is a value, not a section")
        node = child
    if leaf in ("task", "model") and not parents and not isinstance(value, dict):
        node.setdefault(leaf, {})["name"] = value
    elif isinstance(value, dict) and isinstance(node.get(leaf), dict):
        for k, v in value.items():
            set_dotted(node[leaf], k, v)
    elif isinstance(node.get(leaf), dict):
        raise ConfigError(f"{key}={user_text(value)}: {key} is a section, not a value; set its keys "
                          f"({', '.join(f'{key}.{k}' for k in node[leaf])}, ...)")
    else:
        node[leaf] = value


def merge(base: dict, overrides: dict) -> dict:
    """A copy of `base` with the nested `overrides` applied on top."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out


def _unique_key_loader():
    """yaml.SafeLoader, except that a key given twice in one mapping is an error instead of "the last one wins"."""
    import yaml  # here: `seqbench list` and `--help` read no YAML

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise ConfigError(f"{self.name}:{key_node.start_mark.line + 1}: {key_node.value}: given twice "
                                          f"in one mapping; give each key once")
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml(path: Path | str, what: str):
    """The YAML (or JSON) document in `path`; ConfigError naming `what` and the file if it cannot be read or parsed."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise ConfigError(f"{what} {path}: cannot read: {reason}") from None
    loader = _unique_key_loader()(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()


_DEVICE_ELSEWHERE = contextvars.ContextVar("seqbench_device_elsewhere", default=False)


@contextlib.contextmanager
def devices_elsewhere():
    """Resolve configs whose runs execute on other machines (Ray, SLURM): `device=cuda` is not checked against this
    one, so a login node without a GPU can submit GPU runs (each node resolves the config again before it trains).
    `device=auto` still means this machine's choice: name the device of a cluster sweep."""
    token = _DEVICE_ELSEWHERE.set(True)
    try:
        yield
    finally:
        _DEVICE_ELSEWHERE.reset(token)


def resolve(raw: dict) -> RunConfig:
    """Validate user values (nested dict, any subset of keys) into a resolved RunConfig, or raise ConfigError."""
    raw = json.loads(json.dumps(raw))  # deep copy; callers keep their dict
    for section, default in (("task", DEFAULT_TASK), ("model", DEFAULT_MODEL)):
        node = raw.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{section}: expected a name or a section, got {node!r}")
        name = node.setdefault("name", default)
        if section == "model":
            model_class(name)  # ConfigError naming the model and what is wrong
        elif not isinstance(name, str) or name not in TASK_CONFIGS:
            raise ConfigError(f"task={user_text(name)}: unknown task; known: {', '.join(sorted(TASK_CONFIGS))}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_one_line(e, raw)) from None


def _one_line(err: ValidationError, raw: dict) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 1 and loc[0] in ("task", "model") and loc[1] == str(raw[loc[0]]["name"]):
        loc.pop(1)  # pydantic puts the union's tag in the path
    key = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key; allowed here: {', '.join(_allowed(loc[:-1], raw))}"
    msg = first["msg"].removeprefix("Value error, ")
    if not loc:
        return msg
    value = first.get("input")
    return f"{key}={user_text(value)}: {msg}" if not isinstance(value, dict) else f"{key}: {msg}"


def _allowed(section: list[str], raw: dict) -> list[str]:
    if not section:
        model = RunConfig
    elif section[0] == "task":
        model = TASK_CONFIGS[raw["task"]["name"]]
    elif section[0] == "model":
        model = model_class(raw["model"]["name"])
    elif section[0] == "eval":
        model = EvalConfig
    else:
        model = TrainConfig
    prefix = ".".join(section) + "." if section else ""
    return [prefix + k for k in model.model_fields if k != "name"]


class KeyInfo(NamedTuple):
    """One config key for `seqbench list`: its default as a user types it, what values it takes, and its meaning."""

    key: str
    default: Any  # JSON: None, False, 64, "adam"
    allowed: str  # e.g. "integer >= 1", "adam | adamw | rmsprop | sgd", "true | false", "number > 0 or null"
    help: str


def describe_keys() -> list[KeyInfo]:
    """Every config key, task- and model-specific ones tagged with their task or model: for `seqbench list`."""
    rows = [KeyInfo("task", DEFAULT_TASK, " | ".join(sorted(TASK_CONFIGS)), "task name")]
    for name, model in sorted(TASK_CONFIGS.items()):
        rows += _rows("task.", model, f"[{name}] ")
    names = known_names()
    rows.append(KeyInfo("model", DEFAULT_MODEL, " | ".join(names) + " | package.module:ConfigClass", "model name"))
    for name in names:
        try:
            model = model_class(name)
        except ConfigError as e:  # an installed entry point that does not load: listed with the reason
            rows.append(KeyInfo(f"model.* [{name}]", None, "-", f"[{name}] cannot be loaded: {e}"))
            continue
        rows += _rows("model.", model, f"[{name}] ")
    rows += _rows("train.", TrainConfig, "")
    rows += _rows("eval.", EvalConfig, "")
    rows += [row for row in _rows("", RunConfig, "") if row.key not in ("task", "model", "train", "eval")]
    return rows


def _rows(prefix: str, model: type[BaseModel], tag: str) -> list[KeyInfo]:
    return [KeyInfo(prefix + k, f.default, allowed_values(f.annotation, f.metadata), tag + (f.description or ""))
            for k, f in model.model_fields.items() if k != "name"]


def allowed_values(annotation, constraints=()) -> str:
    """What a field with this type and these bounds accepts, in words: `integer >= 1`, `tanh | relu`, ..."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(map(str, args))
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return allowed_values(rest[0] if len(rest) == 1 else Union[tuple(rest)], constraints) + " or null"
    if typing.get_origin(annotation) is list:  # eval.lengths, tracker
        inner = {int: "integers", str: "names"}.get(args[0], str(args[0])) if args else "values"
        return f"list of {inner} (or a comma string)"
    words = {bool: "true | false", int: "integer", float: "number", str: "text"}.get(annotation, str(annotation))
    bounds = [f"{op} {user_text(getattr(c, attr))}" for c in constraints
              for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(c, attr)]
    return " ".join([words, ", ".join(bounds)]) if bounds else words
