"""Run configuration: every knob a run depends on, validated, resolved (no `auto`, no derived defaults left) and hashed.

Users write dotted overrides (`task=adding task.length=200 train.lr=3e-3`); `resolve()` turns them into a `RunConfig`
or raises `ConfigError` with one line naming the offending key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from ..tasks import TASKS
from ..tasks.base import Task

from .models import MODELS


class ConfigError(ValueError):
    """Bad user input: the message is one line that names the key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _TaskConfig(Strict):
    task_class: ClassVar[type[Task]]

    def build(self) -> Task:
        return self.task_class(**self.model_dump(exclude={"name"}))


def _task_config(task_cls: type[Task]) -> type[_TaskConfig]:
    """A pydantic model for one task, built from its dataclass fields, so a task declares its parameters once."""
    hints = typing.get_type_hints(task_cls)
    fields: dict[str, Any] = {"name": (Literal[task_cls.name], task_cls.name)}
    for f in dataclasses.fields(task_cls):
        bounds = {k: v for k, v in f.metadata.items() if k in ("ge", "gt", "le", "lt")}
        fields[f.name] = (hints[f.name], Field(f.default, description=f.metadata.get("help", ""), **bounds))
    model = create_model(f"{task_cls.__name__}Config", __base__=_TaskConfig, **fields)
    model.task_class = task_cls
    return model


TASK_CONFIGS = {name: _task_config(cls) for name, cls in TASKS.items()}
TaskConfig = Annotated[Union[tuple(TASK_CONFIGS.values())], Field(discriminator="name")]
ModelConfig = Annotated[Union[tuple(MODELS.values())], Field(discriminator="name")]

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


#: dotted keys that say how a run is carried out, not which experiment it is: left out of run_id (and of a report's
#: cells). `threads` can change the last bits of a CPU run, so it is recorded and reused, but the experiment is the same.
OPERATIONAL_KEYS = ("train.checkpoint_every", "threads")


class RunConfig(Strict):
    task: TaskConfig = Field(description="task")
    model: ModelConfig = Field(description="model")
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = Field(0, ge=0, description="model-initialisation seed")
    data_seed: int | None = Field(None, ge=0, description="data seed; default: the value of seed")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16 = autocast on CUDA")
    threads: int | None = Field(None, ge=1, description="CPU threads the run computes with; default: decided when the "
                                "run first starts (a sweep's share of the cores, else all) and recorded, so a resumed "
                                "or reproduced run uses the same. Not part of run_id")

    @model_validator(mode="after")
    def _resolve(self) -> RunConfig:
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device=cuda but torch.cuda.is_available() is False; use device=cpu or auto")
        if self.dtype == "bfloat16" and self.device != "cuda":
            raise ValueError("dtype=bfloat16 is autocast on CUDA only; use dtype=float32 on device=cpu")
        return self

    def canonical(self) -> dict:
        """The resolved config as plain JSON data: what `run_id` hashes and what `config.json` holds."""
        return self.model_dump(mode="json")

    @property
    def run_id(self) -> str:
        identity = self.canonical()
        for key in OPERATIONAL_KEYS:
            *parents, leaf = key.split(".")
            node = identity
            for part in parents:
                node = node[part]
            node.pop(leaf)
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- overrides -------------------------------------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict:
    """`["task=adding", "task.length=100"]` -> `{"task": {"name": "adding", "length": "100"}}` (values stay strings)."""
    tree: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"malformed override {item!r}: expected key=value, e.g. task.length=100")
        set_dotted(tree, key, _scalar(value))
    return tree


def _scalar(text: str):
    # pydantic coerces the strings "100", "3e-3", "true" to the field's type; only null needs a word of its own.
    return None if text.lower() in ("null", "none") else text


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
    else:
        node[leaf] = value


def merge(base: dict, overrides: dict) -> dict:
    """A copy of `base` with the nested `overrides` applied on top."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out


def resolve(raw: dict) -> RunConfig:
    """Validate user values (nested dict, any subset of keys) into a resolved RunConfig, or raise ConfigError."""
    raw = json.loads(json.dumps(raw))  # deep copy; callers keep their dict
    for section, registry, default in (("task", TASK_CONFIGS, DEFAULT_TASK), ("model", MODELS, DEFAULT_MODEL)):
        node = raw.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{section}: expected a name or a section, got {node!r}")
        name = node.setdefault("name", default)
        if name not in registry:
            raise ConfigError(f"{section}={name}: unknown {section}; known: {', '.join(sorted(registry))}")
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
    return f"{key}={value}: {msg}" if not isinstance(value, dict) else f"{key}: {msg}"


def _allowed(section: list[str], raw: dict) -> list[str]:
    if not section:
        model = RunConfig
    elif section[0] == "task":
        model = TASK_CONFIGS[raw["task"]["name"]]
    elif section[0] == "model":
        model = MODELS[raw["model"]["name"]]
    else:
        model = TrainConfig
    prefix = ".".join(section) + "." if section else ""
    return [prefix + k for k in model.model_fields if k != "name"]


def describe_keys() -> list[tuple[str, str, str]]:
    """Every config key as (key, default, help): for `seqbench list`."""
    rows = [("task", DEFAULT_TASK, "task name: " + ", ".join(sorted(TASK_CONFIGS)))]
    for name, model in sorted(TASK_CONFIGS.items()):
        rows += _rows("task.", model, f"[{name}] ")
    rows.append(("model", DEFAULT_MODEL, "model name: " + ", ".join(sorted(MODELS))))
    for name, model in sorted(MODELS.items()):
        rows += _rows("model.", model, f"[{name}] ")
    rows += _rows("train.", TrainConfig, "")
    rows += [(k, str(f.default), f.description or "") for k, f in RunConfig.model_fields.items()
             if k not in ("task", "model", "train")]
    return rows


def _rows(prefix: str, model: type[BaseModel], tag: str) -> list[tuple[str, str, str]]:
    return [(prefix + k, str(f.default), tag + (f.description or "")) for k, f in model.model_fields.items()
            if k != "name"]
