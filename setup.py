"""Build hook only (the metadata is in pyproject.toml): bake the source commit into the package.

A run records the git commit of the code that made it. Installed from a wheel or an sdist there is no checkout to
ask, so the build writes `seqbench/_build.py` holding the commit and dirty flag of the tree it was built from; an sdist
carries that file to the wheel built from it.
"""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_INFO = os.path.join("seqbench", "_build.py")


def _git(*args):
    return subprocess.run(["git", "-C", HERE, *args], capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def _build_info():
    """The file's text, or None outside a git checkout of this project (e.g. building from an unpacked sdist)."""
    try:
        if os.path.realpath(_git("rev-parse", "--show-toplevel")) != os.path.realpath(HERE):
            return None
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--", ".", ":!results"))
    except (OSError, subprocess.SubprocessError):
        return None
    return (f'"""Written at build time by setup.py: the source tree this package was built from."""\n\n'
            f"commit = {commit!r}\ndirty = {dirty!r}\n")


class BuildPy(build_py):
    def run(self):
        super().run()
        text = _build_info()
        if text is not None:
            target = os.path.join(self.build_lib, BUILD_INFO)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(text)


class Sdist(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        text = _build_info()
        if text is not None:
            target = os.path.join(base_dir, BUILD_INFO)
            if os.path.exists(target):
                os.unlink(target)  # may be a hard link to the source tree's copy
            with open(target, "w") as f:
                f.write(text)


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
