"""The bring-your-own-model example (examples/byo_model) through the commands a user types: by import path from its
folder, and by entry point once pip-installed; run, sweep, report, reproduce; bad plugins refused with exit 2."""

import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "byo_model"
SOURCE = EXAMPLE / "byo_models" / "leaky.py"
SMALL = ["task=copy", "task.length=5", "task.copy_len=2", "train.steps=20", "train.eval_every=10",
         "train.eval_size=32", "train.batch_size=8", "train.grad_profile_batch=4", "device=cpu"]


@pytest.fixture
def seqbench(monkeypatch, capsys):
    """seqbench(*args, cwd=, path=, check=) -> its exit code, stdout and stderr: the command a user types in folder
    `cwd` with `path` on PYTHONPATH, run in this process (`main`) rather than a new one that imports torch again. The
    plugin modules it imported are forgotten afterwards, so that the next test imports its own copy of them."""
    from seqbench.harness.cli import main
    from seqbench.harness.models import plugins

    before, folders = set(sys.modules), set()

    def run(*args, cwd=EXAMPLE, path=None, check=True):
        folders.update(str(Path(f).resolve()) for f in (cwd, path) if f)
        monkeypatch.chdir(cwd)
        if path:
            monkeypatch.syspath_prepend(str(path))
        plugins._load.cache_clear()
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        r = types.SimpleNamespace(returncode=code, stdout=out, stderr=err)
        if check:
            assert code == 0, err[-3000:]
        return r

    yield run
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if any(str(Path(file).resolve()).startswith(folder) for folder in folders):
            del sys.modules[name]
    plugins._load.cache_clear()
    importlib.invalidate_caches()


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example pip-installed into a folder of its own (what `pip install examples/byo_model` does to a venv)."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / "byo_model"
    shutil.copytree(EXAMPLE, source)  # a copy: the build leaves build/ and *.egg-info beside the sources
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return target


def test_import_path_runs_and_the_record_names_the_code(tmp_path, seqbench):
    seqbench("run", "model=byo_models.leaky:LeakyRNN", "model.hidden=12", *SMALL, "--out", tmp_path, "--quiet")
    (run_dir,) = tmp_path.iterdir()
    s = summary_of(run_dir)
    assert s["status"] == "completed" and s["config"]["model"]["hidden"] == 12
    plugin = s["provenance"]["model_plugin"]
    assert plugin["name"] == plugin["class"] == "byo_models.leaky:LeakyRNN" and plugin["entry_point"] is None
    assert plugin["sha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert Path(plugin["file"]).resolve() == SOURCE.resolve() and plugin["distribution"] is None
    # its step_hook gives the profile the state: dL/dh_t besides dL/dx_t (the embedding's output)
    rows = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert {(r["quantity"], r["layer"]) for r in rows} == {("x", 0), ("h", 0)} and s["grad_profile_note"] is None
    # its own parameter groups
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    groups = {k for row in metrics for k in row if k.startswith("grad_norm.")}
    assert groups == {"grad_norm.embedding", "grad_norm.input", "grad_norm.recurrent", "grad_norm.head"}


def test_entry_point_list_run_budget_sweep_report_reproduce(installed, tmp_path, seqbench):
    # its keys (in a process that has imported torch already; a fresh `seqbench list` does not import it for them:
    # tests/harness/test_plugins.py)
    listing = seqbench("list", cwd=tmp_path, path=installed).stdout
    assert "leaky (byo_models.leaky:LeakyRNN)" in listing and "[leaky] initial leak" in listing, listing
    dry = seqbench("run", "model=leaky", "--dry-run", cwd=tmp_path, path=installed).stdout  # where its keys are
    assert "model.leak=0.5" in dry and "model.hidden=32" in dry
    # a budget chooses its width like a built-in model's
    seqbench("run", "model=leaky", "model.params=3000", *SMALL, "--out", tmp_path / "one", "--quiet", cwd=tmp_path,
             path=installed)
    (run_dir,) = (tmp_path / "one").iterdir()
    s = summary_of(run_dir)
    assert abs(s["params"] / 3000 - 1) < 0.05 and s["config"]["model"]["params"] == 3000
    plugin = s["provenance"]["model_plugin"]
    assert plugin["name"] == "byo_models.leaky:LeakyRNN"
    assert plugin["entry_point"] == "leaky = byo_models.leaky:LeakyRNN"
    assert (plugin["distribution"], plugin["version"]) == ("seqbench-example-models", "0.1.0")
    # a sweep over the plugin and a built-in, its report, and a reproduced plugin run
    sweep = tmp_path / "byo.yaml"
    sweep.write_text(textwrap.dedent("""
        name: byo
        base: {task: copy, task.length: 5, task.copy_len: 2, train.steps: 20, train.eval_every: 10,
               train.eval_size: 32, train.batch_size: 8, train.grad_profile_batch: 4, device: cpu}
        grid:
          model: [leaky, gru]
          model.params: [2000, 4000]
        seeds: 2
    """))
    seqbench("sweep", sweep, "--out", tmp_path, "--workers", "2", cwd=tmp_path, path=installed)
    runs = [summary_of(d) for d in (tmp_path / "byo").iterdir() if (d / "summary.json").exists()]
    assert len(runs) == 8 and all(r["status"] == "completed" for r in runs)
    seqbench("report", tmp_path / "byo", cwd=tmp_path, path=installed)
    page = (tmp_path / "byo" / "report" / "index.md").read_text()
    assert "leaky" in page and "gru" in page
    leaky = next(d for d in (tmp_path / "byo").iterdir()
                 if (d / "summary.json").exists() and summary_of(d)["provenance"].get("model_plugin"))
    out = seqbench("reproduce", leaky, cwd=tmp_path, path=installed).stdout
    assert "verdict: identical" in out


def test_the_plugins_config_is_part_of_the_run_id(installed, tmp_path, seqbench):
    ids = set()
    for leak in ("0.5", "0.6"):
        out = seqbench("run", "model=leaky", f"model.leak={leak}", *SMALL, "--out", tmp_path, "--quiet",
                       cwd=tmp_path, path=installed).stdout
        ids |= {p.name for p in tmp_path.iterdir()}
    assert len(ids) == 2, out


BROKEN = {
    "raises.py": "raise RuntimeError('the plugin is broken')\n",
    "notconfig.py": "class Model:\n    pass\n",
    "nobuild.py": "from seqbench import ModelConfig\n\nclass Model(ModelConfig):\n    width: int = 3\n",
    "badknob.py": textwrap.dedent("""
        from typing import ClassVar
        from seqbench import ModelConfig

        class Model(ModelConfig):
            width_key: ClassVar[str] = "size"

            def build(self, task):
                raise AssertionError
    """),
}


@pytest.mark.parametrize("name, model, message", [
    ("raises", "raises:Model", "model=raises:Model: importing its module raised RuntimeError: the plugin is broken"),
    ("missing", "no_such_module:Model", "model=no_such_module:Model: cannot import 'no_such_module'"),
    ("attr", "notconfig:Other", "model=notconfig:Other: module 'notconfig' has no attribute 'Other'"),
    ("notconfig", "notconfig:Model", "model=notconfig:Model: is class Model, not a model config"),
    ("nobuild", "nobuild:Model", "model=nobuild:Model: Model defines no build(self, task)"),
    ("badknob", "badknob:Model", "model=badknob:Model: Model.width_key='size' is not an integer field"),
    ("unknown", "nosuchmodel", "model=nosuchmodel: unknown model; known: gru, lru, lstm"),
])
def test_bad_plugins_exit_2_with_one_line_and_write_nothing(tmp_path, name, model, message, seqbench):
    for file, text in BROKEN.items():
        (tmp_path / file).write_text(text)
    r = seqbench("run", f"model={model}", "--out", tmp_path / "out", cwd=tmp_path, check=False)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith(f"seqbench: error: {message}") and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_broken_entry_point_is_refused_by_name(tmp_path, seqbench):
    """An installed distribution whose entry point raises when loaded: refused with its name; the others still list."""
    site = tmp_path / "site"
    dist = site / "broken_models-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[seqbench.models]\nbroken = broken_models:Model\n")
    (site / "broken_models.py").write_text("raise ImportError('needs a library that is not installed')\n")
    r = seqbench("run", "model=broken", "--out", tmp_path / "out", cwd=tmp_path, path=site, check=False)
    assert r.returncode == 2 and not (tmp_path / "out").exists()
    assert r.stderr.strip() == ("seqbench: error: model=broken: importing entry point 'broken_models:Model' raised "
                                "ImportError: needs a library that is not installed")
    listing = seqbench("list", cwd=tmp_path, path=site).stdout
    assert "[broken] cannot be loaded" in listing and "model.hidden" in listing


def test_a_module_without_step_hook_records_dx_only_and_says_so(tmp_path, seqbench):
    (tmp_path / "conv.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from seqbench import ModelConfig

        class CausalConv(ModelConfig):
            width: int = 8

            def build(self, task):
                return Module(task, self.width)

        class Module(nn.Module):
            def __init__(self, task, width):
                super().__init__()
                self.inp = nn.Linear(task.input_size, width)
                self.conv = nn.Conv1d(width, width, 3, padding=2)
                self.head = nn.Linear(width, task.output_size)

            def forward(self, x):
                e = self.inp(x).transpose(1, 2)
                return self.head(torch.relu(self.conv(e)[..., :x.shape[1]]).transpose(1, 2))
    """))
    r = seqbench("run", "model=conv:CausalConv", "task=adding", "task.length=8", "train.steps=4", "device=cpu",
                 "--out", tmp_path / "out", "--quiet", cwd=tmp_path)
    (run_dir,) = (tmp_path / "out").iterdir()
    s = summary_of(run_dir)
    assert s["status"] == "completed", r.stdout
    assert "records dL/dx_t only" in s["grad_profile_note"]
    rows = [json.loads(line) for line in (run_dir / "grad_profile.jsonl").read_text().splitlines()]
    assert {r["quantity"] for r in rows} == {"x"} and all(len(r["norm"]) == 8 for r in rows)  # adding: L = T
    r = seqbench("run", "model=conv:CausalConv", "model.params=500", "--out", tmp_path / "x", cwd=tmp_path,
                 check=False)
    assert r.returncode == 2 and "names no width knob" in r.stderr
