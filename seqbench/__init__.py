"""seqbench: a benchmarking and research harness for sequence architectures.

Everything lives under this one namespace: ``seqbench.harness`` (config, runs, sweeps, reports), ``seqbench.kernels``
(the reference and fused recurrent layers; torch and triton only) and ``seqbench.tasks`` (the synthetic tasks). The
loaders researchers use most are importable from here directly (``from seqbench import load_runs``); they are loaded
on first use, so ``import seqbench`` stays cheap.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# In a source checkout the three packages sit beside this folder (harness/, kernels/, tasks/) rather than inside it;
# a wheel puts them inside. Extending the search path lets `seqbench.kernels` import from a checkout with nothing
# installed (another Triton's venv for compile reports, a GPU machine without the harness's dependencies).
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "kernels", "fused.py")) and _os.path.isfile(
        _os.path.join(_root, "harness", "cli.py")) and _root not in __path__:
    __path__.append(_root)

_LAZY = {"load_runs": "loaders", "load_metrics": "loaders", "load_grad_profiles": "loaders", "load_lengths": "loaders",
         "resolve": "config", "RunConfig": "config", "ConfigError": "config",
         "ModelConfig": "models.configs", "SequenceModel": "models.base"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"seqbench.harness.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'seqbench' has no attribute {name!r}")
