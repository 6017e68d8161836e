"""Where and with what a run was made: enough to rerun it from its record six months later."""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """Commit and dirty flag of the seqbench source tree (null when not run from a git checkout)."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        # results/ holds records, not code: new records there must not mark the runs writing them as dirty
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", ".", ":!results"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


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
        "seqbench": _version("seqbench"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        **device_info(device),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
