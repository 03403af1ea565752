"""Files the tool writes: atomically (never half a file), as JSON, and a full disk or an unwritable folder
turned into one line naming the path."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from da_seg.errors import DataError


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
