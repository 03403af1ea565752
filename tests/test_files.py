"""`claimed`: one process writes a stage folder at a time; a lock its process left behind is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from da_seg import files
from da_seg.errors import DasegError
from da_seg.files import claimed
from da_seg.pipeline import Stages


def _hold(lock: Path, pid: int, host: str | None = None) -> None:
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def test_a_folder_claimed_by_a_running_process_is_refused_until_it_ends(tmp_path: Path) -> None:
    folder, lock = tmp_path / "translator", tmp_path / ".translator.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _hold(lock, other.pid)
        with pytest.raises(DasegError, match=rf"by process {other.pid} .* wait for it to end or stop it$"):
            with claimed(folder):
                pass
        assert json.loads(lock.read_text())["pid"] == other.pid  # the holder's lock stays
    finally:
        other.kill()
        other.wait()
    with claimed(folder):  # its process has ended: the lock is taken over
        assert json.loads(lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    assert not lock.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind


def test_another_machines_lock_is_refused_until_it_goes_stale(tmp_path: Path) -> None:
    """A lock from another node cannot be checked by pid; one its holder stopped refreshing (a batch job preempted
    there and requeued here) is taken over."""
    lock = tmp_path / ".seg_synct.lock"
    _hold(lock, 1, host="another-node")
    with pytest.raises(DasegError, match=rf"another-node .* If it no longer runs, wait 5 min or delete {lock}$"):
        with claimed(tmp_path / "seg_synct"):
            pass
    last_refresh = time.time() - files.STALE_AFTER_S - 1
    os.utime(lock, (last_refresh, last_refresh))
    with claimed(tmp_path / "seg_synct"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_held_lock_is_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "HEARTBEAT_S", 0.05)
    lock = tmp_path / ".x.lock"
    with claimed(tmp_path / "x"):
        os.utime(lock, (1.0, 1.0))
        time.sleep(0.5)
        assert time.time() - lock.stat().st_mtime < 5


def test_a_refresh_thread_that_cannot_start_releases_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process out of threads (or a Ctrl-C inside `Thread.start`): the lock is released and the error is the
    thread's, not 'cannot join thread before it is started'; the lock was once left behind."""

    def cannot_start(self) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(files.threading.Thread, "start", cannot_start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        with claimed(tmp_path / "x"):
            pass
    assert not (tmp_path / ".x.lock").exists()


def test_an_unreadable_lock_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / ".x.lock").write_text("{half")
    with claimed(tmp_path / "x"):
        pass
    assert not (tmp_path / ".x.lock").exists()


def test_a_stage_claimed_by_another_process_is_left_as_it_is(tmp_path: Path) -> None:
    """The same run resumed twice at once: the second stops before it clears or continues the first's checkpoints."""
    stage = tmp_path / "translator"
    stage.mkdir()
    (stage / "started.json").write_text(json.dumps({"fingerprint": "k"}))
    (stage / "checkpoint.pt").write_bytes(b"the first process's")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _hold(tmp_path / ".translator.lock", other.pid)
        ran = []
        with pytest.raises(DasegError, match="being written by process"):
            Stages(tmp_path, resume=True).run("translator", "k", ran.append)
        assert ran == [] and (stage / "checkpoint.pt").read_bytes() == b"the first process's"
    finally:
        other.kill()
        other.wait()
    Stages(tmp_path, resume=True).run("translator", "k", ran.append)
    assert ran == [stage] and (stage / "done.json").is_file() and not (tmp_path / ".translator.lock").exists()
