"""The CI rule for skips (tests/ci_skips.py), on a small suite of its own run in-process."""

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_needs_triton():
    pytest.skip("triton is not importable")

@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_needs_a_gpu():
    pass

def test_runs():
    assert True
"""


@pytest.mark.parametrize("ci, outcomes", [("true", {"passed": 1, "failed": 1, "skipped": 1}),
                                          (None, {"passed": 1, "skipped": 2})])
def test_on_ci_a_skip_for_a_missing_dependency_fails_and_a_gpu_skip_stays(pytester, monkeypatch, ci, outcomes):
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "tests.ci_skips", "-p", "no:cacheprovider")
    result.assert_outcomes(**outcomes)
    if ci:
        result.stdout.fnmatch_lines(["*skipped on CI (triton is not importable)*"])
