"""`seqbench bench`: time recurrent layers per backend, forward and forward+backward, after checking each against the
float64 reference (no number is reported for a wrong kernel). GPU timings use triton.testing.do_bench (CUDA events,
warm-up, cache flush); CPU timings use the wall clock after a warm-up. Results go to `results/bench/<device>/`.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..kernels import as_reference, lru, mamba, minrnn
from ..kernels.testing import rel_err

from .config import DTYPE_NAMES
from .models import MODELS
from .models.configs import GATES as RECURRENT_GATES, MIN_GATES, SCAN_CELLS
from .models.minrnn import KERNEL_BACKENDS
from .models.recurrent import BACKENDS
from .provenance import git_state, provenance
from .records import write_json

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # what runs compute in (config.Dtype)
TOLERANCE = {"float32": 1e-3, "bfloat16": 3e-2}  # relative error vs float64, outputs and every gradient
GATES = {**RECURRENT_GATES, **MIN_GATES}  # the gated cells bench times


def _loop_or_scan_layer(cell: str, H: int, backend: str = "reference") -> torch.nn.Module:
    """A layer of the models whose backends are the step loop and a scan (torch: the scan in torch): minGRU, minLSTM,
    the LRU (state H) and Mamba (its default state and expansion), input and output width H."""
    kind = KERNEL_BACKENDS[backend]
    if cell == "lru":
        return lru.LRU(H, H, backend=kind)
    if cell == "mamba":
        return mamba.Mamba(H, backend=kind)
    return minrnn.LAYERS[cell.removeprefix("min")](H, H, backend=kind)


def make_inputs(cell: str, B: int, T: int, H: int, device, dtype, seed: int = 0):
    """A layer with torch.nn's init, its input (B, T, H) and an output-gradient weight, all from one seed."""
    torch.manual_seed(seed)
    layer = (_loop_or_scan_layer(cell, H) if cell in loop_or_scan_cells() else BACKENDS["torch"][cell](H, H, batch_first=True))
    layer = layer.to(device)
    x = torch.randn(B, T, H, device=device)
    w = torch.randn(B, T, H, device=device)  # the loss is <output, w>: every output position gets a gradient
    return layer.state_dict(), x, w


def loop_or_scan_cells() -> tuple[str, ...]:
    """The cells of the residual-block models (built by `_loop_or_scan_layer`, checked against their own float64 loop)."""
    return (*MIN_GATES, *SCAN_CELLS)


def build(cell: str, backend: str, state: dict, H: int, device, dtype) -> torch.nn.Module:
    if cell in loop_or_scan_cells():
        module = _loop_or_scan_layer(cell, H, backend).to(device)
    else:
        module = BACKENDS[backend][cell](H, H, batch_first=True).to(device)
    module.load_state_dict(state)
    return module.to(dtype)


def forward_backward(module, x, w):
    """(output, grads of input and every parameter) for the loss <output, w>."""
    x = x.detach().requires_grad_(True)
    out = module(x)[0]
    grads = torch.autograd.grad((out.float() * w).sum(), [x, *module.parameters()])
    return out, grads


def check(module, reference, x, w, dtype: str) -> float:
    """Largest relative error of the output and every gradient against the float64 reference."""
    out, grads = forward_backward(module, x.to(DTYPES[dtype]), w)
    ref_out, ref_grads = forward_backward(reference, x.double(), w.double())
    errors = [rel_err(ref_out, out.double())] + [rel_err(r, g.double()) for r, g in zip(ref_grads, grads)]
    return max(errors)


def timeit(fn, device: torch.device) -> tuple[float, float, float]:
    """(median, p20, p80) seconds per call."""
    if device.type == "cuda":
        from triton.testing import do_bench

        ms = do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        return tuple(v / 1e3 for v in ms)
    fn()  # warm-up: allocations, oneDNN primitive creation
    times, start = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 1.0 and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=10)
    return statistics.median(times), q[1], q[7]


# Device ceilings from the vendors' datasheets (dense, no sparsity): FLOP/s by arithmetic and memory bytes/s. In float32
# the fused kernels' recurrence is IEEE fp32 (CUDA cores) while cuDNN uses TF32 tensor cores when
# torch.backends.cudnn.allow_tf32 is set (torch's default); in bfloat16 both use bf16 tensor cores.
CEILINGS = {  # matched in order against the lower-cased GPU name
    "h200": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "bytes": 4.8e12},
    "h100 pcie": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "bytes": 2.0e12},
    "h100": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "bytes": 3.35e12},  # SXM5 ("H100 80GB HBM3")
    "a100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "bytes": 2.0e12},
}


def kernels(fn, device: torch.device, top: int = 6) -> list[dict]:
    """What ran in one call of `fn`, from torch.profiler: on a GPU the device kernels (whose names tell which cuDNN
    algorithm torch picked, e.g. a persistent or a per-step RNN kernel), on the CPU the operators; the `top` by time,
    each with its share of the total and how many times it was launched. Recorded beside each timed row."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    with kineto_notices_dropped():
        prof.start()
    try:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    finally:
        with kineto_notices_dropped():
            prof.stop()
    rows = []
    for e in prof.key_averages():
        if cuda:  # device kernels only: a CPU operator's "self" device time is its kernels' time again
            if getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA:
                continue
            us = getattr(e, "self_device_time_total", None)  # torch >= 2.4; self_cuda_time_total before
            us = getattr(e, "self_cuda_time_total", 0) if us is None else us
        else:
            us = e.self_cpu_time_total
        if us > 0:
            rows.append({"name": e.key, "us": us, "calls": e.count})
    total = sum(r["us"] for r in rows) or 1.0
    rows.sort(key=lambda r: -r["us"])
    return [{"name": r["name"], "share": round(r["us"] / total, 4), "calls": r["calls"]} for r in rows[:top]]


#: what kineto prints (to stderr, from C++) each time a profiler starts or stops: "USDT:<time> <pid>:<tid>
#: SyncActivityProfilerHandler.cpp:52] profiler_start", two lines per timed row. Lines of its USDT level are tracing
#: markers, never errors; its log level cannot silence them alone: USDT is kineto's highest level, above ERROR, so a
#: KINETO_LOG_LEVEL high enough to drop them would drop its errors too.
KINETO_NOTICE = re.compile(rb"^USDT:")


@contextlib.contextmanager
def kineto_notices_dropped():
    """Around a profiler's start or stop (never around the code it times): the C-level stdout and stderr go to a
    temporary file, then everything written there but kineto's start/stop notices goes on where it was going."""
    redirected = []
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        _flush(stream)
        with contextlib.suppress(OSError):  # a closed descriptor: nothing to redirect
            redirected.append((fd, stream, os.dup(fd), tempfile.TemporaryFile()))
            os.dup2(redirected[-1][3].fileno(), fd)
    try:
        yield
    finally:
        for fd, stream, original, caught in redirected:
            _flush(stream)
            os.dup2(original, fd)
            os.close(original)
            caught.seek(0)
            kept = b"".join(line for line in caught if not KINETO_NOTICE.match(line))
            caught.close()
            while kept:
                kept = kept[os.write(fd, kept):]


def _flush(stream) -> None:
    with contextlib.suppress(AttributeError, ValueError, OSError):  # None, or closed
        stream.flush()


def ceilings(device_name: str) -> dict | None:
    name = device_name.lower()
    return next((dict(v, matched=k) for k, v in CEILINGS.items() if k in name), None)


def floor(cell: str, B: int, H: int, dtype: str, passes: str = "fwd") -> dict:
    """The least work a time step of one layer (input size H) must do, whatever the implementation.

    FLOPs: the input projection and the recurrent matmul, 2*B*G*H*(I + H); backward does twice that again (the
    gradients of the inputs/states and of the weights), so fwd+bwd is 3x. Bytes: read x_t and write h_t in the storage
    dtype (weights stay on chip, state in registers); fwd+bwd also reads dout_t and writes dx_t, and must read x_t and
    h_t again for the weight gradients: 3x. minGRU/minLSTM have no recurrent matmul (their gates read x_t only): the
    input projection 2*B*G*H*I alone, the same bytes; the scan itself is a few elementwise operations per unit. The
    LRU and Mamba likewise: their projections (`step_weights`).
    """
    size, scale = 2 if dtype == "bfloat16" else 4, 3 if passes == "fwd+bwd" else 1
    return {"flops_per_step": scale * 2 * B * step_weights(cell, H),
            "bytes_per_step": scale * (B * H + B * H) * size}


def step_weights(cell: str, H: int) -> int:
    """The weights a time step of one layer (input size H) multiplies by: G·H·(H + H) for a gated cell (input and
    recurrent matrices), G·H·H for minGRU/minLSTM (input projections only), the LRU's B and C (4H² at state H: real
    and imaginary), Mamba's projections (W_in, W_x, W_dt, W_out; its scan and convolution are elementwise)."""
    if cell in RECURRENT_GATES:
        return GATES[cell] * H * 2 * H
    if cell in MIN_GATES:
        return GATES[cell] * H * H
    if cell == "lru":
        return 4 * H * H
    return MODELS[cell](hidden=H).projection_params()


def floor_time(row: dict, ceiling: dict | None) -> dict:
    """Floor time per step over the device's ceilings (fp32 CUDA-core FLOP/s for float32 rows, bf16 tensor-core for
    bfloat16 rows: the fastest arithmetic the dtype allows) and how far the measured time is from it."""
    if not ceiling:
        return {}
    flops = ceiling["bf16" if row["dtype"] == "bfloat16" else "fp32"]
    compute, memory = row["flops_per_step"] / flops, row["bytes_per_step"] / ceiling["bytes"]
    out = {"floor_us_per_step": max(compute, memory) * 1e6, "floor_bound": "compute" if compute >= memory else "memory"}
    if "us_per_step" in row:
        out["x_floor"] = row["us_per_step"] / out["floor_us_per_step"]
    return out


def bench_one(cell, backend, B, T, H, dtype, device) -> dict:
    state, x, w = make_inputs(cell, B, T, H, device, dtype)
    module = build(cell, backend, state, H, device, DTYPES[dtype])
    reference = (build(cell, "reference", state, H, device, torch.float64) if cell in loop_or_scan_cells()
                 else as_reference(build(cell, "torch", state, H, device, torch.float32)).double())
    row = {"cell": cell, "backend": backend, "batch": B, "hidden": H, "length": T, "dtype": dtype,
           # float32 on a GPU: whether cuDNN/cuBLAS were allowed TF32 (torch's flags) for this row; else None
           "tf32_allowed": torch.backends.cudnn.allow_tf32 if dtype == "float32" and device != "cpu" else None}
    err = check(module, reference, x, w, dtype)
    path = getattr(module, "last_path", None)
    row.update(max_rel_err=err, path=path if isinstance(path, str) else type(module).__module__)
    if not err <= TOLERANCE[dtype]:
        return {**row, "error": f"relative error {err:.2e} > {TOLERANCE[dtype]:g}: not timed"}
    xd = x.to(DTYPES[dtype])
    rows = []
    for name, fn in (("fwd", lambda: module(xd)), ("fwd+bwd", lambda: forward_backward(module, xd, w))):
        with torch.no_grad() if name == "fwd" else torch.enable_grad():
            median, p20, p80 = timeit(fn, torch.device(device))
            ran = kernels(fn, torch.device(device))
        timed = {**row, **floor(cell, B, H, dtype, name), "pass": name, "median_us": median * 1e6,
                 "p20_us": p20 * 1e6, "p80_us": p80 * 1e6, "us_per_step": median * 1e6 / T,
                 "tokens_per_s": B * T / median, "kernels": ran}
        rows.append({**timed, **floor_time(timed, ceilings(device_name(device)))})
    return rows


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"


def device_slug(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def machine(device: str) -> dict:
    info = provenance(device)
    if device == "cuda":
        import subprocess

        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
        info["driver"] = driver or None
        info["ceilings"] = ceilings(device_name(device))
    # float32 rows: cuDNN uses TF32 tensor cores when allowed (torch's default); the fused kernels never do
    info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def run_bench(cells, backends, batches, hiddens, lengths, dtypes, device, out: Path, say=print, tf32=True,
              command: str | None = None) -> Path:
    """Every combination, checked then timed; JSON to out/<device>/ with `command` (the command line that made it).
    tf32=False turns TF32 off in cuDNN and cuBLAS for the run (torch's settings are restored after), so float32 rows
    compare IEEE products on every backend."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if not tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _run_bench(cells, backends, batches, hiddens, lengths, dtypes, device, Path(out), say, command)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _run_bench(cells, backends, batches, hiddens, lengths, dtypes, device, out: Path, say, command) -> Path:
    """The file is rewritten (atomically) after every configuration, `"complete": false` until the last: a run cut
    off by a time limit or a crash keeps every row it measured."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(out) / device_slug(device)
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"bench-{stamp}.json", 1
    while path.exists():  # two runs in one second: never overwrite a result
        path, n = folder / f"bench-{stamp}-{n}.json", n + 1
    head = {"command": command, "machine": machine(device), "commit": git_state()["commit"]}
    results = []
    write_json(path, {**head, "complete": False, "results": results})
    for cell, backend, B, H, T, dtype in itertools.product(cells, backends, batches, hiddens, lengths, dtypes):
        rows = bench_one(cell, backend, B, T, H, dtype, device)
        for r in rows if isinstance(rows, list) else [rows]:
            results.append(r)
            say(_line(r))
        write_json(path, {**head, "complete": False, "results": results})
    write_json(path, {**head, "complete": True, "results": results})
    return path


def _line(r: dict) -> str:
    head = f"{r['cell']:<5} {r['backend']:<9} B={r['batch']:<4} H={r['hidden']:<4} T={r['length']:<5} {r['dtype']:<8}"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    floor = f"  {r['x_floor']:.1f}x floor" if "x_floor" in r else ""
    return (f"{head} {r['pass']:<8} {r['median_us']:>12.1f} us  [{r['p20_us']:.1f}, {r['p80_us']:.1f}]  "
            f"{r['us_per_step']:8.2f} us/step  {r['tokens_per_s']:>12,.0f} tok/s{floor}  ({r['path']})")
