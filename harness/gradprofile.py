"""Gradient through time: the exact total gradient norms ||dL/dh_t|| (every recurrent layer) and ||dL/dx_t||.

Runs on a copy of the model in the profile dtype (float64 by default, so the exponential decay is measured rather than
flushed to zero by float32); recurrent models use the reference step loop, whose parameters match every backend's.
Norms are Frobenius norms over the batch and feature axes of the gradient of the batch-mean loss. Exact zeros are kept
and counted (`underflow`), never dropped.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def gradient_profile(model, task, batch, dtype: str, step: int) -> list[dict]:
    """One row per (quantity, layer): {"step", "quantity": "h"|"x", "layer", "dtype", "loss", "norm": [L floats]}."""
    x, y = batch
    diag = model.for_diagnostics(DTYPES[dtype])
    x = x if task.input_kind == "tokens" else x.to(DTYPES[dtype])
    with torch.enable_grad():
        out, probes = diag.probed_forward(x)
        loss = task.loss(out, y)
        loss.backward()
    rows = []
    for quantity, tensors in probes.items():
        for layer, p in enumerate(tensors):
            norms = p.grad.double().pow(2).sum(dim=(0, 2)).sqrt()  # (L,): over batch and features
            rows.append({"step": step, "quantity": quantity, "layer": layer, "dtype": dtype,
                         "loss": loss.item(), "norm": norms.tolist(), "underflow": int((norms == 0).sum())})
    return rows
