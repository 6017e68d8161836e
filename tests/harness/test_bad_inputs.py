"""Every bad input ends the same way: exit code 2, exactly one line on stderr that names the offending key, value or
file, no traceback, nothing on stdout, and the folder the command would write into left exactly as it was.

One table of cases across the commands (run, sweep, report, reproduce, bench, list, export), run in-process against
one shared workspace whose tree is compared before and after every case. Placeholders in a case's arguments name the
workspace's fixtures (see `workspace`).
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from seqbench.harness.cli import main
from seqbench.harness.sweep import expand, load_spec
from seqbench.harness.train import execute

from .conftest import tiny

SMALL = {"task": "adding", "task.length": 8, "model.hidden": 8, "device": "cpu", "train.steps": 2,
         "train.batch_size": 4, "train.eval_size": 8, "train.grad_profile_batch": 2}
TRACKERS = importlib.util.find_spec("tensorboard") is not None
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
needs_tensorboard = pytest.mark.skipif(not TRACKERS, reason="export reads records only once the tracker is installed")


def _spec(**fields):
    return yaml.safe_dump({"name": "s", "base": dict(SMALL), **fields})


#: sweep spec files: name -> text
SPECS = {
    "ok.yaml": _spec(grid={"model.hidden": [8]}),
    "notyaml.yaml": "name: s\nbase: [unclosed\n",
    "list.yaml": "- name: s\n",
    "noname.yaml": yaml.safe_dump({"base": SMALL}),
    "badname.yaml": _spec(name="has space"),
    "unknownkey.yaml": _spec(grdi={"model.hidden": [8]}),
    "emptygrid.yaml": _spec(grid={"model.hidden": []}),
    "zipmismatch.yaml": _spec(zip={"model.hidden": [8, 16], "train.lr": [0.1]}),
    "seeds0.yaml": _spec(seeds=0),
    "dupseeds.yaml": _spec(seeds=[1, 1]),
    "dupkey.yaml": "name: s\nbase:\n  task: adding\n  train.steps: 2\n  train.steps: 3\n",
    "duppoints.yaml": _spec(grid={"model.hidden": [8, 8]}),
    "operational.yaml": _spec(grid={"train.checkpoint_every": [10, 20]}),
    "variedtwice.yaml": _spec(grid={"model.hidden": [8, 16]}, zip={"model.hidden": [4]}),
    "seedingrid.yaml": _spec(grid={"seed": [0, 1]}),
    "badbase.yaml": yaml.safe_dump({"name": "s", "base": {**SMALL, "train.lr": float("inf")}}),
    "badpoint.yaml": _spec(grid={"model.hidden": [8, 0]}),
    "twoforms.yaml": yaml.safe_dump({"name": "s", "base": {**SMALL, "train": {"steps": 5}}}),
    "resources.yaml": _spec(resources={"cpu": 2}),
    "huge.yaml": _spec(grid={"task.length": [100_000_000]}),
    "seedinbase.yaml": yaml.safe_dump({"name": "s", "base": {**SMALL, "seed": 5}}),
    "manyseeds.yaml": _spec(seeds=100_000_000),
    "hugegrid.yaml": _spec(grid={"model.hidden": list(range(1, 401)), "task.length": list(range(2, 402))}),
}

#: --config files: name -> text
CONFIGS = {
    "list.yaml": "- task\n",
    "notyaml.yaml": "task: [adding\n",
    "dupkey.yaml": "task: adding\ntrain.lr: 0.1\ntrain.lr: 0.2\n",
    "twoforms.yaml": "task: adding\ntask.name: copy\n",
    "unknownkey.yaml": "train:\n  lrr: 0.1\n",
    "badvalue.json": json.dumps({"train": {"lr": "fast"}}),
    "infinite.yaml": "train.lr: .inf\n",
    "sectionvalue.yaml": "train:\n  lr: 0.1\ntrain.lr.x: 1\n",
}


def _run_variant(root, src, name, edit):
    """A copy of the recorded run `src` under root/name/<run_id>, changed by edit(run_dir)."""
    dst = root / name / src.name
    shutil.copytree(src, dst)
    edit(dst)
    return dst


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("bad_inputs")
    _, run = execute(tiny(), ws / "runs", progress=False)
    (run / ".lock").unlink()
    (ws / "a_file").write_text("not a folder\n")
    (ws / "empty").mkdir()
    for name, text in SPECS.items():
        (ws / "specs").mkdir(exist_ok=True)
        (ws / "specs" / name).write_text(text)
    for name, text in CONFIGS.items():
        (ws / "configs").mkdir(exist_ok=True)
        (ws / "configs" / name).write_text(text)
    rec = ws / "records"

    def write(name, text):
        return lambda d: (d / name).write_text(text)

    def prepend(name, text):
        return lambda d: (d / name).write_text(text + (d / name).read_text())

    def cut_line(name, n):  # a damaged line in the middle of a JSON-lines file
        def edit(d):
            lines = (d / name).read_text().splitlines()
            lines[n - 1] = lines[n - 1][: len(lines[n - 1]) // 2]
            (d / name).write_text("\n".join(lines) + "\n")
        return edit

    def drop_summary(d):
        (d / "summary.json").unlink()

    def lose_config(d):  # config.json gone, and the summary without its copy of the config
        (d / "config.json").unlink()
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "config"}))

    def huge_config(d):
        config = json.loads((d / "config.json").read_text())
        config["task"]["length"] = 100_000_000
        (d / "config.json").write_text(json.dumps(config))

    def config_with(key, value):
        def edit(d):
            config = json.loads((d / "config.json").read_text())
            config["train"][key] = value
            (d / "config.json").write_text(json.dumps(config))
        return edit

    variants = {
        "summary_list": write("summary.json", "[]\n"),
        "summary_corrupt": write("summary.json", '{"status": "completed",\n  "run_id": \n'),
        "summary_nostatus": write("summary.json", '{"run_id": "x"}\n'),
        "summary_norunid": write("summary.json", '{"status": "completed"}\n'),
        "summary_binary": lambda d: (d / "summary.json").write_bytes(b"\xff\xfe\x00\x81"),
        "metrics_corrupt": cut_line("metrics.jsonl", 2),
        "metrics_array": prepend("metrics.jsonl", "[1, 2]\n"),
        "metrics_nostep": prepend("metrics.jsonl", '{"loss": 1}\n'),
        "profile_corrupt": cut_line("grad_profile.jsonl", 1),
        "config_corrupt": write("config.json", '{"task": {"name": "adding",\n'),
        "config_list": write("config.json", "[]\n"),
        "config_unknown_key": config_with("lrr", 0.1),
        "config_bad_value": config_with("steps", -4),
        "unfinished": drop_summary,
        "incomplete_config_corrupt": lambda d: (drop_summary(d), write("config.json", "{\n")(d)),
        "incomplete_config_list": lambda d: (drop_summary(d), write("config.json", "[1]\n")(d)),
        "huge": huge_config,
        "config_lost": lose_config,
        "metrics_empty": write("metrics.jsonl", ""),
    }
    paths = {name: _run_variant(rec, run, name, edit) for name, edit in variants.items()}
    (ws / "bench_corrupt" / "bench" / "cpu").mkdir(parents=True)
    shutil.copytree(run, ws / "bench_corrupt" / run.name)
    (ws / "bench_corrupt" / "bench" / "cpu" / "bench-1.json").write_text("{oops")
    shutil.copytree(run, ws / "sweepjson_corrupt" / "s" / run.name)
    (ws / "sweepjson_corrupt" / "s" / "sweep.json").write_text("[]")
    # a sweep folder whose one run has a damaged summary: refused before anything is written, dry run or not
    (cfg,) = expand(*load_spec(str(ws / "specs" / "ok.yaml")), {})
    (ws / "sweep_corrupt" / "s" / cfg.run_id).mkdir(parents=True)
    (ws / "sweep_corrupt" / "s" / cfg.run_id / "summary.json").write_text('{"status": \n')
    fields = {"ws": ws, "run": run, "runs": ws / "runs", "file": ws / "a_file", "empty": ws / "empty",
              "long": ws / ("x" * 300),  # a name longer than a file system allows (255)
              "missing": ws / "missing", "specs": ws / "specs", "configs": ws / "configs",
              **{f"rec_{k}": v for k, v in paths.items()}, **{f"dir_{k}": v.parent for k, v in paths.items()}}
    return ws, {k: str(v) for k, v in fields.items()}


def C(args: str, *needles: str, marks=()):
    """A case: the command line (split on spaces; `''` is an empty argument) and what its error line must contain."""
    argv = ["" if a == "''" else a for a in args.split()]
    return pytest.param(argv, needles, id=args, marks=marks)


CASES = [
    # --- run: values ------------------------------------------------------------------------------------------------
    C("run task=copyy", "task=copyy", "known: adding, copy"),
    C("run model=lstmm", "model=lstmm", "known:"),
    C("run model.hidden=0", "model.hidden=0", "greater than or equal to 1"),
    C("run model.hidden=-3", "model.hidden=-3"),
    C("run model.hidden=abc", "model.hidden=abc", "integer"),
    C("run model.hidden=1.5", "model.hidden=1.5"),
    C("run train.lr=0", "train.lr=0", "greater than 0"),
    C("run train.lr=-1", "train.lr=-1"),
    C("run train.lr=inf", "train.lr=inf", "finite"),
    C("run train.lr=nan", "train.lr=nan", "finite"),
    C("run train.lr=-inf", "train.lr=-inf"),
    C("run train.clip=inf", "train.clip=inf", "finite"),
    C("run train.weight_decay=nan", "train.weight_decay=nan", "finite"),
    C("run model.forget_bias=inf", "model.forget_bias=inf", "finite"),
    C("run task.solved_mse=inf", "task.solved_mse=inf", "finite"),
    C("run train.steps=0", "train.steps=0"),
    C("run train.steps=1e3", "train.steps=1e3", "integer"),
    C("run train.batch_size=0", "train.batch_size=0"),
    C("run train.optimizer=adagrad", "train.optimizer=adagrad", "'adam'"),
    C("run train.momentum=1", "train.momentum=1", "less than 1"),
    C("run train.eval_size=0", "train.eval_size=0"),
    C("run train.log_every=0", "train.log_every=0"),
    C("run train.grad_profile_dtype=float16", "train.grad_profile_dtype=float16", "'float64'"),
    C("run train.memory_check=maybe", "train.memory_check=maybe", "boolean"),
    C("run train.early_stop=perhaps", "train.early_stop=perhaps"),
    C("run task.length=1", "task.length=1", "greater than or equal to 2"),
    C("run task=copy task.n_symbols=0", "task.n_symbols=0"),
    C("run task=copy task.solved_accuracy=1.5", "task.solved_accuracy=1.5"),
    C("run model=transformer model.heads=3", "model.heads=3 must divide model.d_model=64"),
    C("run model.backend=cudnn", "model.backend=cudnn", "'torch'"),
    C("run model=rnn model.nonlinearity=sigmoid", "model.nonlinearity=sigmoid", "'tanh'"),
    C("run device=tpu", "device=tpu", "'cpu'"),
    C("run dtype=float16", "dtype=float16", "'float32'"),
    C("run device=cpu dtype=bfloat16", "dtype=bfloat16", "CUDA only"),
    C("run seed=-1", "seed=-1"),
    C("run data_seed=x", "data_seed=x"),
    C("run threads=0", "threads=0"),
    C("run eval.test_size=0", "eval.test_size=0", "greater than or equal to 1"),
    C("run eval.test_size=many", "eval.test_size=many", "integer"),
    # --- run: keys ----------------------------------------------------------------------------------------------------
    C("run train.unknown=1", "train.unknown: unknown key", "train.lr"),
    C("run foo=1", "foo: unknown key", "allowed here: task, model, train"),
    C("run task.copy_len=3", "task.copy_len: unknown key", "task.length"),
    C("run model.heads=2", "model.heads: unknown key", "model.hidden"),
    C("run model.nonlinearity=relu", "model.nonlinearity: unknown key"),
    C("run train=5", "train=5", "valid dictionary"),
    C("run train.lr=0.1 train=3", "train=3: train is a section, not a value"),
    C("run train.lr.x=1", "train.lr"),
    C("run nonsense", "malformed override 'nonsense'", "key=value"),
    C("run =5", "malformed override '=5'"),
    C("run task.=5", "malformed override 'task.=5'"),
    C("run train..lr=1", "malformed override 'train..lr=1'"),
    C("run task=adding task=copy", "task=copy: task is given twice (first task=adding)"),
    C("run train.lr=0.1 --quiet train.lr=0.2", "train.lr=0.2: train.lr is given twice (first train.lr=0.1)"),
    C("run task=adding task.name=copy", "task.name=copy: task.name is given twice (first task=adding)"),
    C("run model=gru model.name=rnn", "model.name=rnn", "given twice"),
    # --- run: flags and files -----------------------------------------------------------------------------------------
    C("run --bogus", "unrecognized arguments: --bogus"),
    C("run --out", "--out", "expected one argument"),
    C("run --out ''", "--out '': empty"),
    C("run --out {file}", "--out", "a_file", "is a file, not a folder"),
    C("run --out {file}/sub", "a_file is a file, not a folder"),
    C("run task.length=5 --out {file} train.steps=5", "a_file", "is a file"),
    C("run --force=yes", "--force", "ignored explicit argument"),
    C("run --json", "--json: only with --dry-run"),
    C("run --dry-run train.lr=inf", "train.lr=inf"),
    C("run --config {missing}", "--config", "missing", "cannot read", "No such file"),
    C("run --config {configs}", "--config", "configs", "cannot read"),
    C("run --config {configs}/list.yaml", "list.yaml", "expected a mapping of config keys"),
    C("run --config {configs}/notyaml.yaml", "notyaml.yaml:2", "not valid YAML"),
    C("run --config {configs}/dupkey.yaml", "dupkey.yaml:3", "train.lr: given twice in one mapping"),
    C("run --config {configs}/twoforms.yaml", "twoforms.yaml", "task.name is given twice (first task=adding)"),
    C("run --config {configs}/unknownkey.yaml", "train.lrr: unknown key"),
    C("run --config {configs}/badvalue.json", "train.lr=fast"),
    C("run --config {configs}/infinite.yaml", "train.lr=inf", "finite"),
    C("run --config {configs}/sectionvalue.yaml", "train.lr.x", "'lr' is a value, not a section"),
    C("run --tracker nosuch", "--tracker", "nosuch"),
    C("run --out {long}/sub", "--out", "cannot reach", "File name too long"),
    # a folder that permission bits call writable, where nothing can be created (Linux's /proc; even for root)
    C("run --out /proc/seqbench-out", "--out /proc/seqbench-out: cannot create a folder in /proc", marks=needs_proc),
    # --- run: sizes no device can hold --------------------------------------------------------------------------------
    C("run task.length=100000000", "memory:", "task.length=100000000", "available", "train.memory_check=false"),
    # the check measures a sequence this long without allocating it (it used to ask for 40 GB and crash)
    C("run task.length=10000000000", "memory:", "task.length=10000000000", "train.memory_check=false"),
    C("run model.hidden=100000", "memory:", "model.hidden=100000", "parameters"),
    C("run train.batch_size=100000000", "memory:", "train.batch_size=100000000"),
    C("run model=transformer model.d_model=65536 model.heads=1", "memory:", "model.d_model=65536"),
    C("run train.eval_size=1000000000", "memory:", "train.eval_size=1000000000"),
    C("run eval.test_size=1000000000", "memory:", "eval.test_size=1000000000"),
    C("run model=gru model.layers=100000 model.hidden=512", "memory:", "model.layers=100000"),
    C("run task=copy task.n_symbols=100000000 train.batch_size=1000", "memory:"),
    # --- sweep --------------------------------------------------------------------------------------------------------
    C("sweep", "the following arguments are required: SPEC|PRESET"),
    C("sweep nosuchpreset", "'nosuchpreset': no such file and no such preset", "quick"),
    C("sweep {specs}/notyaml.yaml", "notyaml.yaml:3", "not valid YAML"),
    C("sweep {specs}/list.yaml", "list.yaml", "expected a mapping"),
    C("sweep {specs}/noname.yaml", "noname.yaml", "name: Field required"),
    C("sweep {specs}/badname.yaml", "badname.yaml", "name:"),
    C("sweep {specs}/unknownkey.yaml", "unknownkey.yaml", "grdi: unknown key"),
    C("sweep {specs}/emptygrid.yaml", "grid.model.hidden: empty list"),
    C("sweep {specs}/zipmismatch.yaml", "zipmismatch.yaml", "equal lengths"),
    C("sweep {specs}/seeds0.yaml", "seeds=0"),
    C("sweep {specs}/dupseeds.yaml", "distinct seeds"),
    C("sweep {specs}/dupkey.yaml", "dupkey.yaml:5", "train.steps: given twice in one mapping"),
    C("sweep {specs}/duppoints.yaml --dry-run", "duppoints.yaml", "model.hidden=8, seed=0 and model.hidden=8, seed=0",
      "the same run"),
    C("sweep {specs}/operational.yaml", "operational.yaml", "train.checkpoint_every=10, seed=0 and "
      "train.checkpoint_every=20, seed=0 are the same run"),
    C("sweep {specs}/variedtwice.yaml", "model.hidden: varied twice (in grid and zip group 1)"),
    C("sweep {specs}/seedingrid.yaml", "grid: seed", "seeds:"),
    C("sweep {specs}/badbase.yaml", "badbase.yaml", "train.lr=inf"),
    C("sweep {specs}/badpoint.yaml", "badpoint.yaml: at model.hidden=0, seed=0: model.hidden=0"),
    C("sweep {specs}/twoforms.yaml", "twoforms.yaml: base:", "train.steps", "given twice"),
    C("sweep {specs}/resources.yaml", "resources.cpu: unknown key; allowed: cpus, gpus, custom"),
    C("sweep {specs}/huge.yaml", "huge.yaml", "memory:", "task.length=100000000"),
    C("sweep {specs}/ok.yaml --out {ws}/sweep_corrupt --dry-run", "sweep_corrupt", "summary.json:2", "not valid JSON"),
    C("sweep {specs}/ok.yaml --out {ws}/sweep_corrupt", "sweep_corrupt", "summary.json"),
    C("sweep quick seed=3 --dry-run", "seed=3: sweep quick sets the seeds itself"),
    C("sweep quick --dry-run task.length=5", "task.length=5: sweep quick varies it", "the same run"),
    C("sweep quick train.lr=inf --dry-run", "train.lr=inf", "finite"),
    C("sweep quick model.heads=2 --dry-run", "model.heads: unknown key"),
    C("sweep quick --dry-run train.lr=0.1 train.lr=0.2", "train.lr is given twice"),
    C("sweep quick --workers 0", "--workers 0: must be >= 1"),
    C("sweep quick --workers two", "--workers", "invalid int value: 'two'"),
    C("sweep quick --workers-per-gpu 0", "--workers-per-gpu 0: must be >= 1"),
    C("sweep quick --workers-per-gpu 2 --workers 2", "--workers-per-gpu and --workers", "give one"),
    C("sweep quick --workers-per-gpu 2 --dry-run", "--workers-per-gpu needs device=cuda", "device=cpu"),
    C("sweep quick --workers-per-gpu 2 --executor slurm --dry-run", "--workers-per-gpu is for --executor local",
      "--gpus-per-run"),
    C("sweep quick --out {file}", "--out", "a_file", "is a file"),
    C("sweep quick --out ''", "--out '': empty"),
    C("sweep quick --out /proc", "--out /proc: cannot create a folder in /proc", marks=needs_proc),
    C("sweep quick --out {long} --dry-run", "--out", "cannot reach", "File name too long"),
    C("sweep {specs}/seedinbase.yaml", "seedinbase.yaml: base.seed", "`seeds:`", "seeds: [5]"),
    C("sweep {specs}/seedinbase.yaml --dry-run", "seedinbase.yaml: base.seed", "`seeds:`"),
    C("sweep {specs}/manyseeds.yaml --dry-run", "manyseeds.yaml: seeds: 100,000,000 seeds", "at most 100,000 runs"),
    C("sweep {specs}/manyseeds.yaml", "manyseeds.yaml: seeds:", "at most 100,000 runs"),
    C("sweep {specs}/hugegrid.yaml --dry-run", "hugegrid.yaml: grid x zip x seeds make 160,000 runs",
      "grid.model.hidden: 400 values", "at most 100,000 runs"),
    C("sweep quick --ray-address 1.2.3.4:6379", "--ray-address needs --executor ray"),
    C("sweep quick --force --retry-failed", "give --force or --retry-failed, not both"),
    C("sweep quick --executor dask", "--executor", "invalid choice: 'dask'"),
    C("sweep quick --json", "--json: only with --dry-run"),
    C("sweep quick --cpus-per-run 0 --dry-run", "--cpus-per-run"),
    C("sweep quick --cpus-per-run 2", "--cpus-per-run needs --executor ray or slurm"),
    C("sweep quick --gpus-per-run 1 --dry-run", "--gpus-per-run needs --executor ray or slurm"),
    C("sweep quick --resource A100=1", "--resource needs --executor ray or slurm"),
    # --- report -------------------------------------------------------------------------------------------------------
    C("report", "the following arguments are required: DIR"),
    C("report {missing}", "missing: no such folder"),
    C("report {file}", "a_file: a file, not a folder"),
    C("report {empty}", "no runs under", "empty"),
    C("report {runs} --out {file}", "--out", "a_file", "is a file"),
    C("report {runs} --out ''", "--out '': empty"),
    C("report {runs} --out /proc/report", "--out /proc/report: cannot create a folder in /proc", marks=needs_proc),
    C("report {runs} --bogus", "unrecognized arguments: --bogus"),
    C("report {dir_summary_list}", "summary_list", "summary.json:1", "got a JSON array"),
    C("report {dir_summary_corrupt}", "summary_corrupt", "summary.json:3", "not valid JSON"),
    C("report {dir_summary_nostatus}", "summary_nostatus", "summary.json:1", "without a status"),
    C("report {dir_summary_norunid}", "summary_norunid", "summary.json:1", "run_id is missing"),
    C("report {dir_summary_binary}", "summary_binary", "summary.json", "not a text file"),
    C("report {dir_metrics_corrupt}", "metrics_corrupt", "metrics.jsonl:2", "corrupt line"),
    C("report {dir_metrics_array}", "metrics_array", "metrics.jsonl:1", "is a JSON array"),
    C("report {dir_metrics_nostep}", "metrics_nostep", "metrics.jsonl:1", "lacks step"),
    C("report {dir_profile_corrupt}", "profile_corrupt", "grad_profile.jsonl:1", "corrupt line"),
    C("report {dir_incomplete_config_corrupt}", "incomplete_config_corrupt", "config.json:2", "not valid JSON"),
    C("report {dir_incomplete_config_list}", "incomplete_config_list", "config.json:1", "got a JSON array"),
    C("report {ws}/bench_corrupt", "bench-1.json:1", "not valid JSON"),
    C("report {dir_config_lost}", "config_lost", "config.json: missing", "summary.json holds no config either"),
    C("report {ws}/sweepjson_corrupt", "sweep.json:1", "not a sweep record"),
    # --- reproduce ----------------------------------------------------------------------------------------------------
    C("reproduce", "the following arguments are required: RUN_DIR"),
    C("reproduce {missing}", "missing: no config.json here"),
    C("reproduce {file}", "a_file: no config.json here"),
    C("reproduce {rec_unfinished}", "unfinished", "no summary.json"),
    C("reproduce {rec_config_corrupt}", "config_corrupt", "config.json:2", "not valid JSON"),
    C("reproduce {rec_config_list}", "config_list", "config.json:1", "got a JSON array"),
    C("reproduce {rec_config_unknown_key}", "config_unknown_key", "config.json: train.lrr: unknown key"),
    C("reproduce {rec_config_bad_value}", "config_bad_value", "config.json: train.steps=-4"),
    C("reproduce {rec_summary_list}", "summary_list", "summary.json:1"),
    C("reproduce {rec_summary_corrupt}", "summary_corrupt", "summary.json:3"),
    C("reproduce {rec_metrics_corrupt}", "metrics_corrupt", "metrics.jsonl:2"),
    C("reproduce {rec_profile_corrupt}", "profile_corrupt", "grad_profile.jsonl:1"),
    C("reproduce {rec_huge}", "memory:", "task.length=100000000"),
    C("reproduce {rec_config_lost}", "config_lost", "no config.json here"),
    C("reproduce {rec_metrics_empty}", "metrics_empty", "metrics.jsonl: empty", "nothing to compare the rerun with"),
    C("reproduce {run} --keep {file}", "--keep", "a_file", "is a file"),
    C("reproduce {run} --keep {file}/x", "--keep", "a_file is a file"),
    C("reproduce {run} --keep ''", "--keep '': empty"),
    C("reproduce {run} --rtol -1", "--rtol -1.0: must be a number >= 0"),
    C("reproduce {run} --rtol nan", "--rtol nan"),
    C("reproduce {run} --rtol abc", "--rtol", "invalid float value: 'abc'"),
    C("reproduce {run} --threads 0", "--threads 0: must be >= 1"),
    # --- bench --------------------------------------------------------------------------------------------------------
    C("bench --out {file}", "--out", "a_file", "is a file"),
    C("bench --out ''", "--out '': empty"),
    C("bench --out {long}", "--out", "cannot reach", "File name too long"),
    C("bench --out /proc", "--out /proc: cannot create a folder in /proc", marks=needs_proc),
    C("bench --cells foo", "--cells", "'foo'", "rnn, lstm, gru"),
    C("bench --backends cudnn", "--backends", "'cudnn'"),
    C("bench --batch 0", "--batch", "'0'", "positive integers"),
    C("bench --hidden x", "--hidden", "'x'"),
    C("bench --length -5", "--length", "'-5'"),
    C("bench --dtype float16", "--dtype", "'float16'"),
    C("bench --dtype bfloat16 --device cpu", "--dtype bfloat16 needs --device cuda"),
    C("bench --device tpu", "--device", "invalid choice: 'tpu'"),
    C("bench --device cpu --cells lstm --hidden 100000", "memory:", "--hidden 100000", "--no-memory-check"),
    C("bench --device cpu --cells gru --hidden 64 --length 100000000", "memory:", "--length 100000000"),
    # --- list ---------------------------------------------------------------------------------------------------------
    C("list extra", "unrecognized arguments: extra"),
    C("list --bogus", "unrecognized arguments: --bogus"),
    C("list --json=yes", "--json", "ignored explicit argument"),
    # --- export -------------------------------------------------------------------------------------------------------
    C("export", "the following arguments are required"),
    C("export {runs}", "the following arguments are required: --to"),
    C("export {runs} --to nosuch", "--to", "nosuch"),
    C("export {runs} --to ''", "--to", "expected a tracker name"),
    C("export {missing} --to tensorboard", "missing", "no such folder"),
    C("export {file} --to tensorboard", "a_file"),
    C("export {runs} --bogus --to tensorboard", "unrecognized arguments: --bogus"),
    C("export {empty} --to tensorboard", "empty", "no finished run records", marks=needs_tensorboard),
    C("export {dir_summary_list} --to tensorboard", "summary_list", "summary.json:1", marks=needs_tensorboard),
    C("export {dir_metrics_corrupt} --to tensorboard", "metrics_corrupt", "metrics.jsonl:2", marks=needs_tensorboard),
    C("export {dir_metrics_empty} --to tensorboard", "metrics_empty", "metrics.jsonl: empty", "says completed",
      "nothing to export", marks=needs_tensorboard),
    C("export {dir_config_lost} --to tensorboard", "config_lost", "config.json: missing", "holds no config",
      marks=needs_tensorboard),
    # --- the command itself -------------------------------------------------------------------------------------------
    C("nosuchcommand", "invalid choice: 'nosuchcommand'"),
    C("--bogus", "--bogus"),
]


def snapshot(root):
    """Every path under `root` with its size and modification time (None for folders)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def test_the_table_is_large_and_covers_every_command():
    commands = {case.values[0][0] for case in CASES}
    assert len(CASES) >= 100
    assert {"run", "sweep", "report", "reproduce", "bench", "list", "export"} <= commands


@pytest.mark.parametrize("argv, needles", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workspace, monkeypatch, capsys, argv, needles):
    ws, fields = workspace
    monkeypatch.chdir(ws)  # default output folders (results/...) land in the workspace, which is compared below
    before = snapshot(ws)
    code = main([arg.format(**fields) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqbench: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle.format(**fields) in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert out == ""
    assert snapshot(ws) == before
