"""What the Ray tests share: the loopback check, and a frozen copy of seqbench for Ray workers to import."""

import shutil
import socket
from pathlib import Path

import seqbench
from seqbench.harness.provenance import source_digest

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def frozen_seqbench(folder: Path) -> Path:
    """A copy of seqbench's source in `folder`, taken when this process's source digest is: Ray workers started with
    `folder` first on their path import it instead of the working tree, so edits made to the tree while the tests run
    (other sessions share it) do not make them run other code than the driver, which the executor would refuse."""
    for _ in range(5):
        digest = source_digest.__wrapped__()
        copy = folder / "seqbench"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(Path(seqbench.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("harness", "kernels", "tasks"):
            source = Path(__import__(f"seqbench.{name}", fromlist=["_"]).__file__).parent
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        if source_digest.__wrapped__() == digest:  # nothing changed while copying
            source_digest.cache_clear()
            assert source_digest() == digest
            return copy
    raise RuntimeError("seqbench's source kept changing while it was copied")


def listening_hosts(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP `port` (from /proc/net/tcp and tcp6)."""
    hosts = set()
    for name, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            ip, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = b"".join(bytes.fromhex(ip[i:i + 8])[::-1] for i in range(0, len(ip), 8))
                hosts.add(socket.inet_ntop(family, raw))
    return hosts
