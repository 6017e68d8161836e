"""The `ray` executor: each run a task on a Ray cluster, which needs no filesystem shared with the driver.

The driver claims each run while it is in flight and writes every file of its record (through harness/runs.py). A
Ray task trains in memory, ships each checkpoint to a mailbox actor beside the driver and returns the whole record;
the driver writes the checkpoints it collects into the runs' folders. When a task's worker or node dies, the driver
submits the run again with its latest checkpoint, to whatever node Ray picks; a new driver resumes runs from the
checkpoints the last one wrote (the same files the local executor writes and resumes from).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig
from ..records import MemoryWriter, checkpoint_bytes, read_checkpoint, record_head
from ..ray_mailbox import Mailbox
from ..resources import Resources
from ..runs import Busy, Outcome, ProgressEvent, Skipped, Todo, as_outcome, open_run
from .base import Plan, limit_threads

RAY_RETRIES = 3  # a run whose worker or node dies (or is stopped by a signal) is submitted again this often
POLL_S = 0.5  # the driver collects start notices and checkpoints this often
PENDING_NOTE_S = 30.0  # say why, when runs wait this long for resources with none of the sweep's runs running
STOP_GRACE_S = 20.0  # on Ctrl-C or SIGTERM, how long runs in flight get to checkpoint and return
MIN_WINDOW = 64  # runs in flight (claimed and submitted) at once at least, as far as the open-file limit allows
RESERVED = ("CPU", "GPU", "memory", "object_store_memory")


@dataclasses.dataclass(frozen=True)
class RayLink:
    """What a Ray task gets besides its config: the driver's mailbox, the driver's identity (code version and command
    line), the checkpoint to resume from (if any) and which attempt at the run this is."""

    box: Any
    driver: dict
    resume: bytes | None = None
    attempt: int = 1


class _ShippingWriter(MemoryWriter):
    """A Ray task's writer: the record stays in memory (returned at the end); each checkpoint goes to the driver's
    mailbox before training goes on."""

    def __init__(self, box, run_id: str, resume: dict | None):
        super().__init__()
        self.box, self.run_id, self.shipping = box, run_id, True
        if resume is not None:
            self.rows, self.profile_rows = list(resume["metrics"]), list(resume["profiles"])

    def checkpoint(self, state: dict) -> None:
        import ray

        if not self.shipping:
            return
        data = checkpoint_bytes(state, self.rows, self.profile_rows)
        try:
            ray.get(self.box.checkpoint.remote(self.run_id, state["loop"]["step"], data))
        except ray.exceptions.RayError as e:  # the mailbox is gone (its driver too, most likely): train on
            self.shipping = False
            warnings.warn(f"run {self.run_id}: checkpoints can no longer be shipped to the driver ({e}); "
                          "a retry would start again from step 0", stacklevel=2)


def driver_identity() -> dict:
    """The driver's code version and command line, which every Ray task checks and records."""
    from ..provenance import command_line, git_state, source_digest

    return {**git_state(), "source_digest": source_digest(), "command": command_line()}


def code_mismatch(worker: dict, driver: dict) -> str | None:
    """Why a worker's code is not the driver's, or None when both loaded the same source (equal source digests)."""
    if worker.get("source_digest") == driver.get("source_digest"):
        return None

    def version(p: dict) -> str:
        return (f"commit {(p.get('commit') or 'unknown')[:12]}{' (dirty)' if p.get('dirty') else ''}, "
                f"source {p.get('source_digest')}")

    node = worker.get("ray", {})
    return (f"code differs from the driver's: node {worker.get('hostname')} ({node.get('node_ip')}, node id "
            f"{str(node.get('node_id'))[:12]}) runs seqbench {version(worker)}, the driver {version(driver)}; the run "
            "was not trained. Install the driver's code on that node, then run the sweep again with --retry-failed")


def _ray_run(config: dict, threads: int, link: RayLink) -> dict:
    """A Ray task: train `config` in memory from `link.resume`, shipping new checkpoints to the driver, and return the
    whole record (`config` has its threads settled). A worker whose code is not the driver's trains nothing: the run
    is recorded failed, saying so."""
    import ray

    from ..provenance import provenance
    from ..train import RunInterrupted, run_record, stop_on_signals

    limit_threads(threads)
    cfg = RunConfig.model_validate(config)
    here = {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "worker_pid": os.getpid(), "attempt": link.attempt}
    started = {**provenance(cfg.device), "command": link.driver["command"], "ray": here}
    link.box.start.remote(cfg.run_id, started)  # a notice, not waited for: the driver learns the run is running
    refused = code_mismatch(started, link.driver)
    if refused:
        summary = {**record_head(cfg), "status": "failed", "error": refused, "config": cfg.canonical(),
                   "provenance": started}
        return {"rows": [], "profiles": [], "summary": summary, "started": started}
    ckpt = read_checkpoint(link.resume) if link.resume else None
    writer = _ShippingWriter(link.box, cfg.run_id, ckpt)
    with stop_on_signals() as stop:  # the driver's ray.cancel arrives as SIGINT: checkpoint after this step, return
        try:
            summary = run_record(cfg, writer, progress=False, ckpt=ckpt, stop=stop)
        except RunInterrupted as e:
            return {"interrupted": e.step, "started": started}
    summary["provenance"].update(command=link.driver["command"], ray=here)
    return {"rows": writer.rows, "profiles": writer.profile_rows, "summary": summary, "started": started}


def connect_ray(address: str | None):
    """Ray, connected to the cluster at `address`, or to a private local instance (on the loopback address only): one
    this process starts, never a cluster that RAY_ADDRESS or Ray's current-cluster file names (another user's, or a
    dead one left behind), which `ray.init()` without an address would join."""
    if address is None and "ray" not in sys.modules:
        # Ray's single-machine mode: every Ray process listens on 127.0.0.1, none on the machine's network addresses
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray: ray is not installed; pip install 'seqbench[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address:
            check_address(address)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(address=address or "local", **kwargs)
        except ConnectionError as e:
            raise ConfigError(f"{f'--ray-address {address}' if address else '--executor ray'}: {e}".splitlines()[0]) \
                from None
        if callable(previous):  # ray.init installs sys.exit for SIGTERM; seqbench's own handler stays
            signal.signal(signal.SIGTERM, previous)
    return ray


# Connecting to a cluster. Left to itself, ray.init keeps retrying an address whose GCS does not answer for many minutes
# (20 tries of about 40 s each), printing three warnings a try: a dead session's address in `auto`'s records, another
# user's Ray on the same machine, a port now used by something else. So the address is checked first: something must
# listen there (a TCP connection, 3 s), and a GCS must answer a Ray client's first request within CONNECT_DEADLINE_S.
# The client runs in a child process, so that its time is bounded whatever Ray's state in this one and its warnings
# stay off the terminal; it costs the driver about a second (importing Ray once more) per sweep.
CONNECT_DEADLINE_S = 15  # integer seconds (Ray reads its timeouts as integers)
IMPORT_ALLOWANCE_S = 30  # for the child process to start and import Ray, on top of the deadline
_GCS_PROBE = """
import sys

if sys.argv[2] == "auto":  # as ray.init does with an address that `auto` finds: this user's token, if there is one
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        pass
    else:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
from ray._raylet import GcsClient

client = GcsClient(address=sys.argv[1])  # fetches the cluster's id: the first request a driver makes
client.internal_kv_get(b"session_name", b"session")  # the second: what ray.init reads next
"""


def check_address(address: str) -> None:
    """Refuse `--ray-address address` (ConfigError, one line naming the address, what `auto` found there and why it
    cannot be used) unless a Ray cluster answers there: at HOST:PORT, or for `auto` at the address ray.init picks on
    this machine. Ray Client addresses (`ray://`) are left to Ray."""
    if "://" in address:
        return
    found, source = _auto_address() if address == "auto" else (address, None)
    if "://" in found:  # RAY_ADDRESS=ray://...
        return
    what = f"found {found} ({source}), but " if source else ""
    host, _, port = found.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address}: {what}expected HOST:PORT (the head node's GCS address, which "
                          f"`ray start --head` prints), auto or ray://HOST:PORT")
    why = _unreachable(found) or _gcs_silent(found, own_token=address == "auto" and source != _FROM_ENV)
    if why:
        raise ConfigError(f"--ray-address {address}: {what}no Ray cluster answers there ({why})")


_FROM_ENV = "in RAY_ADDRESS"


def _running_gcs() -> set[str]:
    """The GCS addresses of the raylets running on this machine, anyone's (Ray reads them off the processes' command
    lines)."""
    from ray._private.services import find_gcs_addresses

    return set(find_gcs_addresses())


def _address_file() -> Path:
    """Where `ray start` records the latest session's address (`ray_current_cluster` in Ray's temp folder, which
    RAY_TMPDIR moves)."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # Ray before 2.44
        from ray._private.utils import get_ray_address_file
    return Path(get_ray_address_file(None))


def _auto_address() -> tuple[str, str]:
    """What ray.init(address="auto") connects to, in Ray's order, and where it was found: RAY_ADDRESS; else the GCS of
    the one raylet running on this machine (whoever started it), or with several, the latest session's recorded address;
    else that recorded address. ConfigError when there is none."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env, _FROM_ENV
    running, file = sorted(_running_gcs()), _address_file()
    latest = file.read_text().strip() if file.is_file() else ""
    if running and not (len(running) > 1 and latest):
        others = f"; {len(running)} run here" if len(running) > 1 else ""
        return running[0], f"the GCS of a raylet running on this machine, whoever started it{others}"
    if latest:
        return latest, f"the latest Ray session's address, recorded in {file}"
    raise ConfigError(f"--ray-address auto: no Ray cluster found on this machine (RAY_ADDRESS is not set, no raylet "
                      f"runs here, no {file}); start one with `ray start --head`, or give --ray-address HOST:PORT")


def _unreachable(address: str) -> str | None:
    """Why nothing listens at a HOST:PORT address, or None."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return None


def _gcs_silent(address: str, own_token: bool) -> str | None:
    """Why no Ray GCS at a listening HOST:PORT answers a client within CONNECT_DEADLINE_S, or None when one does.
    `own_token`: the client uses this user's Ray token, if there is one, as ray.init does with an address that `auto`
    found on this machine (not with one given, as an argument or in RAY_ADDRESS)."""
    deadline = CONNECT_DEADLINE_S
    env = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": str(max(1, deadline // 4)),
           "RAY_py_gcs_connect_timeout_s": str(max(1, deadline // 2))}  # a client connects twice, then asks: ~deadline
    command = [sys.executable, "-c", _GCS_PROBE, address, "auto" if own_token else "given"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=deadline + IMPORT_ALLOWANCE_S)
    except subprocess.TimeoutExpired:
        return f"something listens, but no Ray GCS answered within {deadline} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1].rpartition("ray.exceptions.")[2] if lines else f"exit code {done.returncode}"
    return f"something listens, but a Ray client got no further within {deadline} s: {last}"


def ray_options(resources: Resources, threads: int, device: str) -> dict:
    """The Ray task options of one run: the run's resources (CPUs default to its thread count, GPUs to 1 on cuda)."""
    reserved = [name for name in resources.custom if name in RESERVED]
    if reserved:
        raise ConfigError(f"--resource {reserved[0]}: a resource Ray sets itself; use --cpus-per-run or --gpus-per-run")
    return {"num_cpus": resources.cpus_for(threads), "num_gpus": resources.gpus_for(device),
            "resources": dict(resources.custom), "max_retries": 0}  # the driver retries, with the latest checkpoint


def _need(options: dict) -> dict[str, float]:
    need = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options["resources"]}
    return {k: v for k, v in need.items() if v}


def _amounts(amounts: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in amounts.items()) or "nothing"


def unschedulable(need: dict[str, float], nodes: list[dict]) -> str | None:
    """Why no live node of the cluster (`ray.nodes()`) can hold a run asking for `need`; None when one can."""
    alive = [n for n in nodes if n.get("Alive")]
    if any(all(n["Resources"].get(k, 0) >= v for k, v in need.items()) for n in alive):
        return None
    shapes = collections.Counter(tuple((k, n["Resources"].get(k, 0)) for k in need) for n in alive)
    have = "; ".join(f"{count} node{'s' * (count > 1)} with {_amounts(dict(shape))}"
                     for shape, count in shapes.most_common(4)) or "no live node"
    return f"no node of the cluster has that much ({have})"


def _slots(need: dict[str, float], nodes: list[dict]) -> int:
    """How many runs asking for `need` the live nodes hold at once."""
    return sum(min((int(n["Resources"].get(k, 0) // v) for k, v in need.items()), default=1 << 20)
               for n in nodes if n.get("Alive"))


def _settled(configs: list[RunConfig], sweep_dir: Path, threads: int) -> Iterator[RunConfig]:
    from ..train import settle_threads

    return (settle_threads(c, sweep_dir / c.run_id, threads) for c in configs)


def check_ray(configs: list[RunConfig], sweep_dir: Path, threads: int, address: str | None,
              resources: Resources) -> int:
    """Connect to Ray and refuse (ConfigError) runs that no node of the cluster can hold, per node rather than in
    total; returns how many of them the cluster holds at once."""
    ray = connect_ray(address)
    nodes = ray.nodes()
    settled = _settled(configs, sweep_dir, resources.cpus or threads)
    needs = {tuple(_need(ray_options(resources, c.threads, c.device)).items()) for c in settled}
    for need in map(dict, needs):
        why = unschedulable(need, nodes)
        if why:
            raise ConfigError(f"--executor ray: each run asks for {_amounts(need)} (--cpus-per-run, --gpus-per-run, "
                              f"--resource or the spec's resources:; CPUs default to the run's threads) but {why}")
    return min((_slots(dict(need), nodes) for need in needs), default=1)


def _fd_budget() -> int:
    """How many runs the driver may hold claims for (one open file each): half the files left under its limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    return max(1, (soft - used) // 2)


@dataclasses.dataclass
class _Flight:
    """A run in flight: claimed by the driver (its `todo`), submitted to Ray, not yet recorded."""

    cfg: RunConfig
    config: dict  # cfg.canonical(), threads settled
    todo: Todo  # the run's folder, claimed
    options: dict
    started: bool = False
    ckpt_step: int | None = None  # the step of the checkpoint the driver last wrote
    result: Any = None  # what the task returned (or the exception it raised), once it has
    attempt: int = 1

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @property
    def returned(self) -> bool:
        """Whether the task returned the run's record (from then on the driver writes nothing else into its folder)."""
        return isinstance(self.result, dict) and "summary" in self.result


class _RaySweep:
    """The driver's side of a Ray sweep: claims, submissions, collecting from the mailbox, writing records."""

    def __init__(self, ray, sweep_dir: Path, threads: int, resources: Resources, fn, on_progress, rerun, slots: int):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.dir, self.resources = ray, sweep_dir, resources
        self.threads = resources.cpus or threads  # for runs that have not recorded their own
        self.on_progress, self.rerun, self.remote = on_progress, rerun, ray.remote(fn)
        beside_driver = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.box = ray.remote(Mailbox).options(num_cpus=0, max_concurrency=64, max_restarts=-1, max_task_retries=-1,
                                               scheduling_strategy=beside_driver).remote()
        self.link = RayLink(self.box, driver_identity())
        self.first_link = ray.put(self.link)  # stored once, not pickled into every task
        self.flights: dict[Any, _Flight] = {}  # task ref -> run
        self.by_id: dict[str, _Flight] = {}  # every run claimed and not yet recorded
        self.forget: list[str] = []  # runs recorded since the last collect
        self.tasks: dict[tuple, Any] = {}
        self.other_code: set[str] = set()
        self.stopping, self.collecting, self.last_collect, self.last_note = False, None, 0.0, -math.inf
        self.last_event = time.monotonic()
        self.window = min(max(2 * slots, MIN_WINDOW), _fd_budget())
        if self.window < slots:
            print(f"ray: at most {self.window} runs in flight at once, under this process's open-file limit "
                  f"({resource.getrlimit(resource.RLIMIT_NOFILE)[0]}); the cluster holds {slots}: raise `ulimit -n` "
                  "to use it all", file=sys.stderr, flush=True)

    # --- submitting ---------------------------------------------------------------------------------------------
    def submit(self, cfg: RunConfig) -> Outcome | None:
        """Claim `cfg`'s run and hand it to Ray; or its outcome when it is not to run here (busy, already finished)."""
        from ..train import settle_threads

        opened = open_run(self.dir, cfg, rerun=cfg.run_id in self.rerun)
        if isinstance(opened, (Busy, Skipped)):
            return opened.outcome
        cfg = settle_threads(cfg, opened.run_dir, self.threads)
        resume = None if opened.checkpoint_path is None else opened.checkpoint_path.read_bytes()
        flight = _Flight(cfg, cfg.canonical(), opened, ray_options(self.resources, cfg.threads, cfg.device))
        self.by_id[cfg.run_id] = flight
        self._launch(flight, resume)
        return None

    def _launch(self, flight: _Flight, resume: bytes | None) -> None:
        key = tuple(sorted((k, str(v)) for k, v in flight.options.items()))
        if key not in self.tasks:
            self.tasks[key] = self.remote.options(**flight.options)
        link = (self.first_link if resume is None and flight.attempt == 1
                else dataclasses.replace(self.link, resume=resume, attempt=flight.attempt))
        self.flights[self.tasks[key].remote(flight.config, flight.cfg.threads, link)] = flight

    # --- collecting -----------------------------------------------------------------------------------------------
    def step(self) -> Iterator[dict]:
        """Wait up to POLL_S for runs to return; record those that did, write the checkpoints that came in."""
        refs = list(self.flights)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
        if ready and len(refs) > 1:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        returned = self._take_all(ready)
        self.collect()
        for flight in returned:
            summary = self._finish(flight)
            if summary is not None:
                yield summary
        self._note_pending()

    def _take_all(self, refs: list) -> list[_Flight]:
        try:
            results = self.ray.get(refs)  # one call for all: Ray's cost per call counts over thousands of short runs
        except Exception:  # a task failed: get them one by one
            return [self._take(ref) for ref in refs]
        flights = [self.flights.pop(ref) for ref in refs]
        for flight, result in zip(flights, results):
            flight.result, flight.started = result, True
        return flights

    def _take(self, ref) -> _Flight:
        flight = self.flights.pop(ref)
        try:
            flight.result = self.ray.get(ref)
        except Exception as e:  # its worker or node died, it was cancelled, or it raised
            flight.result = e
        flight.started = True
        return flight

    def collect(self, wait: bool = False) -> None:
        """Write the runs' start notices (config.json, started.json) and checkpoints that reached the mailbox: asks
        it every POLL_S and takes its answer when it has come, or (`wait`) everything it holds now."""
        if self.collecting is not None and (wait or self.ray.wait([self.collecting], timeout=0)[0]):
            self._apply(self.collecting)
        if wait:
            self._apply(self.box.collect.remote(self._forgotten()))
        elif self.collecting is None and time.monotonic() - self.last_collect >= POLL_S:
            self.collecting, self.last_collect = self.box.collect.remote(self._forgotten()), time.monotonic()

    def _forgotten(self) -> list[str]:
        forget, self.forget = self.forget, []
        return forget

    def _apply(self, ref) -> None:
        self.collecting = None
        try:
            starts, fresh = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the mailbox is gone: records still come back, checkpoints not
            print(f"ray: the mailbox for checkpoints failed ({type(e).__name__}); runs in flight will not resume "
                  "from newer checkpoints", file=sys.stderr, flush=True)
            return
        for run_id, info in starts:
            flight = self.by_id.get(run_id)
            if flight is None:
                continue
            flight.started, self.last_event = True, time.monotonic()
            self._note_code(info)
            if not flight.returned:
                flight.todo.write_start(flight.config, info)
            self.on_progress(ProgressEvent(run_id, 0, flight.cfg.train.steps))
        for run_id, (step, data) in fresh.items():
            flight = self.by_id.get(run_id)
            if flight is None or flight.returned or not flight.todo.write_checkpoint(flight.config, data):
                continue
            flight.ckpt_step = step
            self.on_progress(ProgressEvent(run_id, step, flight.cfg.train.steps))

    def _note_code(self, info: dict) -> None:
        node = info["ray"]["node_id"]
        if node not in self.other_code and code_mismatch(info, self.link.driver):
            self.other_code.add(node)
            print(f"ray: node {info['hostname']} ({info['ray']['node_ip']}) runs other code than the driver "
                  f"(source {info.get('source_digest')}, driver {self.link.driver.get('source_digest')}): its runs "
                  "are recorded failed, untrained", file=sys.stderr, flush=True)

    def _note_pending(self) -> None:
        """Say why, when the sweep's runs have waited PENDING_NOTE_S for resources with none of them running."""
        now = time.monotonic()
        waiting = [f for f in self.by_id.values() if not f.started]
        if (not waiting or len(waiting) < len(self.by_id) or now - self.last_event < PENDING_NOTE_S
                or now - self.last_note < PENDING_NOTE_S):
            return
        self.last_note = now
        need = _need(waiting[0].options)
        why = unschedulable(need, self.ray.nodes())
        if why is None:
            free, total = self.ray.available_resources(), self.ray.cluster_resources()
            why = (f"free now {_amounts({k: free.get(k, 0) for k in need})} of "
                   f"{_amounts({k: total.get(k, 0) for k in need})} in the cluster: other jobs, tasks or actors hold "
                   "the rest")
        print(f"ray: {len(waiting)} runs waiting {now - self.last_event:.0f} s for resources, none running: each asks "
              f"for {_amounts(need)}; {why}", file=sys.stderr, flush=True)

    # --- recording ------------------------------------------------------------------------------------------------
    def _finish(self, flight: _Flight) -> dict | None:
        """Record a run whose task returned; None when it goes on (resubmitted) or stays unfinished (stopping)."""
        result, steps = flight.result, flight.cfg.train.steps
        if isinstance(result, dict):
            self._note_code(result["started"])
        if isinstance(result, BaseException) or "interrupted" in result:
            if self.stopping:
                return None
            if self._retry(flight):
                return None
            why = (f"{type(result).__name__}: {result}".splitlines()[0] if isinstance(result, BaseException)
                   else "stopped by a signal to its worker (node drained or preempted?)")
            summary = flight.todo.fail(f"ray task failed on attempt {flight.attempt}: {why}")
        else:
            summary = flight.todo.write_record(flight.config, result)
        self._release(flight)
        self.on_progress(ProgressEvent(flight.run_id, steps, steps))
        return as_outcome(summary)

    def _retry(self, flight: _Flight) -> bool:
        """Submit a run again whose worker or node died (or whose worker was stopped by a signal), from its latest
        checkpoint; False when its own code raised, or it has had RAY_RETRIES retries."""
        error = flight.result
        if flight.attempt > RAY_RETRIES or isinstance(error, self.ray.exceptions.RayTaskError):
            return False
        last = None
        with contextlib.suppress(self.ray.exceptions.RayError):
            last = self.ray.get(self.box.last.remote(flight.run_id))
        if last is None and flight.todo.checkpoint_path is not None:
            data = flight.todo.checkpoint_path.read_bytes()
            last = (read_checkpoint(data)["loop"]["step"], data)
        why = type(error).__name__ if isinstance(error, BaseException) else "stopped by a signal"
        flight.attempt, flight.result = flight.attempt + 1, None
        print(f"ray: run {flight.run_id} ({why}): attempt {flight.attempt} of {RAY_RETRIES + 1}, from "
              + (f"its checkpoint at step {last[0]}" if last else "step 0"), file=sys.stderr, flush=True)
        self._launch(flight, last[1] if last else None)
        return True

    def _release(self, flight: _Flight) -> None:
        flight.todo.release()
        self.by_id.pop(flight.run_id, None)
        self.forget.append(flight.run_id)
        self.last_event = time.monotonic()

    # --- stopping -------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ctrl-C or SIGTERM: ask every run in flight to checkpoint and return (ray.cancel reaches a running task as
        SIGINT), give them STOP_GRACE_S, write what came back, and say where the runs stand."""
        self.stopping = True
        if not self.by_id:
            return
        for ref in self.flights:
            self.ray.cancel(ref)
        refs, deadline = list(self.flights), time.monotonic() + STOP_GRACE_S
        while refs and time.monotonic() < deadline:
            ready, refs = self.ray.wait(refs, num_returns=len(refs), timeout=min(POLL_S, deadline - time.monotonic()))
            for ref in ready:
                self._take(ref)
        self.collect(wait=True)
        counts = collections.Counter()
        for flight in list(self.by_id.values()):
            result = flight.result
            if flight.returned:  # finished meanwhile: never lose a result
                self._finish(flight)
                counts["finished and recorded"] += 1
                continue
            if isinstance(result, dict) and flight.ckpt_step == result["interrupted"]:
                counts["checkpointed now"] += 1
            elif flight.todo.checkpoint_path is not None:
                counts["resume from an earlier checkpoint"] += 1
            else:
                counts["start again (no checkpoint yet)"] += 1
            self._release(flight)
        print(f"ray: {sum(counts.values())} runs were in flight: "
              + ", ".join(f"{n} {what}" for what, n in counts.items()), file=sys.stderr, flush=True)

    def close(self) -> None:
        for flight in list(self.by_id.values()):
            flight.todo.release()
        with contextlib.suppress(Exception):
            self.ray.kill(self.box)


def run_ray(configs: list[RunConfig], sweep_dir: Path, threads: int, address: str | None,
            on_progress: Callable[[ProgressEvent], None], fn: Callable[[dict, int, RayLink], dict] = _ray_run,
            rerun: frozenset[str] = frozenset(), resources: Resources | None = None,
            slots: int | None = None) -> Iterator[Outcome]:
    """Each run is a Ray task asking for its `resources` (CPUs default to its threads, GPUs to 1 on cuda); runs no
    node can hold are refused (ConfigError) before any is submitted. Runs compute with `resources.cpus` threads, else
    `threads`, unless they recorded their own (`settle_threads`). The driver holds the claims of the runs in
    flight (a window sized to the cluster and the open-file limit) and writes their records and checkpoints. A run
    whose worker or node dies is submitted again from its last checkpoint; the record is written once, when a task
    returns (for a run in `rerun`, staged beside the old record and moved over it then). Ctrl-C or SIGTERM asks the
    runs in flight to checkpoint (see `_RaySweep.stop`). `slots`: what `check_ray` found for these runs, when it has
    been called already."""
    ray = connect_ray(address)
    resources = resources or Resources()
    if slots is None:
        slots = check_ray(configs, sweep_dir, threads, address, resources)
    sweep = _RaySweep(ray, sweep_dir, threads, resources, fn, on_progress, rerun, slots)
    queue = collections.deque(configs)
    try:
        while queue or sweep.flights:
            while queue and len(sweep.by_id) < sweep.window:
                summary = sweep.submit(queue.popleft())
                if summary is not None:
                    yield summary
            if sweep.flights:
                yield from sweep.step()
    except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), the consumer closing us, or a fault here
        sweep.stop()
        raise
    finally:
        sweep.close()


@dataclasses.dataclass
class RaySettings:
    address: str | None  # --ray-address; None starts a private local instance
    resources: Resources
    slots: int | None = None  # runs the cluster holds at once, once the pre-flight has asked it


class RayExecutor:
    """Tasks on a Ray cluster (--ray-address), or on a private Ray instance on this machine."""

    name = "ray"
    help = "a Ray cluster"
    here = False
    flags = {"ray_address": "", **dict.fromkeys(("cpus_per_run", "gpus_per_run", "resource"),
                                                "{flag} needs --executor {owners} (local runs share this machine's "
                                                "cores: use --workers)")}

    def add_arguments(self, parser) -> None:
        parser.add_argument("--ray-address", help="connect to this Ray cluster (default: start a local one)")

    def prepare(self, args, spec, resources: Resources) -> RaySettings:
        return RaySettings(args.ray_address, resources)

    def preflight(self, settings: RaySettings, plan: Plan, todo: list[RunConfig]) -> None:
        """Refuse runs that no node of the cluster can hold (connecting to it, or starting the local instance)."""
        settings.slots = check_ray(todo, plan.sweep_dir, plan.threads, settings.address, settings.resources)

    def run(self, settings: RaySettings, plan: Plan, configs: list[RunConfig],
            rerun: frozenset[str]) -> Iterator[Outcome]:
        return run_ray(configs, plan.sweep_dir, plan.threads, settings.address, plan.on_progress, rerun=rerun,
                       resources=settings.resources, slots=settings.slots)
