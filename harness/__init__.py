"""seqbench's harness: config -> run -> record -> report."""

from .config import ConfigError, RunConfig, resolve
from .loaders import load_grad_profiles, load_metrics, load_runs

__all__ = ["ConfigError", "RunConfig", "resolve", "load_runs", "load_metrics", "load_grad_profiles"]
