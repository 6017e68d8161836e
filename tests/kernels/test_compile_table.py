"""The launch table against the committed compile reports (results/bench/compile/sm*-triton*.json, written by
`python -m seqbench.kernels.compile_report` under each supported Triton version), without compiling anything: the table is what
the reports say, every report compiled what the launchers launch, and every configuration plan() chooses on an H100
SXM, an H100 PCIe and an A100 compiled under every version within the device's shared memory and the spill budget,
with a persistent grid the device holds at once."""

import glob
import itertools
import os

import pytest

from seqbench.kernels import compile_report, triton_rnn, triton_scan, triton_split
from seqbench.kernels.triton_split import GATES, REFERENCE_DEVICES, SPILL_BUDGET, plan, programs_per_sm

REPORTS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "results", "bench", "compile")
REPORTS = compile_report.load_reports(sorted(glob.glob(os.path.join(REPORTS_DIR, "sm*-triton*.json"))))
ARCHS = {80: "A100", 90: "H100"}


def rows_of(arch):
    """{triton version: {configuration key: row}} of the committed reports for `arch`."""
    return {r["triton"]: {compile_report.key(row): row for row in r["kernels"]} for r in REPORTS if r["arch"] == arch}


def test_reports_cover_the_supported_triton_versions():
    """sm_90 under the oldest supported Triton (3.2), the GPU image's (3.6) and a current one; sm_80 under one at
    least."""
    versions = {arch: {tuple(map(int, r["triton"].split(".")[:2])) for r in REPORTS if r["arch"] == arch}
                for arch in ARCHS}
    assert {(3, 2), (3, 6)} <= versions[90] and max(versions[90]) >= (3, 9), versions
    assert versions[80], "no sm_80 report"


def test_launch_table_is_derived_from_the_reports():
    assert triton_split.LAUNCH_TABLE == compile_report.derive_table(REPORTS), (
        "regenerate it: python -m seqbench.kernels.compile_report --table results/bench/compile/sm*-triton*.json")


@pytest.mark.parametrize("report", REPORTS, ids=lambda r: f"sm{r['arch']}-triton{r['triton']}")
def test_every_choosable_configuration_compiled_and_fits(report):
    """The compile report's own check, on the committed rows: nothing plan() can choose is missing, over the shared
    memory or over the spill budget; and each row was compiled at the warps and stages its launcher uses."""
    assert compile_report.problems(report["kernels"], report["arch"]) == []
    for row in report["kernels"]:
        if row["mode"] == "one-program":
            want = triton_rnn._config(1, row["KP"])[1]["num_warps"]
        elif row["mode"] == "scan":
            want = triton_scan._launch(1, row["KP"])[1]["num_warps"]
        else:
            version = tuple(int(part) for part in report["triton"].split(".")[:2])
            cfg = triton_split.launch_config(GATES[row["cell"]], row["KP"], row["BB"], row["LOWP"], version,
                                             report["arch"])
            want = cfg["num_warps"]
            assert row["num_stages"] == cfg["num_stages"], row
        assert row["num_warps"] == want, row


def split_sizes():
    """Hidden sizes at and just past every padded width the split kernels take, per cell."""
    for cell, G in GATES.items():
        low, high = compile_report.LIMITS[cell].max_fused_hidden, compile_report.LIMITS[cell].max_split_hidden
        widths = [KP for KP in compile_report._widths(high) if KP > low]
        for H in sorted({low + 1, *widths, *(KP // 2 + 1 for KP in widths if KP // 2 + 1 > low)}):
            yield cell, G, H


@pytest.mark.parametrize("device", REFERENCE_DEVICES, ids=lambda d: d.name.replace(" ", "-"))
def test_plan_chooses_only_what_compiled_and_fits(device):
    arch_rows = rows_of(triton_split._table_arch(device.arch))
    batches = (1, 16, 17, 64, 100, 128, 129, 200, 256, 1000)
    seen = set()
    for (cell, G, H), B, lowp in itertools.product(split_sizes(), batches, (0, 1, 2)):
        mode, grid, cfg = plan(B, H, G, device, lowp)
        assert grid == (triton_split.cdiv_hidden(H), -(-B // cfg["BB"])), (cell, H, B)
        for version, rows in arch_rows.items():
            for direction in ("forward", "backward"):
                row = rows.get((f"{cell}_split_{direction}_kernel", mode, cfg["KP"], cfg["BB"], lowp))
                what = f"{device.name} triton {version}: {cell} H={H} B={B} LOWP={lowp} {mode} BB={cfg['BB']}"
                assert row is not None, f"{what}: not in the compile report"
                assert row["shared_bytes"] <= device.shared_per_block, what
                assert row["spill_store_bytes"] <= SPILL_BUDGET, what
                if mode == "persistent":
                    per_sm = programs_per_sm(row["registers"], row["shared_bytes"], row["num_warps"], device)
                    assert grid[0] * grid[1] <= per_sm * device.multiprocessors, what
        seen.add((cell, mode, cfg["BB"], lowp))
    assert any(m == "persistent" for _, m, _, _ in seen) and any(m == "stepwise" for _, m, _, _ in seen)


def test_update_compiles_only_what_a_report_lacks(tmp_path):
    """--update: a report missing one configuration gets exactly that one compiled and appended, the command
    recorded; a report of another arch or Triton version is refused (exit 2) and left alone. In a subprocess without
    TRITON_INTERPRET (under the interpreter nothing compiles)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("triton")
    import triton

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}

    def report_main(*args):
        return subprocess.run([sys.executable, "-m", "seqbench.kernels.compile_report", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    [report] = [r for r in REPORTS if r["arch"] == 90 and r["triton"] == triton.__version__] or [None]
    if report is None:
        pytest.skip(f"no committed sm_90 report for the installed triton {triton.__version__}")
    missing = {"kernel": "scan_forward_kernel", "mode": "scan", "KP": 16, "BB": 1, "LOWP": 0}
    kept = [r for r in report["kernels"] if compile_report.key(r) != compile_report.key(missing)]
    assert len(kept) == len(report["kernels"]) - 1
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**report, "kernels": kept}))
    match = r"scan_forward_kernel .*'KP': 16, 'BB': 1, 'LOWP': 0"
    done = report_main("--arch", "90", "--update", str(path), "--match", match, "--jobs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    updated = json.loads(path.read_text())
    assert updated["kernels"][:-1] == kept
    new = updated["kernels"][-1]
    assert compile_report.key(new) == compile_report.key(missing) and new["num_warps"] == 1
    assert updated["updated_by"][-1].endswith(f"--update {path} --match {match} --jobs 1")
    before = path.read_text()
    refused = report_main("--arch", "80", "--update", str(path))
    assert refused.returncode == 2 and "holds sm_90 under triton" in refused.stderr
    assert path.read_text() == before
