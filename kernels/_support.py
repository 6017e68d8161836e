"""Helpers the kernel modules share (kernels.fused, kernels.minrnn): loading their Triton module lazily, registering
launchers as custom operators, and warning once per reason. Imports neither triton nor any kernel module."""

from __future__ import annotations

import importlib
import warnings

import torch


def triton_loader(module: str):
    """A `load_triton()` for kernels.<module>: (the module, None), or (None, why) when triton cannot be imported.
    Memoized by hand: torch.compile warns about tracing a functools.cache function."""
    loaded = []

    def load_triton():
        if not loaded:
            try:
                loaded.append((importlib.import_module(f"{__package__}.{module}"), None))
            except ImportError as e:
                loaded.append((None, f"triton is not importable ({type(e).__name__}: {e})"))
        return loaded[0]

    load_triton.__doc__ = f"(kernels.{module}, None), or (None, why) when triton cannot be imported."
    return load_triton


def custom_operator(name, fake):
    """Register the decorated launcher as the custom operator seqbench::<name> (torch >= 2.4), so torch.compile sees
    one opaque op with known output shapes (`fake` gives them) instead of tracing into Triton's launcher; a plain
    function on an older torch."""
    def register(fn):
        if not hasattr(torch.library, "custom_op"):
            return fn
        op = torch.library.custom_op(f"seqbench::{name}", mutates_args=())(fn)
        op.register_fake(fake)
        return op
    return register


_warned = set()


def warn_once(message, stacklevel=4):
    """A RuntimeWarning the first time `message` comes up in this process, nothing after."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def unsupported_transform(functions: str) -> str | None:
    """Why custom autograd.Functions cannot run here, or None: inside a torch.func transform (grad, vmap, jvp, ...)
    or a forward-mode AD level, for which they have no vmap or jvp rule. `functions` names them in the message
    ("the kernels' autograd.Functions have"). Not checked while torch.compile traces."""
    if torch.compiler.is_compiling():
        return None
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    if peek is not None and peek() is not None:
        return f"inside a torch.func transform ({functions} no vmap or jvp rule)"
    if getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0:
        return f"forward-mode AD ({functions} no jvp rule)"
    return None
