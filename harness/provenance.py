"""Where and with what a run was made: enough to rerun it from its record six months later."""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import hashlib
import importlib
import importlib.metadata
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parents[1]  # the repository root in a checkout; site-packages/seqbench installed


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """Commit and dirty flag of the code that runs, and where they come from (`commit_source`): the git checkout
    it runs from, else the commit baked into the package when it was built (seqbench/_build.py, see setup.py), else
    null (a build from a tree that was not a git checkout)."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        # Only when SOURCE is the top of a checkout: an installed copy inside some other repository (a venv in a
        # project folder) must not record that repository's commit.
        if Path(git("rev-parse", "--show-toplevel")).resolve() == SOURCE:
            # results/ holds records, not code: new records there must not mark the runs writing them as dirty
            return {"commit": git("rev-parse", "HEAD"),
                    "dirty": bool(git("status", "--porcelain", "--", ".", ":!results")), "commit_source": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from seqbench import _build
        return {"commit": _build.commit, "dirty": _build.dirty, "commit_source": "build"}
    except ImportError:
        return {"commit": None, "dirty": None, "commit_source": None}


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 (16 hex digits) of the Python source of seqbench's packages as this process loaded them: two machines
    with equal digests run the same code, whatever their commit or dirty flag say (a Ray sweep checks it per node)."""
    digest = hashlib.sha256()
    for name in ("harness", "kernels", "tasks"):
        folder = Path(importlib.import_module(f"seqbench.{name}").__file__).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{name}/{path.relative_to(folder).as_posix()}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def command_line() -> str:
    """This process's command line, as the user typed it (`seqbench sweep ...`)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def seqbench_version() -> str:
    """The installed distribution's version, else (a checkout run without installing) the package's own."""
    from seqbench import __version__
    return _version("seqbench") or __version__


@functools.lru_cache(maxsize=None)  # a metadata lookup takes about a millisecond; a Ray task records two per run
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that name instruction sets torch, MKL or oneDNN pick kernels by (x86 and Arm): another set,
#: another kernel, other float sums
ISA_PREFIXES = ("sse4", "avx", "fma", "f16c", "amx", "asimd", "sve", "bf16", "i8mm")
#: environment variables that override which instruction set torch, MKL or oneDNN dispatch to
DISPATCH_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE",
                "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@functools.lru_cache(maxsize=1)  # read once per process: a sweep worker or a Ray task records it for every run
def cpu_identity() -> dict:
    """The CPU as far as a run's bits depend on it: its identity (vendor, family, model, stepping: a hypervisor may
    report only a generic model name, as "AMD EPYC"), its instruction sets, and the kernels torch dispatches to on it.
    Null where this system does not say (only Linux's /proc/cpuinfo is read). MKL and oneDNN pick their kernels from
    the same instruction sets (or the variables in `dispatch_env`); torch does not report their choice."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return identity(parse_cpuinfo(text))


def identity(info: dict) -> dict:
    """`cpu_identity` from /proc/cpuinfo's entries for one processor (x86 or Arm names)."""
    flags = sorted(set((info.get("flags") or info.get("Features") or "").split()))
    config = torch.__config__.show()

    def number(*keys):  # x86 gives decimal, Arm hexadecimal ("0xd0c")
        text = next((info[k] for k in keys if k in info), "")
        with contextlib.suppress(ValueError):
            return int(text, 16 if text.lower().startswith("0x") else 10)
        return None

    def built(pattern):
        match = re.search(pattern, config)
        return match.group(1) if match else None

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "arch": platform.machine(),
        "vendor_id": info.get("vendor_id") or info.get("CPU implementer"),
        "family": number("cpu family", "CPU architecture"),
        "model": number("model", "CPU part"),
        "stepping": number("stepping", "CPU variant"),
        "model_name": info.get("model name"),
        "flags_sha256": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16] if flags else None,
        "isa": [f for f in flags if f.startswith(ISA_PREFIXES)],
        "physical_cores": _physical_cores(),
        "logical_cpus": os.cpu_count(),
        "torch_capability": capability,
        "blas": built(r"BLAS_INFO=(\w+)"),
        "mkl": built(r"Math Kernel Library Version ([\d.]+)") if torch.backends.mkl.is_available() else None,
        "onednn": built(r"(?:MKL-DNN|oneDNN) v([\w.]+)") if torch.backends.mkldnn.is_available() else None,
        "dispatch_env": {k: os.environ[k] for k in DISPATCH_ENV if k in os.environ},
    }


def parse_cpuinfo(text: str) -> dict:
    """The first processor's entries in /proc/cpuinfo's `text` (every processor of a machine is the same model)."""
    info = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _physical_cores() -> int | None:
    """Cores, not hardware threads: the distinct sibling sets of the online CPUs (Linux sysfs), or null."""
    cores = set()
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list"):
        with contextlib.suppress(OSError):
            cores.add(path.read_text().strip())
    return len(cores) or None


def device_info(device: str) -> dict:
    """The device, and the process settings that can change a run's bits on it (threads, deterministic modes)."""
    common = {"torch_threads": torch.get_num_threads(),
              "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return {"device": "cuda", "device_name": props.name, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), "gpu_memory_bytes": props.total_memory, **common,
                "cudnn_deterministic": torch.backends.cudnn.deterministic,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    return {"device": "cpu", "device_name": cpu_model(), **common}


def provenance(device: str) -> dict:
    return {
        **git_state(),
        "source_digest": source_digest(),
        "seqbench": seqbench_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        **device_info(device),
        "cpu_model": cpu_model(),  # the model name alone: kept for older records and readers; `cpu` identifies it
        "cpu": copy.deepcopy(cpu_identity()),  # the cached one stays as read, whatever a caller does to its record
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
    }
