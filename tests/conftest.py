"""Settings every test process shares, made before torch, triton or ray is first imported, and fixtures built once.

The suite runs in parallel (pytest-xdist, one process per core: `make test`), so each process computes with one thread,
and OpenMP threads (a sweep a test starts with one worker computes with two) wait passively instead of spinning while
the other test process wants the core: measured on the project's 2-core machine, the suite took 278 s of pytest time
with OMP_WAIT_POLICY=PASSIVE and 327 s without. (seqbench itself does not set it: on an idle machine a one-worker sweep
computing with two threads took 94 s with PASSIVE and 31 s without.)
Ray started by a test keeps its files in this process's own temporary folder, so that it never finds (and joins) the
Ray of another test process or of another user on the machine."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ray: this process's own temporary folder (short: Ray's socket paths must fit in 107 bytes). A folder the user chose
# is kept; one this file made in the process that started this one (xdist's controller) is not.
_OWN_RAY_TMPDIR = None
if "RAY_TMPDIR" not in os.environ or os.environ.get("SEQBENCH_TESTS_RAY_TMPDIR") == os.environ["RAY_TMPDIR"]:
    _OWN_RAY_TMPDIR = tempfile.mkdtemp(prefix="sbray-")
    os.environ["RAY_TMPDIR"] = os.environ["SEQBENCH_TESTS_RAY_TMPDIR"] = _OWN_RAY_TMPDIR
# No Ray out-of-memory killer: on a loaded machine it killed test workers, which the tests then saw as failed attempts.
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
# Ray tests bind every Ray process to 127.0.0.1 (Ray's single-machine mode; read when ray is first imported, and by the
# Ray processes the tests start); the Ray tests check it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported before this file
# Kernel tests run Triton through its interpreter on CPU; it must be set before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_unconfigure(config):
    if _OWN_RAY_TMPDIR:
        shutil.rmtree(_OWN_RAY_TMPDIR, ignore_errors=True)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder made by `build(folder)` once for the whole test session, shared by every xdist worker (the first to
    ask builds it under a file lock; the others wait and read it). For fixtures that only read what they build."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


from tests.ci_skips import pytest_runtest_makereport  # noqa: E402,F401  (on CI, a skip for a missing dependency fails)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (make test: --dist loadgroup)
def pytest_collection_modifyitems(config, items):
    """How the parallel suite is shared out. A test that uses a module-scoped fixture (a Ray instance, a SLURM
    stand-in, a sweep it reads) runs in the same process as the rest of its file, so that the fixture is built once.
    These groups, the longest pieces of work, are handed out first; every other test then goes wherever a process is
    free, which evens out the end (one run each here: 270 s with the groups first, 290 s without)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info and any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable: a file's order stays
