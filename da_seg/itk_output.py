"""ITK's console output kept off the terminal: `quietly` runs a read with the process's stderr redirected.

ITK prints its warnings (``WARNING: In .../itkGDCMSeriesFileNames.cxx, line 101 ...``) and MetaIO its messages
(``MetaImage: Read: Cannot open data file``) straight to the C-level stderr, before and besides da_seg's one-line
`DataError`; Python's ``sys.stderr`` cannot catch them, so file descriptor 2 is pointed at a temporary file instead.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_STDERR = threading.Lock()


class ReadWarning(UserWarning):
    """ITK read a file but printed a warning about it (shown as one line naming the file)."""


def quietly(path: str | Path, read: Callable[[], T]) -> T:
    """``read()`` with what ITK prints on stderr kept off the terminal.

    A read that raises shows only the caller's error; one that succeeds despite a warning shows it as one
    `ReadWarning` line naming ``path``. Reads take turns (a process has one stderr); what other threads print on
    stderr during a read is dropped.
    """
    with _STDERR, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to redirect
            return read()
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            result = read()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode(errors="replace").splitlines()
    said = [re.sub(r" ?\(0x[0-9a-fA-F]+\)", "", line).strip() for line in lines if not line.startswith("WARNING: In")]
    if said := [line for line in said if line]:
        warnings.warn(f"{path}: ITK warns: {'; '.join(said)[:300]}", ReadWarning, stacklevel=3)
    return result
