"""Models from outside seqbench, in-process: one identity however a plugin is reached (entry point, import path,
re-exporting package), the backend it is recorded under, and `seqbench list` naming installed plugins without
importing torch. An installed distribution is a dist-info folder on sys.path (what pip writes), made in tmp_path."""

import subprocess
import sys
import textwrap

import pytest

from seqbench.harness.models import plugins
from seqbench.harness.models.configs import LSTMConfig, TransformerConfig

CONFIG = textwrap.dedent("""
    from pydantic import Field
    from seqbench import ModelConfig

    class {cls}(ModelConfig):  # a config module that imports no torch: build() imports the module's code
        width: int = Field(4, ge=1, description="{help}")
        {extra}

        def build(self, task):
            raise NotImplementedError
""")
NEEDS_TORCH = "import torch\n" + CONFIG


def install(site, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A distribution `dist` in the folder `site`, as pip installs one: its modules and a dist-info with its entry
    points in the group seqbench.models."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[seqbench.models]\n" + "".join(f"{k} = {v}\n"
                                                                           for k, v in entry_points.items()))
    for path, text in modules.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder of installed distributions on sys.path; plugins loaded by an earlier test are forgotten."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    plugins._load.cache_clear()
    yield folder
    plugins._load.cache_clear()
    for name in [m for m in sys.modules if m.split(".")[0] in ("plugpkg", "torchplug")]:
        del sys.modules[name]


@pytest.fixture
def plugpkg(site):
    """`plugpkg.models:Wide`, re-exported by the package `plugpkg`, and the entry point `wide` naming it."""
    install(site, "plugpkg", {"wide": "plugpkg.models:Wide"},
            {"plugpkg/__init__.py": "from .models import Wide\n",
             "plugpkg/models.py": CONFIG.format(cls="Wide", help="units", extra="")})
    return site


def test_every_way_to_a_plugin_names_one_model(plugpkg):
    names = {plugins.canonical_name(given) for given in ("wide", "plugpkg.models:Wide", "plugpkg:Wide")}
    assert names == {"plugpkg.models:Wide"}  # where the class is defined
    assert [plugins.canonical_name(n) for n in ("lstm", "transformer")] == ["lstm", "transformer"]  # built-ins stay
    records = [plugins.describe(given) for given in ("wide", "plugpkg.models:Wide", "plugpkg:Wide")]
    assert records[0] == records[1] == records[2]  # the record does not depend on the way either
    assert records[0]["name"] == "plugpkg.models:Wide" and records[0]["entry_point"] == "wide = plugpkg.models:Wide"
    assert (records[0]["distribution"], records[0]["version"]) == ("plugpkg", "1.0")


def test_a_plugin_is_recorded_under_the_backend_plugin_unless_it_names_one(site):
    install(site, "plugpkg", {}, {"plugpkg/__init__.py": "",
                                  "plugpkg/models.py": CONFIG.format(cls="Wide", help="units", extra="")
                                  + CONFIG.format(cls="Fast", help="units", extra='backend: str = "cuda-graphs"')})
    wide, fast = plugins.model_class("plugpkg.models:Wide"), plugins.model_class("plugpkg.models:Fast")
    assert plugins.backend_of(wide(name="plugpkg.models:Wide")) == "plugin"
    assert plugins.backend_of(fast(name="plugpkg.models:Fast")) == "cuda-graphs"
    assert plugins.backend_of(LSTMConfig(backend="reference")) == "reference"
    assert plugins.backend_of(TransformerConfig()) == "torch"


def test_seqbench_list_names_plugins_without_importing_torch(plugpkg, tmp_path):
    """`seqbench list` in a fresh process (the thing tested is what that process imports): a plugin whose config
    module imports no torch is listed with its keys; one whose module imports torch is named, with where its keys are;
    one that does not load, with why. Torch is never imported."""
    install(plugpkg, "torchplug", {"heavy": "torchplug:Heavy", "broken": "torchplug_broken:Model"},
            {"torchplug.py": NEEDS_TORCH.format(cls="Heavy", help="units", extra=""),
             "torchplug_broken.py": "raise ImportError('needs a library that is not installed')\n"})
    code = ("import sys\nfrom seqbench.harness.cli import main\nmain(['list'])\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(plugpkg), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.strip().endswith("torch imported: False"), out[-500:]
    assert "plugins:  broken (torchplug_broken:Model), heavy (torchplug:Heavy), wide (plugpkg.models:Wide)" in out
    assert "broken | gru | heavy | lru | lstm | mamba | mingru | minlstm | rnn | transformer | wide | package.module:Config" in out
    rows = {line.split()[0] + (" " + line.split()[1] if line.split()[0] == "model.*" else ""): line
            for line in out.splitlines() if line.startswith("  model")}
    assert "[wide] units" in rows["model.width"]
    assert rows["model.* [heavy]"].endswith("[heavy] keys not listed: its module imports torch, which takes seconds; "
                                            "`seqbench run model=heavy --dry-run` shows them with their values")
    assert rows["model.* [broken]"].endswith("[broken] cannot be loaded: model=broken: importing entry point "
                                             "'torchplug_broken:Model' raised ImportError: needs a library that is "
                                             "not installed")
    assert "model.hidden" in rows and "[lstm] initial forget-gate bias" in out  # the built-in models' keys


def test_where_torch_is_imported_a_plugins_keys_are_listed_as_usual(plugpkg, capsys):
    import torch  # noqa: F401  (imported: loading a plugin costs nothing more)

    from seqbench.harness.cli import main

    install(plugpkg, "torchplug", {"heavy": "torchplug:Heavy"},
            {"torchplug.py": NEEDS_TORCH.format(cls="Heavy", help="heavy units", extra="")})
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "[heavy] heavy units" in out and "[wide] units" in out and "keys not listed" not in out


def test_an_entry_point_and_its_import_path_make_one_run(plugpkg):
    from seqbench.harness.config import resolve
    from seqbench.harness.records import record_head

    configs = [resolve({"model": {"name": given}}) for given in ("wide", "plugpkg.models:Wide", "plugpkg:Wide")]
    assert {c.model.name for c in configs} == {"plugpkg.models:Wide"} and len({c.run_id for c in configs}) == 1
    assert record_head(configs[0])["backend"] == "plugin"
    assert resolve({"model": {"name": "lstm"}}).model.name == "lstm"


def test_a_report_labels_a_plugins_backend_plugin():
    import pandas as pd

    from seqbench.harness.report.data import _backends

    runs = pd.DataFrame({"config.model.name": ["plugpkg.models:Wide", "plugpkg.models:Fast", "lstm", "transformer"],
                         "config.model.backend": [None, "cuda-graphs", "reference", None],
                         "kernel_path": ["plugpkg.models.Module", "plugpkg.models.FastModule",
                                         "kernels.reference.lstm: reference-loop", "torch.nn.MultiheadAttention"]})
    assert list(_backends(runs)) == ["plugin", "cuda-graphs", "reference", "torch"]
