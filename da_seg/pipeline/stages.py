"""The run directory and its resumable stages: each writes ``done.json`` with the fingerprint of its settings."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from da_seg.config import Config
from da_seg.distributed import barrier, broadcast_object, is_main
from da_seg.errors import DasegError
from da_seg.files import claimed, os_error, read_json, write_json
from da_seg.progress import output_is_terminal
from da_seg.provenance import components, environment, git_revision
from da_seg.training import resolve_device


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able settings."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Stages:
    """Runs named stages once per fingerprint, timing each."""

    def __init__(self, run_dir: Path, resume: bool, keyed: bool = False) -> None:
        self.run_dir, self.resume, self.keyed = run_dir, resume, keyed
        self.timings: dict[str, float] = {}

    def run(self, name: str, key: str, work: Callable[[Path], Any], collective: bool = False) -> Path:
        """Run ``work(folder)`` unless ``folder`` holds a finished stage with this ``key`` (and resuming).

        With ``keyed=True`` (studies) folders are named ``name-key`` so variations share identical stages. Under
        torchrun, rank 0 decides whether to reuse the stage and writes its marker; ``collective`` work (DDP
        training) runs on every rank, other work on rank 0 only, and every rank leaves together.
        """
        folder = self.run_dir / (f"{name}-{key}" if self.keyed else name)
        with claimed(folder) if is_main() else contextlib.nullcontext():  # one writer per stage folder
            return self._run(name, key, work, collective, folder)

    def _run(self, name: str, key: str, work: Callable[[Path], Any], collective: bool, folder: Path) -> Path:
        marker = folder / "done.json"
        main = is_main()
        reuse = main and self.resume and marker.exists() and read_json(marker).get("fingerprint") == key
        if broadcast_object(reuse):
            self.timings[name] = read_json(marker).get("seconds", 0.0)
            return folder
        if main:
            self._prepare(name, folder, key)
        barrier()
        start = time.perf_counter()
        plain = main and not output_is_terminal()  # a log file gets a line per stage; a terminal has the bars
        if plain:
            print(f"stage '{name}': running", flush=True)
        try:
            if collective or main:
                work(folder)
        except OSError as err:  # a full disk or a read-only folder is the user's to fix: one line naming the stage
            raise (os_error(err, folder) or err) from None
        seconds = time.perf_counter() - start
        if plain:
            print(f"stage '{name}': done in {seconds:.1f} s", flush=True)
        self.timings[name] = seconds
        if main:
            write_json(marker, {"fingerprint": key, "seconds": seconds})
        barrier()
        return folder

    def _prepare(self, name: str, folder: Path, key: str) -> None:
        """Make ``folder`` ready for a stage with fingerprint ``key``: keep a partial run of the same key (its
        checkpoints resume mid-training), clear anything else the run left there, so no checkpoint of other
        settings or inputs is ever continued; say in one line what happens on resume."""
        marker, started = folder / "done.json", folder / "started.json"
        same = started.is_file() and _fingerprint_in(started) == key
        if self.resume and marker.is_file():
            _say(f"stage '{name}': its settings, inputs or code changed since it ran; running it again")
        elif self.resume and same:
            _say(f"stage '{name}': continuing the interrupted stage from its last checkpoint")
        if folder.exists() and not same:
            shutil.rmtree(folder)  # a stage folder inside the run directory: da_seg wrote everything in it
        elif marker.exists():
            marker.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        write_json(started, {"fingerprint": key})


def _fingerprint_in(path: Path) -> str | None:
    try:
        return read_json(path).get("fingerprint")
    except DasegError:
        return None


def _say(message: str) -> None:
    from rich.console import Console

    Console().print(f"[cyan]resume[/cyan]: {message}", highlight=False, soft_wrap=True)


RUN_MARKER = "provenance.json"
"""Written by `open_run_dir` into every run directory: ``--force`` deletes, and ``--resume`` writes into, only a
folder that holds it."""


def _check_run_dir(run_dir: Path, output: Path, *, resume: bool, force: bool) -> None:
    """Refuse to reuse a folder that is not a da_seg run directory directly inside ``output``."""
    if not (run_dir.exists() or run_dir.is_symlink()):
        return
    if run_dir.is_dir() and not run_dir.is_symlink() and not any(run_dir.iterdir()):
        return
    if not (resume or force):
        raise DasegError(f"run directory {run_dir} exists; pass --resume to continue it or --force to redo it")
    what = "delete" if force else "write into"
    if run_dir.is_symlink() or run_dir.resolve().parent != output.resolve():
        raise DasegError(f"{run_dir} is a link out of 'output' {output}; refusing to {what} it: choose another 'name'")
    if not (run_dir / RUN_MARKER).is_file():
        raise DasegError(
            f"{run_dir} exists but is not a da_seg run directory (no {RUN_MARKER}); refusing to {what} it: "
            "choose another 'name' or 'output', or move the folder away"
        )


def open_run_dir(config: Config, *, resume: bool, force: bool) -> Path:
    """Create (or, with resume/force, reuse/clear) the run directory and record how the run was made.

    Only a folder holding `RUN_MARKER` is reused or deleted, so a run can never clear data it did not create.
    """
    run_dir = config.output / config.run_name
    _check_run_dir(run_dir, config.output, resume=resume, force=force)
    barrier()  # every rank has checked before rank 0 changes anything
    if not is_main():
        barrier()  # rank 0 writes the run directory
        return run_dir
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.model_dump(mode="json"))
    except OSError as err:
        raise DasegError(
            f"cannot write the run directory {run_dir} ({err.strerror}); choose another 'output'"
        ) from None
    write_json(
        run_dir / RUN_MARKER,
        {
            "versions": environment(),
            "git": git_revision(),
            "components": components(config),
            "seed": config.seed,
            "device": str(resolve_device(config.runtime.device)),
        },
    )
    barrier()
    return run_dir
