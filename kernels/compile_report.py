"""Compile every recurrent kernel for an NVIDIA architecture without a GPU and report its resources.

    python -m kernels.compile_report --arch 90 --out results/bench/compile/sm90.json

For each kernel, padded hidden size and operand precision the launchers would use: shared memory, registers per
thread, and spill stack (bytes a thread keeps in local memory), from Triton's compiler and the cuobjdump that ships
with it. This is how the size limits in kernels.fused were chosen; rerun it after changing a kernel or Triton.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import triton_rnn, triton_split

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def one_program_cases():
    for cell, HP in (("rnn", 128), ("lstm", 64), ("gru", 64)):
        for direction in ("forward", "backward"):
            for lowp in (0, 1):
                kernel = getattr(triton_rnn, f"{cell}_{direction}_kernel")
                _, cfg = triton_rnn._config(1, HP)
                yield kernel, {"HP": HP, "BB": cfg["BB"], "LOWP": lowp}, cfg["num_warps"]


def split_cases():
    for cell in ("rnn", "lstm", "gru"):
        for KP in (128, 256, 512) + ((1024,) if cell == "rnn" else ()):
            for direction in ("forward", "backward"):
                for lowp in (0, 1):
                    kernel = getattr(triton_split, f"{cell}_split_{direction}_kernel")
                    _, _, cfg = triton_split.plan(64, KP, GATES[cell], _NoGPU(), lowp)
                    constants = {"KP": KP, "HB": cfg["HB"], "BB": 16, "LOWP": lowp, "PERSISTENT": True}
                    yield kernel, constants, cfg["num_warps"]


class _NoGPU:
    type = "cpu"


def signature(kernel, constants):
    sig = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constants or name in ("RELU", "TRACK"):
            sig[name] = "constexpr"
        elif name == "sync_ptr":
            sig[name] = "*i32"
        else:
            sig[name] = "*fp32" if name.endswith("_ptr") else "i32"
    return sig


def compile_one(kernel, constants, num_warps, arch):
    params = inspect.signature(kernel.fn).parameters
    constants = {**constants, **{flag: True for flag in ("RELU", "TRACK") if flag in params}}
    source = ASTSource(kernel, signature(kernel, constants), constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(REG|STACK):(\d+)", usage))
    return {"kernel": kernel.fn.__name__, **{k: v for k, v in constants.items() if k in ("HP", "KP", "BB", "LOWP")},
            "num_warps": num_warps, "shared_bytes": compiled.metadata.shared, "registers": int(fields["REG"]),
            "spill_stack_bytes": int(fields["STACK"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.compile_report", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100/H200), 80 (A100)")
    parser.add_argument("--out", help="JSON file to write (default: print only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the launch default; also silences triton 3.9's warning
    rows = []
    for kernel, constants, num_warps in [*one_program_cases(), *split_cases()]:
        row = compile_one(kernel, constants, num_warps, args.arch)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        doc = {"arch": args.arch, "triton": triton.__version__, "command": " ".join(["python -m kernels.compile_report",
                                                                                     *(argv or sys.argv[1:])]),
               "kernels": rows}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
