"""Compile every recurrent kernel, in every configuration the launchers can choose, for an NVIDIA architecture without
a GPU; report each one's resources and fail where a configuration plan() can choose does not fit the device.

    python -m seqbench.kernels.compile_report --arch 90 --out results/bench/compile/      # writes sm90-triton<version>.json
    python -m seqbench.kernels.compile_report --table results/bench/compile/*.json        # prints triton_split.LAUNCH_TABLE

Configurations: the one-program kernels at every padded width up to their limit; the split kernels at every padded
width KP up to theirs, in the stepwise mode (batch tile 16) and the persistent mode at every batch tile (16, 32, 64);
minGRU/minLSTM's scan kernels at every block size (mode "scan", KP = the block); float32, bfloat16 and float16
operands; forward and backward; each at the num_warps and num_stages its launcher uses and
with the specialization a launch gets (16-byte aligned pointers, step count never specialized). Figures per kernel:
shared memory (Triton), registers and stack frame per thread (cuobjdump on Triton's cubin), spill stores per thread
(ptxas -v, where the stack frame is not empty) and the matrix-multiply path (fma, mma, wgmma) from the Triton GPU IR.

Checks (exit status 1): every configuration plan() can choose for this arch (triton_split.LAUNCH_TABLE, and every
one-program kernel) compiled, fits its reference device's shared memory per block and per multiprocessor (sm_90: H100,
sm_80: A100) and spills at most triton_split.SPILL_BUDGET bytes a thread. Commit one report per Triton version and
arch; LAUNCH_TABLE is derived from the committed reports (--table), and tests/kernels/test_compile_table.py checks it
and plan()'s choices against them without compiling.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap

from . import fused, triton_rnn, triton_scan, triton_split
from .triton_split import BATCH_TILES, GATES, SPILL_BUDGET

LIMITS = {"rnn": fused.RNN, "lstm": fused.LSTM, "gru": fused.GRU}
DEVICES = {90: triton_split.H100_SXM, 80: triton_split.A100}  # the reference device of each compiled arch
LOWPS = (0, 1, 2)  # float32, bfloat16, float16 operands
SCAN_INPUTS = ("a_ptr", "b_ptr", "dout_ptr")  # the scan kernels' inputs in the layer's dtype (state and outputs fp32)


def _widths(limit):
    """Every padded width (a power of two, at least 16) a hidden size up to `limit` takes."""
    return [1 << k for k in range(4, 16) if 1 << k <= max(16, triton_rnn.triton.next_power_of_2(limit))]


def cases(arch=90):
    """(kernel name, constants, options, description) of every configuration a launcher can choose on `arch`."""
    for cell, module in LIMITS.items():
        for HP in _widths(module.max_fused_hidden):
            _, cfg = triton_rnn._config(1, HP)
            for lowp in LOWPS:
                for direction in ("forward", "backward"):
                    yield (f"{cell}_{direction}_kernel", dict(HP=HP, BB=cfg["BB"], LOWP=lowp),
                           dict(num_warps=cfg["num_warps"]),
                           dict(cell=cell, direction=direction, mode="one-program", KP=HP, BB=cfg["BB"], LOWP=lowp))
        for KP in _widths(module.max_split_hidden):
            for lowp in LOWPS:
                for mode, BB in [("stepwise", BATCH_TILES[0])] + [("persistent", BB) for BB in BATCH_TILES]:
                    cfg = triton_split.launch_config(GATES[cell], KP, BB, lowp, arch=arch)
                    options = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
                    for direction in ("forward", "backward"):
                        constants = dict(cfg, LOWP=lowp, PERSISTENT=mode == "persistent")
                        yield (f"{cell}_split_{direction}_kernel", constants, options,
                               dict(cell=cell, direction=direction, mode=mode, KP=KP, BB=BB, LOWP=lowp))
    # minGRU/minLSTM's scan (kernels.triton_scan): one program per (batch row, block of units), every block size
    for block in _widths(triton_scan.MAX_BLOCK):
        _, cfg = triton_scan._launch(1, block)
        for lowp in LOWPS:
            for direction in ("forward", "backward"):
                yield (f"scan_{direction}_kernel", dict(BLOCK=block), dict(num_warps=cfg["num_warps"]),
                       dict(cell="minrnn", direction=direction, mode="scan", KP=block, BB=1, LOWP=lowp))


def _kernel(name):
    return getattr(triton_split if "_split_" in name else triton_scan if name.startswith("scan_") else triton_rnn,
                   name)


def _source(kernel, constants, lowp=0):
    """An ASTSource for the launch specialization, for the Triton version installed (3.2's API or 3.3's and later).
    The recurrent kernels take LOWP among `constants` and fp32 pointers; the scan kernels have no LOWP and take their
    inputs in the layer's dtype (`lowp`: float32, bfloat16, float16)."""
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    constants = {**constants, **{flag: True for flag in ("RELU", "TRACK") if flag in names}}
    inputs = ("*fp32", "*bf16", "*fp16")[lowp] if "LOWP" not in names else "*fp32"

    def kind(n):
        if n in ("sync_ptr", "status_ptr"):
            return "*i32"
        return (inputs if n in SCAN_INPUTS else "*fp32") if n.endswith("_ptr") else "i32"
    pointers = [i for i, n in enumerate(names) if n.endswith("_ptr")]
    try:
        from triton.backends.compiler import AttrsDescriptor  # triton <= 3.2
    except ImportError:
        signature = {n: "constexpr" if n in constants else kind(n) for n in names}
        return ASTSource(kernel, signature, constants, {(i,): [["tt.divisibility", 16]] for i in pointers})
    signature = {n: kind(n) for n in names if n not in constants}
    return ASTSource(kernel, signature, constants, AttrsDescriptor.from_hints({i: 16 for i in pointers}))


def _mma(ttgir):
    if "warp_group_dot" in ttgir:
        return "wgmma"
    return "mma" if "nvidia_mma" in ttgir else "fma"


def _ptxas(arch):
    """The ptxas Triton itself compiles `arch` with (3.3 and later pick it per arch)."""
    from triton.backends.nvidia import compiler

    if hasattr(compiler, "get_ptxas"):
        return compiler.get_ptxas(arch).path
    return compiler._path_to_binary("ptxas")[0]


def compile_one(name, constants, options, arch, lowp=0):
    """Compile one configuration; its resources as a dict."""
    import triton
    from triton.backends.compiler import GPUTarget

    compiled = triton.compile(_source(_kernel(name), constants, lowp), target=GPUTarget("cuda", arch, 32),
                              options=options)
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "--dump-resource-usage", cubin],
                               capture_output=True, text=True, check=True).stdout
        fields = {k: int(v) for k, v in re.findall(r"(REG|STACK):(\d+)", usage)}
        spills = 0
        if fields["STACK"]:  # how much of the stack frame is spilling: ptxas -v on the same PTX
            ptx = os.path.join(tmp, "k.ptx")
            with open(ptx, "w") as f:
                f.write(compiled.asm["ptx"])
            gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
            log = subprocess.run([_ptxas(arch), "-v", f"--gpu-name={gpu}", ptx, "-o",
                                  os.path.join(tmp, "v.cubin")], capture_output=True, text=True, check=True)
            spills = int(re.search(r"(\d+) bytes spill stores", log.stdout + log.stderr).group(1))
    return {"num_warps": options["num_warps"], "num_stages": compiled.metadata.num_stages,
            "shared_bytes": compiled.metadata.shared, "registers": fields["REG"], "stack_bytes": fields["STACK"],
            "spill_store_bytes": spills, "mma": _mma(compiled.asm.get("ttgir", ""))}


def _compile_row(case_and_arch):
    (name, constants, options, row), arch = case_and_arch
    return {"kernel": name, **row, **compile_one(name, constants, options, arch, row["LOWP"])}


def key(row):
    """A configuration, the same in every report: kernel, mode and sizes."""
    return (row["kernel"], row["mode"], row["KP"], row["BB"], row["LOWP"])


def choosable(arch):
    """The keys of every configuration plan() and the one-program launcher can choose on `arch`'s reference device."""
    device = DEVICES[arch]
    for name, _, _, row in cases(arch):
        if row["mode"] in ("one-program", "scan"):
            yield key({"kernel": name, **row})
        elif row["mode"] in ("stepwise", "persistent"):
            tiles = triton_split.batch_tiles(device, GATES[row["cell"]], row["KP"], row["LOWP"])
            if row["BB"] in (tiles[:1] if row["mode"] == "stepwise" else tiles):
                yield key({"kernel": name, **row})


def problems(rows, arch):
    """Why a configuration plan() can choose on `arch` would fail there; empty when none would."""
    device, by_key, out = DEVICES[arch], {key(r): r for r in rows}, []
    for k in sorted(set(choosable(arch))):
        row = by_key.get(k)
        if row is None:
            out.append(f"{k}: not compiled")
        elif row["shared_bytes"] > device.shared_per_block or row["shared_bytes"] + 1024 > device.shared_per_sm:
            out.append(f"{k}: {row['shared_bytes']} bytes of shared memory, {device.name} gives a block "
                       f"{device.shared_per_block}")
        elif row["spill_store_bytes"] > SPILL_BUDGET:
            out.append(f"{k}: spills {row['spill_store_bytes']} bytes a thread, over the budget of {SPILL_BUDGET}")
    return out


def derive_table(reports):
    """LAUNCH_TABLE from reports: per compiled arch, (cell, LOWP) and KP, the shared KiB at each batch tile (worst over
    Triton versions, directions and modes), or None where a kernel is missing, over the reference device's shared
    memory or over the spill budget in any report."""
    table = {}
    for arch in sorted({r["arch"] for r in reports}):
        device, rows = DEVICES[arch], [row for r in reports if r["arch"] == arch for row in r["kernels"]]
        split = [row for row in rows if row["mode"] in ("stepwise", "persistent")]
        for cell, LOWP, KP in sorted({(r["cell"], r["LOWP"], r["KP"]) for r in split}):
            tiles = []
            for BB in BATCH_TILES:
                modes = ("stepwise", "persistent") if BB == BATCH_TILES[0] else ("persistent",)
                found = [r for r in split if (r["cell"], r["LOWP"], r["KP"], r["BB"]) == (cell, LOWP, KP, BB)
                         and r["mode"] in modes]
                expected = 2 * len(modes) * sum(r["arch"] == arch for r in reports)
                shared = max((r["shared_bytes"] for r in found), default=math.inf)
                fits = (len(found) == expected and all(r["spill_store_bytes"] <= SPILL_BUDGET for r in found)
                        and shared <= device.shared_per_block and shared + 1024 <= device.shared_per_sm)
                tiles.append(-(-shared // 1024) if fits else None)
            table.setdefault(arch, {}).setdefault((cell, LOWP), {})[KP] = tuple(tiles)
    return table


def format_table(table, reports):
    lines = ["LAUNCH_TABLE = {"]
    for arch, cells in table.items():
        versions = ", ".join(sorted({r["triton"] for r in reports if r["arch"] == arch}))
        lines.append(f"    {arch}: {{  # sm_{arch}, {DEVICES[arch].name} limits; triton {versions}")
        for cell_lowp, widths in cells.items():
            body = ", ".join(f"{KP}: {tuple(t)}" for KP, t in widths.items())
            lines += textwrap.wrap(f"{cell_lowp!r}: {{{body}}},", 120, initial_indent=" " * 8,
                                   subsequent_indent=" " * 12)
        lines.append("    },")
    return "\n".join(lines + ["}"])


def paths_markdown(batches=(1, 16, 64, 128, 256), dtypes=(("fp32", 0), ("bf16/fp16", 1))):
    """A markdown table of the path plan() takes on each reference device at the padded widths of the split kernels:
    mode and batch tile per batch size (docs/kernels.md)."""
    out = []
    for device in triton_split.REFERENCE_DEVICES:
        out += [f"**{device.name}** (sm_{device.arch}, {device.multiprocessors} SMs, "
                f"{device.shared_per_block // 1024} KiB shared memory a block)", "",
                "| cell | H | operands | " + " | ".join(f"B={B}" for B in batches) + " |",
                "|---|---|---|" + "---|" * len(batches)]
        for cell, module in LIMITS.items():
            for KP in (KP for KP in _widths(module.max_split_hidden) if KP > module.max_fused_hidden):
                for name, lowp in dtypes:
                    cells = []
                    for B in batches:
                        try:
                            mode, grid, cfg = triton_split.plan(B, KP, GATES[cell], device, lowp)
                            cells.append(f"{mode} {cfg['BB']}")
                        except ValueError:
                            cells.append("does not fit")
                    lo = max(module.max_fused_hidden, KP // 2) + 1
                    out.append(f"| {cell} | {lo}-{KP} | {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def load_reports(paths):
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    return reports


def _report_to_update(path, arch, version):
    """The report at `path`, if it was compiled for `arch` by this Triton version; else exit 2 saying why."""
    try:
        [report] = load_reports([path])
    except (OSError, ValueError) as e:
        why = f"cannot read it ({e})"
    else:
        if (report.get("arch"), report.get("triton")) == (arch, version):
            return report
        why = (f"it holds sm_{report.get('arch')} under triton {report.get('triton')}; this run compiles sm_{arch} "
               f"under triton {version} (pass --arch, or use that Triton's environment)")
    print(f"compile_report: error: --update {path}: {why}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqbench.kernels.compile_report", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(DEVICES), help="compute capability: 90, 80")
    parser.add_argument("--out", help="directory (or .json file) to write the report to")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compilations")
    parser.add_argument("--table", nargs="+", metavar="REPORT", help="print LAUNCH_TABLE derived from these reports")
    parser.add_argument("--paths", action="store_true", help="print the paths plan() takes (markdown) and exit")
    parser.add_argument("--match", help="only configurations whose kernel name and sizes match this regex (no check)")
    parser.add_argument("--update", metavar="REPORT",
                        help="compile only the configurations this report (same arch and Triton version) lacks, e.g. "
                             "a kernel added since it was written, and write it back with them")
    args = parser.parse_args(argv)
    if args.paths:
        print(paths_markdown())
        return 0
    if args.table:
        reports = load_reports(sorted(p for pattern in args.table for p in glob.glob(pattern)))
        print(format_table(derive_table(reports), reports))
        return 0
    import triton

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the launch default; also silences triton 3.9's warning
    command = "python -m seqbench.kernels.compile_report " + " ".join(argv or sys.argv[1:])
    old = _report_to_update(args.update, args.arch, triton.__version__) if args.update else None
    done = {key(r) for r in old["kernels"]} if old else set()
    todo = [(case, args.arch) for case in cases(args.arch)
            if (not args.match or re.search(args.match, f"{case[0]} {case[3]}"))
            and key({"kernel": case[0], **case[3]}) not in done]
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        rows = []
        for row in pool.map(_compile_row, todo):
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if old:  # the report as it was, plus the new rows and the command that compiled them
        doc = {**old, "kernels": old["kernels"] + rows, "updated_by": [*old.get("updated_by", []), command]}
        rows, args.out = doc["kernels"], args.update
    else:
        doc = {"arch": args.arch, "triton": triton.__version__, "device_limits": DEVICES[args.arch].__dict__,
               "spill_budget": SPILL_BUDGET, "command": command, "kernels": rows}
    if args.out:
        path = args.out
        if not path.endswith(".json"):
            path = os.path.join(path, f"sm{args.arch}-triton{triton.__version__}.json")
        with open(path, "w") as f:  # one line per kernel, for readable diffs
            head = json.dumps({k: v for k, v in doc.items() if k != "kernels"}, indent=1)[:-2]
            f.write(head + ',\n "kernels": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n ]\n}\n")
        print(f"wrote {path} ({len(todo)} configurations compiled now)")
    found = [] if args.match else problems(rows, args.arch)
    for line in found:
        print(f"FAIL {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
