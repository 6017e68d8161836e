"""assert_close passes within rtol and fails, naming the tensor, on excess error, shape mismatch, NaN/Inf or None."""

import math

import pytest
import torch

from seqbench.kernels.testing import assert_close, rel_err

REF = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)


def test_rel_err_values():
    assert rel_err(REF, REF) == 0.0
    assert math.isclose(rel_err(REF, REF + torch.tensor([[0.0, 0.5], [0.0, 0.0]])), 0.1)  # 0.5 / 5
    assert rel_err(torch.zeros(3), torch.zeros(3)) == 0.0
    assert math.isclose(rel_err(torch.zeros(2), torch.tensor([3.0, 4.0])), 5.0)  # zero ref: absolute error
    assert math.isclose(rel_err(REF, REF.float() * 1.5), 0.5)  # mixed dtypes compare in float64


def test_passes_within_rtol():
    assert_close("out", REF, REF, 0.0)
    assert_close("out", REF, REF * (1 + 1e-12), 1e-10)
    assert_close("zeros", torch.zeros(4), torch.zeros(4), 1e-10)


def test_fails_above_rtol_with_name_and_size():
    with pytest.raises(AssertionError, match=r"^dW_hh_l0: relative error 1\.0e-01 > rtol 1e-10$"):
        assert_close("dW_hh_l0", REF, REF * 1.1, 1e-10)


@pytest.mark.parametrize("ref,out,match", [
    (REF, REF.T.reshape(4), r"dx: shape \(4,\) != reference shape \(2, 2\)"),
    (REF, REF.clone().fill_(float("nan")), "dx: output has 4 NaN/Inf"),
    (REF, REF.clone().index_fill_(0, torch.tensor([1]), float("inf")), "dx: output has 2 NaN/Inf"),
    (torch.full((2,), float("nan")), torch.zeros(2), "dx: reference has 2 NaN/Inf"),
    (REF, None, "dx: output is None"),
], ids=["shape", "nan", "inf", "nan-ref", "none"])
def test_fails_on_bad_output(ref, out, match):
    with pytest.raises(AssertionError, match=match):
        assert_close("dx", ref, out, 1.0)
