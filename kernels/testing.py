"""Named relative-error comparisons for kernel tests, so a failure says which tensor is off and by how much."""

import torch


def rel_err(ref, out) -> float:
    """||out - ref|| / ||ref|| over all elements, in float64; the absolute ||out - ref|| when ref is all zeros.

    ref and out must have the same shape; out is moved to ref's device.
    """
    ref = ref.detach().double()
    out = out.detach().to(ref.device, torch.float64)
    err = torch.linalg.vector_norm(out - ref).item()
    scale = torch.linalg.vector_norm(ref).item()
    return err / scale if scale > 0 else err


def assert_close(name, ref, out, rtol):
    """Raise AssertionError naming `name` unless out has ref's shape, both are finite and rel_err(ref, out) <= rtol."""
    if ref is None or out is None:
        raise AssertionError(f"{name}: {'reference' if ref is None else 'output'} is None")
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    for which, t in (("reference", ref), ("output", out)):
        bad = (~torch.isfinite(t)).sum().item()
        if bad:
            raise AssertionError(f"{name}: {which} has {bad} NaN/Inf value(s)")
    err = rel_err(ref, out)
    if not err <= rtol:
        raise AssertionError(f"{name}: relative error {err:.1e} > rtol {rtol:g}")
