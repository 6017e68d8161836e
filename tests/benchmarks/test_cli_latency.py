"""`seqbench --help` and `seqbench list` as a user runs them: a fresh process each time (goal: under 0.3 s on the
project's 2-core CPU). They answer fast because nothing they need imports torch, pandas or the report's libraries;
the last test checks that, so a stray top-level import fails `make test` rather than only slowing `make bench`.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: the installed console script, as a user types it (beside this interpreter in a venv), else the module
SCRIPT = [str(Path(sys.executable).with_name("seqbench"))] if Path(sys.executable).with_name("seqbench").exists() \
    else ([shutil.which("seqbench")] if shutil.which("seqbench") else [sys.executable, "-m", "seqbench.harness.cli"])
HEAVY = ("torch", "triton", "pandas", "numpy", "scipy", "matplotlib", "seaborn", "pyarrow")


def seqbench(*args: str) -> str:
    return subprocess.run([*SCRIPT, *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("args, needle", [(["--help"], "usage: seqbench"), (["list"], "train.memory_check")],
                         ids=["help", "list"])
def test_cli_latency(benchmark, args, needle):
    out = benchmark.pedantic(seqbench, args=tuple(args), rounds=5, warmup_rounds=1)
    assert needle in out


def test_help_and_list_import_nothing_heavy():
    code = ("import contextlib, io, json, sys\n"
            "from seqbench.harness.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    codes = [main(['--help']), main(['list']), main(['list', '--json']), main(['run', '--help'])]\n"
            f"print(json.dumps([codes, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    codes, heavy = json.loads(r.stdout)
    assert codes == [0, 0, 0, 0] and heavy == []
