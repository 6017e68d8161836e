"""seqbench's harness: config -> run -> record -> report.

The names below load on first use, so that importing the command line (`seqbench --help`, `seqbench list`) does not
import pandas or torch.
"""

_LAZY = {"ConfigError": "errors", "RunConfig": "config", "resolve": "config", "load_runs": "loaders",
         "load_metrics": "loaders", "load_grad_profiles": "loaders", "load_lengths": "loaders"}

__all__ = ["ConfigError", "RunConfig", "resolve", "load_runs", "load_metrics", "load_grad_profiles", "load_lengths"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
