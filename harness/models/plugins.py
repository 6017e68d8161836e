"""Models from outside the package: `model=pkg.module:Class` (an import path) or an entry point in the group
`seqbench.models` (`model=<entry point name>`, from any installed distribution).

Either way the name leads to a config class: a pydantic model subclassing `ModelConfigBase` (seqbench.ModelConfig),
whose fields are the model's keys (`model.<key>=...`) and whose `build(task)` returns an nn.Module mapping a batch
(B, L) of token ids or (B, L, F) of features to outputs (B, L, task.output_size). `wrap` adapts such a module to what
the trainer expects of a built-in one; `describe` says, for the record, exactly which code the name resolved to.
The protocol is documented in the README ("Bring your own model") and shown in examples/byo_model.

A plugin is one model however it is reached: `canonical_name` is the import path of its config class where the class is
defined, which an entry point and an import path to the same class share. It is recorded and reported under the backend
`plugin` (its own code), unless its config has a `backend` key of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from pathlib import Path

from ..errors import ConfigError
from . import MODELS
from .configs import ModelConfigBase

GROUP = "seqbench.models"
PLUGIN_BACKEND = "plugin"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name: str) -> bool:
    return bool(_IMPORT_PATH.match(name))


@contextlib.contextmanager
def _cwd_importable():
    """The current directory on sys.path while importing (the `seqbench` script, unlike `python -m`, leaves it off)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed `seqbench.models` entry points by name (a name claimed twice: the first distribution found)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def model_class(name) -> type[ModelConfigBase]:
    """The config class `model=<name>` refers to: a built-in, an import path or an entry point; ConfigError (one line,
    naming the value and what is wrong) otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"model={name!r}: expected a model name; known: {', '.join(known_names())}")
    if name in MODELS:
        return MODELS[name]
    if is_import_path(name):
        return _load(name, "import path")
    eps = entry_points()
    if name in eps:
        return _load(name, "entry point")
    raise ConfigError(f"model={name}: unknown model; known: {', '.join(known_names())}, or an import path "
                      f"package.module:ConfigClass")


_BUILTINS_ONLY = contextvars.ContextVar("builtins_only", default=False)


def known_names() -> list[str]:
    """The built-in models and the installed entry points, by name (the built-in ones only within
    `builtin_names_only`)."""
    return sorted({*MODELS, *(() if _BUILTINS_ONLY.get() else entry_points())})


@contextlib.contextmanager
def builtin_names_only():
    """Within: `known_names()` is the built-in models only, so that listing every model's keys (config.describe_keys)
    loads no plugin; `seqbench list` lists the entry points itself (see `config_without_torch`)."""
    token = _BUILTINS_ONLY.set(True)
    try:
        yield
    finally:
        _BUILTINS_ONLY.reset(token)


@functools.cache
def _load(name: str, kind: str) -> type[ModelConfigBase]:
    where = f"model={name}"
    try:
        obj = _import(name, kind)
    except Exception as e:
        raise ConfigError(f"{where}: {_why_not(e, name, kind)}") from None
    check_protocol(obj, where)
    return obj


def _import(name: str, kind: str):
    """The object an import path or an entry point names (whatever importing it raises, raised)."""
    if kind == "entry point":
        return entry_points()[name].load()
    module_name, _, attr = name.partition(":")
    with _cwd_importable():
        obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _why_not(e: Exception, name: str, kind: str) -> str:
    if isinstance(e, ModuleNotFoundError):
        return (f"cannot import {e.name!r} (the module must be importable from the current directory or the "
                f"environment)")
    if isinstance(e, AttributeError):
        return str(e)
    origin = f"entry point {entry_points()[name].value!r}" if kind == "entry point" else "its module"
    return f"importing {origin} raised {type(e).__name__}: {_first_line(e)}"  # the plugin's own code raised


def config_without_torch(name: str) -> type[ModelConfigBase] | None:
    """Entry point `name`'s config class, or None if loading it would import torch: `seqbench list` then does not wait
    seconds for torch. A plugin allows it by keeping its config class in a module that imports no torch (as seqbench's
    own models/configs.py). Where torch is imported already, the class loads as usual. ConfigError (as `model_class`)
    for an entry point that cannot be loaded for another reason."""
    if sys.modules.get("torch") is not None:
        return model_class(name)
    sys.modules["torch"] = None  # the import system's switch: importing torch now raises ModuleNotFoundError
    try:
        obj = _import(name, "entry point")
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "torch":
            return None
        raise ConfigError(f"model={name}: {_why_not(e, name, 'entry point')}") from None
    except Exception as e:
        raise ConfigError(f"model={name}: {_why_not(e, name, 'entry point')}") from None
    finally:
        del sys.modules["torch"]
    check_protocol(obj, f"model={name}")
    return obj


def canonical_name(name: str) -> str:
    """The name a model goes by in configs, run_ids, records and reports, however it was reached: a built-in model's
    own; for a model from outside seqbench, the import path `module:Class` where its config class is defined, so that
    an entry point and an import path to one class (or to a package that re-exports it) name one model. A class that
    cannot be imported by such a path (defined in `__main__` or inside a function) keeps the name given."""
    if name in MODELS:
        return name
    cls = model_class(name)
    path = f"{cls.__module__}:{cls.__qualname__}"
    return path if cls.__module__ != "__main__" and is_import_path(path) else name


def backend_of(model: ModelConfigBase) -> str:
    """The backend a model config runs on, as records and reports name it: its `backend` key where it has one; else
    `torch` for a built-in model (the Transformer), and `plugin` for a model from outside seqbench (its own code)."""
    own = getattr(model, "backend", None)
    if isinstance(own, str):
        return own
    return "torch" if model.name in MODELS else PLUGIN_BACKEND


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def check_protocol(obj, where: str) -> None:
    """A plugin's config class: a subclass of ModelConfigBase with a build(task) of its own, a `name` field that takes
    the name it is found under, and a width knob (if it names one) that is an integer field."""
    if not (inspect.isclass(obj) and issubclass(obj, ModelConfigBase)):
        what = f"class {obj.__name__}" if inspect.isclass(obj) else f"a {type(obj).__name__}"
        raise ConfigError(f"{where}: is {what}, not a model config: subclass seqbench.ModelConfig (a pydantic model) "
                          f"and define build(self, task) -> nn.Module")
    if obj.build is ModelConfigBase.build:
        raise ConfigError(f"{where}: {obj.__name__} defines no build(self, task) -> nn.Module")
    annotation = obj.model_fields["name"].annotation
    if annotation is not str:
        raise ConfigError(f"{where}: {obj.__name__} fixes its `name` field ({annotation}); leave `name` to seqbench "
                          f"(a plugin is named by its import path or entry point)")
    key = obj.width_key
    if key is not None and (key not in obj.model_fields or obj.model_fields[key].annotation is not int):
        raise ConfigError(f"{where}: {obj.__name__}.width_key={key!r} is not an integer field of {obj.__name__}")


def describe(name: str) -> dict | None:
    """For the record: which code `model=<name>` resolved to, or None for a built-in model; the same however the
    model was reached. Its canonical name, the installed entry point naming its class (`NAME = module:Class`, or
    None), the class, the file it is defined in with the sha256 of that file's bytes, and the installed distribution
    the file belongs to (name and version), where there is one."""
    if name in MODELS:
        return None
    cls = model_class(name)
    canonical = canonical_name(name)
    found = _entry_point_of(canonical, name)
    path = inspect.getsourcefile(cls)
    dist = _distribution_of(cls.__module__, path, found)
    return {"name": canonical, "entry_point": f"{found} = {entry_points()[found].value}" if found else None,
            "class": f"{cls.__module__}:{cls.__qualname__}", "file": path,
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None,
            "distribution": dist.metadata["Name"] if dist else None, "version": dist.version if dist else None}


def _entry_point_of(canonical: str, given: str) -> str | None:
    """The installed entry point reached by `given`, or else one whose target is the class's import path (read from
    the metadata: no plugin is loaded)."""
    eps = entry_points()
    if given in eps:
        return given
    return next((n for n, ep in sorted(eps.items()) if f"{ep.module}:{ep.attr}" == canonical), None)


def _distribution_of(module: str, file: str | None, entry_point: str | None):
    """The installed distribution that provides the entry point, or whose recorded files hold `file`; None for code
    that is only importable (a folder on the path, an editable install)."""
    if entry_point is not None:
        dist = getattr(entry_points()[entry_point], "dist", None)
        if dist is not None:
            return dist
    if file is None:
        return None
    top, target = module.split(".")[0], Path(file).resolve()
    for dist_name in importlib.metadata.packages_distributions().get(top, []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            dist = importlib.metadata.distribution(dist_name)
            if any(Path(dist.locate_file(f)).resolve() == target for f in dist.files or []):
                return dist
    return None


def build_model(cfg: ModelConfigBase, task):
    """`cfg.build(task)`, a plugin's plain nn.Module adapted to the trainer's SequenceModel (see wrapped.py)."""
    from torch import nn

    from .base import SequenceModel

    module = cfg.build(task)
    if isinstance(module, SequenceModel):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"model {cfg.name}: build(task) returned {type(module).__name__}, not an nn.Module")
    from .wrapped import PluginModel

    return PluginModel(module, cfg.name, task.output_size)
