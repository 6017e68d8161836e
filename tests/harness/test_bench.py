import json
import os

import pytest

from seqbench.harness.bench import bench_one, run_bench
from seqbench.harness.cli import main


def test_bench_checks_then_times_and_writes_machine_info(tmp_path):
    path = run_bench(["gru"], ["torch", "reference"], [3], [5], [4], ["float32"], "cpu", tmp_path, say=lambda _: None)
    data = json.loads(path.read_text())
    assert path.parent.name == "cpu" and {"torch", "python", "cpu_model", "commit"} <= set(data["machine"])
    rows = data["results"]
    assert [(r["backend"], r["pass"]) for r in rows] == [("torch", "fwd"), ("torch", "fwd+bwd"),
                                                         ("reference", "fwd"), ("reference", "fwd+bwd")]
    for r in rows:
        assert r["max_rel_err"] < 1e-5 and r["p20_us"] <= r["median_us"] <= r["p80_us"]
        assert r["tokens_per_s"] == pytest.approx(3 * 4 / (r["median_us"] / 1e6))


def test_a_wrong_kernel_gets_no_number(monkeypatch):
    import seqbench.harness.bench as bench

    monkeypatch.setattr(bench, "check", lambda *a: 0.5)
    row = bench_one("lstm", "torch", 2, 3, 4, "float32", "cpu")
    assert "error" in row and "median_us" not in row


def one_gradient_off(monkeypatch, which):
    """Builds of the backend under test ("reference") get one gradient 1% off, their output bitwise right."""
    import seqbench.harness.bench as bench

    original = bench.build

    def build(cell, backend, *args):
        module = original(cell, backend, *args)
        if backend == "reference" and which == "input":
            module.register_forward_pre_hook(lambda m, args: (args[0] + 0.01 * (args[0] - args[0].detach()),))
        elif backend == "reference":
            list(module.parameters())[-1].register_hook(lambda g: g * 1.01)
        return module

    monkeypatch.setattr(bench, "build", build)


@pytest.mark.parametrize("which", ["input", "last-parameter"])
def test_a_kernel_with_one_wrong_gradient_gets_no_number(monkeypatch, which):
    """The check itself, not mocked: it compares every gradient, so a right output does not get a wrong kernel timed."""
    one_gradient_off(monkeypatch, which)
    row = bench_one("gru", "reference", 2, 3, 4, "float32", "cpu")
    assert isinstance(row, dict) and "error" in row and "median_us" not in row
    assert row["max_rel_err"] == pytest.approx(0.01, rel=1e-3)


def test_bad_bench_arguments_exit_2(capsys):
    assert main(["bench", "--hidden", "0"]) == 2
    assert "--hidden" in capsys.readouterr().err


def test_report_reads_bench_results(tmp_path):
    from seqbench.harness.report import build_report
    from seqbench.harness.report.data import load_bench
    from seqbench.harness.train import execute

    from .conftest import tiny

    execute(tiny(), tmp_path, progress=False)
    run_bench(["gru"], ["torch"], [3], [5], [4, 8], ["float32"], "cpu", tmp_path / "bench", say=lambda _: None)
    bench = load_bench(tmp_path)
    assert sorted(zip(bench.length, bench["pass"])) == [(4, "fwd"), (4, "fwd+bwd"), (8, "fwd"), (8, "fwd+bwd")]
    index = build_report(tmp_path)
    assert (index.parent / "figures" / "throughput.png").exists()


def test_floor_over_device_ceilings():
    from seqbench.harness.bench import ceilings, floor, floor_time

    row = {"dtype": "float32", **floor("lstm", 64, 512, "float32"), "us_per_step": 8.0}
    assert row["flops_per_step"] == 2 * 64 * 4 * 512 * 1024 and row["bytes_per_step"] == 2 * 64 * 512 * 4
    sxm = floor_time(row, ceilings("NVIDIA H100 80GB HBM3"))
    assert sxm["floor_bound"] == "compute"
    assert sxm["floor_us_per_step"] == pytest.approx(2 * 64 * 4 * 512 * 1024 / 67e12 * 1e6)
    assert sxm["x_floor"] == pytest.approx(8.0 / sxm["floor_us_per_step"])
    assert ceilings("NVIDIA H100 PCIe")["matched"] == "h100 pcie" and ceilings("NVIDIA H200")["matched"] == "h200"
    both = floor("rnn", 64, 64, "bfloat16", "fwd+bwd")
    assert both["flops_per_step"] == 3 * 2 * 64 * 64 * 128 and both["bytes_per_step"] == 3 * 2 * 64 * 64 * 2
    tiny = floor_time({"dtype": "bfloat16", **both}, ceilings("NVIDIA H100 80GB HBM3"))
    assert tiny["floor_bound"] == "memory" and "x_floor" not in tiny
    assert floor_time(row, ceilings("cpu")) == {}


def test_no_tf32_is_recorded_and_restored(tmp_path):
    import torch

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    path = run_bench(["rnn"], ["torch"], [2], [3], [2], ["float32"], "cpu", tmp_path, say=lambda _: None, tf32=False)
    machine = json.loads(path.read_text())["machine"]
    assert machine["cudnn_allow_tf32"] is False and machine["matmul_allow_tf32"] is False
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_bench_covers_mingru_and_minlstm_on_every_backend(tmp_path):
    """The step loop, the torch scan and the Triton scan (the interpreter here), each checked against the float64
    loop before it is timed; the floor has no recurrent matmul."""
    path = run_bench(["mingru", "minlstm"], ["reference", "torch", "triton"], [2], [6], [20], ["float32"], "cpu",
                     tmp_path, say=lambda _: None)
    rows = json.loads(path.read_text())["results"]
    assert len(rows) == 2 * 3 * 2 and all("error" not in r for r in rows)
    assert {(r["cell"], r["backend"], r["path"]) for r in rows} == {
        (c, b, p) for c in ("mingru", "minlstm")
        for b, p in (("reference", "reference-loop"), ("torch", "scan-torch"), ("triton", "fused-triton"))}
    assert all(r["max_rel_err"] < 1e-5 for r in rows)
    gates = {"mingru": 2, "minlstm": 3}
    for r in rows:
        assert r["flops_per_step"] == (3 if r["pass"] == "fwd+bwd" else 1) * 2 * 2 * gates[r["cell"]] * 6 * 6
    assert main(["bench", "--cells", "mingru,nope", "--device", "cpu"]) == 2


def test_each_row_records_what_ran_and_the_file_records_the_command(tmp_path, capsys):
    """torch.profiler's view of one call beside each timing (on a GPU the kernel names say which cuDNN algorithm
    torch chose; on the CPU the operators), and the exact command line in the result file."""
    assert main(["bench", "--cells", "lstm", "--backends", "torch,reference", "--batch", "2", "--hidden", "4",
                 "--length", "3", "--device", "cpu", "--out", str(tmp_path)]) == 0
    [path] = (tmp_path / "cpu").glob("bench-*.json")
    data = json.loads(path.read_text())
    assert data["command"] == (f"seqbench bench --cells lstm --backends torch,reference --batch 2 --hidden 4 "
                               f"--length 3 --device cpu --out {tmp_path}")
    by = {(r["backend"], r["pass"]): r["kernels"] for r in data["results"]}
    assert set(by) == {(b, p) for b in ("torch", "reference") for p in ("fwd", "fwd+bwd")}
    for ran in by.values():
        assert ran and sum(k["share"] for k in ran) <= 1.0001 and all(k["calls"] >= 1 for k in ran)
    names = {b: {k["name"] for (bb, _), ks in by.items() if bb == b for k in ks} for b in ("torch", "reference")}
    assert any("lstm" in n.lower() or "rnn" in n.lower() for n in names["torch"]), names["torch"]
    # the step loop runs one small matmul per step: T of them, which torch.nn's fused LSTM does not
    loop = next(k for k in by[("reference", "fwd")] if k["name"] in ("aten::addmm", "aten::mm", "aten::matmul"))
    assert loop["calls"] >= 3


def test_a_bench_cut_off_midway_keeps_what_it_measured(tmp_path, monkeypatch):
    """The file is written after every configuration: a crash (here in the third) leaves the first two, marked
    incomplete; a finished run is marked complete."""
    import seqbench.harness.bench as bench

    original, calls = bench.bench_one, []

    def crashing(*args):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return original(*args)

    monkeypatch.setattr(bench, "bench_one", crashing)
    with pytest.raises(RuntimeError):
        run_bench(["rnn"], ["torch"], [2], [3, 4, 5], [2], ["float32"], "cpu", tmp_path, say=lambda _: None)
    [path] = (tmp_path / "cpu").glob("bench-*.json")
    data = json.loads(path.read_text())
    assert data["complete"] is False
    assert [(r["hidden"], r["pass"]) for r in data["results"]] == [(3, "fwd"), (3, "fwd+bwd"), (4, "fwd"),
                                                                    (4, "fwd+bwd")]
    monkeypatch.setattr(bench, "bench_one", original)
    done = run_bench(["rnn"], ["torch"], [2], [3], [2], ["float32"], "cpu", tmp_path, say=lambda _: None)
    assert json.loads(done.read_text())["complete"] is True


def test_bench_output_has_no_profiler_notices(tmp_path, capfd):
    """kineto prints a `USDT: ... profiler_start` and a `... profiler_stop` line for every profiled call, from C++:
    capfd sees the process's own stdout and stderr, where they would land."""
    assert main(["bench", "--cells", "rnn", "--backends", "torch", "--batch", "2", "--hidden", "3", "--length", "2",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    out, err = capfd.readouterr()
    assert "USDT" not in out and "USDT" not in err
    assert [line.split()[:2] for line in out.splitlines()] == [["rnn", "torch"], ["rnn", "torch"], ["bench", "results:"]]
    assert err == ""


def test_dropping_the_profiler_notices_keeps_everything_else(capfd):
    from seqbench.harness.bench import kineto_notices_dropped

    with kineto_notices_dropped():
        os.write(2, b"USDT:2026-12-07 16:14:38 8561:8561 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"[W kineto] a real warning\n")
        os.write(1, b"some output\n")
        os.write(2, b"USDT:2026-12-07 16:14:38 8561:8561 SyncActivityProfilerHandler.cpp:59] profiler_stop\n")
    os.write(2, b"after\n")
    assert capfd.readouterr() == ("some output\n", "[W kineto] a real warning\nafter\n")


def test_bench_covers_the_lru_and_mamba_checked_against_their_loops(tmp_path):
    """The LRU's and Mamba's layers: the step loop and the torch scan, each checked against its float64 loop before it
    is timed; triton runs the scan and the row says so; the floor counts their projections."""
    from seqbench.harness.bench import step_weights

    path = run_bench(["lru", "mamba"], ["reference", "torch", "triton"], [2], [16], [12], ["float32"], "cpu",
                     tmp_path, say=lambda _: None)
    rows = json.loads(path.read_text())["results"]
    assert len(rows) == 2 * 3 * 2 and all("error" not in r for r in rows)
    assert {(r["cell"], r["backend"], r["path"].split(":")[0]) for r in rows} == {
        (c, b, p) for c in ("lru", "mamba")
        for b, p in (("reference", "reference-loop"), ("torch", "scan-torch"), ("triton", "fallback-scan"))}
    assert all(r["max_rel_err"] < 1e-5 for r in rows)
    assert step_weights("lru", 16) == 4 * 16 * 16
    assert step_weights("mamba", 16) == 2 * 32 * 16 + 32 * (1 + 32) + 1 * 32 + 32 * 16  # W_in, W_x, W_dt, W_out
    for r in rows:
        assert r["flops_per_step"] == (3 if r["pass"] == "fwd+bwd" else 1) * 2 * 2 * step_weights(r["cell"], 16)
