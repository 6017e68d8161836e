"""The distribution: one `seqbench` namespace in the wheel, and a record made from an installed wheel traces to its code.

The wheel is built once per session with `python -m build --wheel --no-isolation` (setuptools and build come with the
test extra), so no network is needed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from seqbench.harness.provenance import git_state

ROOT = Path(__file__).resolve().parents[1]


def out_of_tree(folder: Path) -> dict:
    """An environment in which setuptools builds under `folder`, not in the checkout (its build/ and *.egg-info): two
    test processes may build at once, and the checkout stays as it was (setuptools reads DIST_EXTRA_CONFIG)."""
    config = folder / "out-of-tree.cfg"
    config.write_text(f"[build]\nbuild_base = {folder / 'build'}\n[egg_info]\negg_base = {folder}\n")
    return {**os.environ, "DIST_EXTRA_CONFIG": str(config)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    before = _build_leftovers()
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600, env=out_of_tree(tmp_path_factory.mktemp("b")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("seqbench-*.whl")
    assert _build_leftovers() == before  # built outside the checkout
    return path


def _build_leftovers() -> dict:
    """What a build in the checkout would create or touch there: build/ and the *.egg-info folders, with their times."""
    return {p.name: p.stat().st_mtime_ns for p in [ROOT / "build", *ROOT.glob("*.egg-info")] if p.exists()}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked into a fresh folder with pip (no dependencies: this venv's torch etc. serve)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def _outside_checkout(target: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `code` with the installed copy first on the path, from a folder that is not the checkout."""
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_only_the_seqbench_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"seqbench"}, sorted(tops)
    for needed in ("seqbench/__init__.py", "seqbench/harness/cli.py", "seqbench/kernels/fused.py",
                   "seqbench/tasks/copy.py", "seqbench/harness/sweeps/quick.yaml", "seqbench/_build.py"):
        assert needed in names, needed
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "seqbench = seqbench.harness.cli:entry" in entry


def test_wheel_ships_every_sweep_preset(wheel):
    presets = {f"seqbench/harness/sweeps/{p.name}" for p in (ROOT / "harness" / "sweeps").glob("*.yaml")}
    assert len(presets) >= 3 and presets <= set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.slow
def test_the_editable_build_warns_about_nothing(tmp_path):
    """What `pip install -e .` has the build backend do, and shows of its warnings: setuptools' notice that an editable
    install goes through an import hook is all (the package configuration itself draws none, e.g. no package that
    Python sees but `packages` lacks)."""
    code = f"from setuptools import build_meta; build_meta.build_editable({str(tmp_path / 'out')!r})"
    (tmp_path / "out").mkdir()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=out_of_tree(tmp_path))
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert list((tmp_path / "out").glob("seqbench-*.whl")), log[-3000:]
    warned = set(re.findall(r"\.py:\d+: (\w+): ", log))  # "…/build_py.py:215: _Warning: Package … is absent …"
    assert warned <= {"InformationOnly"}, log[-3000:]


def test_wheel_bakes_in_the_commit_it_was_built_from(wheel):
    text = zipfile.ZipFile(wheel).read("seqbench/_build.py").decode()
    state = git_state()
    assert state["commit_source"] == "git"
    assert f"commit = {state['commit']!r}" in text
    assert f"dirty = {state['dirty']!r}" in text


def test_a_run_from_the_installed_wheel_records_its_commit_and_version(installed, tmp_path):
    code = (
        "import json, sys, seqbench\n"
        "assert seqbench.__file__.startswith(%r), seqbench.__file__\n"
        "from seqbench.harness.cli import main\n"
        "sys.exit(main(['run', 'task=adding', 'task.length=6', 'model=rnn', 'model.hidden=4', 'train.steps=2',\n"
        "               'train.batch_size=2', 'train.eval_every=2', 'train.eval_size=4', 'train.grad_profile_batch=2',\n"
        "               'device=cpu', '--quiet', '--out', %r]))\n"
    ) % (str(installed), str(tmp_path / "runs"))
    done = _outside_checkout(installed, code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = (tmp_path / "runs").glob("*/summary.json")
    prov = json.loads(summary.read_text())["provenance"]
    state = git_state()
    assert (prov["commit"], prov["dirty"], prov["commit_source"]) == (state["commit"], state["dirty"], "build")
    from seqbench import __version__
    assert prov["seqbench"] == __version__


def test_the_installed_wheel_adds_no_other_top_level_package(installed, tmp_path):
    assert sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == ["seqbench"]
    code = ("import importlib.util as u, seqbench.kernels, seqbench.tasks\n"
            "print([n for n in ('harness', 'kernels', 'tasks') if u.find_spec(n) is not None])\n")
    done = _outside_checkout(installed, code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
