"""Connecting to a Ray cluster by address (`--ray-address HOST:PORT | auto`): when no cluster answers there, the sweep
is refused within a deadline, in one line naming the address and what `auto` found, with none of Ray's warnings on the
terminal. `auto` reads what this machine's Ray sessions left behind; here that is a temporary folder (RAY_TMPDIR) and a
list of running raylets the test controls, so nothing depends on the Ray sessions of the machine."""

import socket

import pytest
import ray
import yaml

from seqbench.harness.executors import ray as executors
from seqbench.harness.cli import main
from seqbench.harness.config import ConfigError

from .test_sweep import TINY_BASE


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """This machine as `auto` sees it: no RAY_ADDRESS, Ray's temporary folder under tmp_path, the raylets running here
    (the set returned, empty until a test adds to it). This process counts as not connected to Ray (another test's Ray
    may be), and ray.init is never reached: a check that let an address through would otherwise hang the test."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    running: set[str] = set()
    monkeypatch.setattr(executors, "_running_gcs", lambda: running)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def init(*args, **kwargs):
        raise AssertionError(f"ray.init reached with {args} {kwargs}")

    monkeypatch.setattr(ray, "init", init)
    return running


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # free once closed: nothing listens there


@pytest.fixture
def silent_address():
    """An address where something listens (connections complete) but never says a word: a dead GCS's port taken over,
    or a GCS that does not answer this user."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def sweep(tmp_path, address: str) -> int:
    spec = tmp_path / "r.yaml"
    spec.write_text(yaml.safe_dump({"name": "r", "base": TINY_BASE}))
    return main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "ray", "--ray-address", address])


def session_file(tmp_path, address: str):
    file = tmp_path / "raytmp" / "ray" / "ray_current_cluster"
    file.parent.mkdir(parents=True)
    file.write_text(address + "\n")
    return file


def test_auto_finding_a_dead_sessions_address_is_refused_at_once(machine, tmp_path, capfd):
    address = dead_address()
    file = session_file(tmp_path, address)
    assert sweep(tmp_path, "auto") == 2
    out, err = capfd.readouterr()
    assert err == (f"seqbench: error: --ray-address auto: found {address} (the latest Ray session's address, recorded "
                   f"in {file}), but no Ray cluster answers there (Connection refused)\n")
    assert not (tmp_path / "out").exists()


def test_auto_finding_ray_address_names_it(machine, tmp_path, monkeypatch, capfd):
    address = dead_address()
    monkeypatch.setenv("RAY_ADDRESS", address)
    session_file(tmp_path, "127.0.0.1:1")  # RAY_ADDRESS comes first, as in ray.init
    assert sweep(tmp_path, "auto") == 2
    assert capfd.readouterr().err == (f"seqbench: error: --ray-address auto: found {address} (in RAY_ADDRESS), but no "
                                      "Ray cluster answers there (Connection refused)\n")


def test_auto_finding_nothing_says_where_it_looked(machine, tmp_path, capfd):
    assert sweep(tmp_path, "auto") == 2
    file = tmp_path / "raytmp" / "ray" / "ray_current_cluster"
    assert capfd.readouterr().err == (
        f"seqbench: error: --ray-address auto: no Ray cluster found on this machine (RAY_ADDRESS is not set, no raylet "
        f"runs here, no {file}); start one with `ray start --head`, or give --ray-address HOST:PORT\n")
    assert not (tmp_path / "out").exists()


def test_a_gcs_that_does_not_answer_is_given_up_on_at_the_deadline(machine, tmp_path, silent_address, monkeypatch,
                                                                     capfd):
    """The reported hang: `auto` finds another user's raylet on this machine, whose GCS does not answer us. Ray alone
    retries for minutes, printing warnings; the check gives up after CONNECT_DEADLINE_S, and the warnings of the Ray
    client it ran stay off the terminal."""
    monkeypatch.setattr(executors, "CONNECT_DEADLINE_S", 2)
    machine.add(silent_address)
    session_file(tmp_path, dead_address())  # one raylet running: it wins over the recorded session, as in ray.init
    assert sweep(tmp_path, "auto") == 2
    out, err = capfd.readouterr()
    assert err.startswith(f"seqbench: error: --ray-address auto: found {silent_address} (the GCS of a raylet running "
                          "on this machine, whoever started it), but no Ray cluster answers there (something listens, "
                          "but a Ray client got no further within 2 s: "), err
    assert err.count("\n") == 1 and "GCS" not in out, (out, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["headnode", "headnode:port"])
def test_an_address_that_is_not_host_port_is_refused(machine, tmp_path, capfd, address):
    assert sweep(tmp_path, address) == 2
    assert capfd.readouterr().err == (f"seqbench: error: --ray-address {address}: expected HOST:PORT (the head node's "
                                      "GCS address, which `ray start --head` prints), auto or ray://HOST:PORT\n")


def test_without_an_address_the_private_instance_ignores_a_stale_session_and_ray_address(machine, tmp_path,
                                                                                         monkeypatch):
    """No --ray-address: a Ray of the sweep's own, `address="local"`, which Ray starts without reading its
    current-cluster file or RAY_ADDRESS. `ray.init()` would have tried to join the dead cluster they name (and,
    given num_cpus, raised "When connecting to an existing cluster, num_cpus ... must not be provided"). That a live
    cluster named there is not joined either: tests/harness/test_ray_scale.py, end to end (issue 25)."""
    session_file(tmp_path, dead_address())
    monkeypatch.setenv("RAY_ADDRESS", dead_address())
    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise ConnectionError("stop here")  # refused by connect_ray as any failed start is

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ConfigError, match="--executor ray: stop here"):
        executors.connect_ray(None)
    [kwargs] = calls
    assert kwargs["address"] == "local" and kwargs["include_dashboard"] is False
