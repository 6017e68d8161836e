"""Models from outside the package: `model=pkg.module:Class` (an import path) or an entry point in the group
`seqbench.models` (`model=<entry point name>`, from any installed distribution).

Either way the name leads to a config class: a pydantic model subclassing `ModelConfigBase` (seqbench.ModelConfig),
whose fields are the model's keys (`model.<key>=...`) and whose `build(task)` returns an nn.Module mapping a batch
(B, L) of token ids or (B, L, F) of features to outputs (B, L, task.output_size). `wrap` adapts such a module to what
the trainer expects of a built-in one; `describe` says, for the record, exactly which code the name resolved to.
The protocol is documented in the README ("Bring your own model") and shown in examples/byo_model.
"""

from __future__ import annotations

import contextlib
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


def known_names() -> list[str]:
    """The built-in models and the installed entry points, by name."""
    return sorted({*MODELS, *entry_points()})


@functools.cache
def _load(name: str, kind: str) -> type[ModelConfigBase]:
    where = f"model={name}"
    try:
        if kind == "import path":
            module_name, _, attr = name.partition(":")
            with _cwd_importable():
                obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        else:
            obj = entry_points()[name].load()
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where}: cannot import {e.name!r} (the module must be importable from the current "
                          f"directory or the environment)") from None
    except AttributeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except Exception as e:  # the plugin's own code raised while importing
        origin = f"entry point {entry_points()[name].value!r}" if kind == "entry point" else "its module"
        raise ConfigError(f"{where}: importing {origin} raised {type(e).__name__}: {_first_line(e)}") from None
    check_protocol(obj, where)
    return obj


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
    """For the record: how `model=<name>` resolved to code, or None for a built-in model. The import path or entry
    point, the class, the file it is defined in with the sha256 of that file's bytes, and the installed distribution
    the file belongs to (name and version), where there is one."""
    if name in MODELS:
        return None
    cls = model_class(name)
    info = {"source": "import path" if is_import_path(name) else "entry point", "name": name,
            "class": f"{cls.__module__}:{cls.__qualname__}"}
    if info["source"] == "entry point":
        info["entry_point"] = entry_points()[name].value
    path = inspect.getsourcefile(cls)
    info["file"] = path
    info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    dist = _distribution_of(cls.__module__, path, name if info["source"] == "entry point" else None)
    info["distribution"], info["version"] = (dist.metadata["Name"], dist.version) if dist else (None, None)
    return info


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
