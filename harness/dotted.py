"""Nested configs and records as dotted keys (`{"train": {"lr": 1e-3}}` <-> `train.lr`), the form a user types and
the trackers and tables show. Imports nothing, so that config.py and trackers.py can both use it."""


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as {dotted key: value}: the form a user types (`task.name` is the task)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
