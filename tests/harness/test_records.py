import os
import subprocess

from seqbench.harness.records import atomic_write, remove_stale_temps


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".summary.json.tmp-{dead.pid}"
    live = tmp_path / f".summary.json.tmp-{os.getpid()}"
    stale.write_text("{")
    live.write_text("{")
    remove_stale_temps(tmp_path)
    assert not stale.exists() and live.exists()


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, "old")
    atomic_write(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
