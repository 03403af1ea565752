"""Files the tool writes: atomically (never half a file), as JSON, and a full disk or an unwritable folder
turned into one line naming the path."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from da_seg.errors import DasegError, DataError


def os_error(err: OSError, path: str | Path) -> DataError | None:
    """A one-line `DataError` for a full disk or a folder that cannot be written, naming the path; else None."""
    where = err.filename or path
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"disk full while writing {where}: free some space (or choose another 'output'), then rerun")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        return DataError(f"cannot write {where} ({err.strerror}): choose a writable 'output' folder")
    return None


FULL_DISK_BYTES = 64 * 2**20  # a writer that fails with less free space than this is taken to have hit a full disk


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except Exception as err:
        # torch.save and other C++ writers report a full disk as RuntimeError ("unexpected pos ..."), not ENOSPC
        if not isinstance(err, OSError) and shutil.disk_usage(path.parent).free < FULL_DISK_BYTES:
            raise OSError(errno.ENOSPC, f"No space left on device ({err})", str(path)) from err
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); the file may be damaged") from None


HEARTBEAT_S = 30.0
"""How often a held lock's mtime is refreshed."""
STALE_AFTER_S = 300.0
"""A lock not refreshed for this long is left by a process that no longer runs, on any machine (a batch job
preempted on one node and requeued on another)."""


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``folder`` while this process writes into it, so that a second process writing the
    same folder (the same run resumed twice at once, or a study's seeds split over processes that overlap) stops
    with one line instead of mixing its checkpoints into the first one's. A lock left by a process that no longer
    runs is taken over: a kill or crash here (its pid is gone), or on another machine (not refreshed for
    `STALE_AFTER_S`). Where the file system has no hard links, nothing is held."""
    lock, held = folder.with_name(f".{folder.name}.lock"), False
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{folder.name}.", suffix=".owner", dir=folder.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        for attempt in range(2):
            try:
                os.link(tmp, lock)  # atomic: fails if the lock exists, and a lock is never seen half-written
                held = True
                break
            except FileExistsError:
                holder = _lock_holder(lock)
                if attempt or _still_running(holder, lock):
                    elsewhere = f". If it no longer runs, wait {STALE_AFTER_S / 60:.0f} min or delete {lock}"
                    raise DasegError(
                        f"{folder} is being written by process {holder.get('pid')} on {holder.get('host')} "
                        f"(since it holds {lock}); wait for it to end or stop it"
                        + ("" if holder.get("host") == socket.gethostname() else elsewhere)
                    ) from None
                lock.unlink(missing_ok=True)
            except OSError:  # a file system without hard links (FAT, some network shares): run unguarded
                break
    finally:
        os.remove(tmp)
    if not held:
        yield
        return
    stop = threading.Event()
    beat = threading.Thread(target=_refresh, args=(lock, stop), daemon=True)
    try:
        beat.start()  # inside: a Ctrl-C that lands in start() still releases the lock
        yield
    finally:
        stop.set()
        if beat.ident is not None:  # a thread that could not start has nothing to join
            beat.join()
        lock.unlink(missing_ok=True)


def _refresh(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(lock)
        except OSError:
            return


def _lock_holder(lock: Path) -> dict[str, Any]:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _still_running(holder: dict[str, Any], lock: Path) -> bool:
    """Whether the lock's process may still run: on this machine, whether its pid is there (a POSIX signal 0);
    from another machine (or without POSIX), whether the lock was refreshed within `STALE_AFTER_S`."""
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and os.name == "posix" and isinstance(pid, int):
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it runs
            pass
        return True
    try:
        return bool(holder) and time.time() - lock.stat().st_mtime <= STALE_AFTER_S
    except OSError:
        return False
