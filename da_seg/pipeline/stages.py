"""The run directory and its resumable stages: each writes ``done.json`` with the fingerprint of its settings."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Length:
    """How long a training stage trains: ``epochs``, and ``base``, the fingerprint of every other setting and input.

    A finished stage of the same ``base`` and fewer epochs can be continued to ``epochs`` from its last checkpoint
    (`Stages` with ``extend``) instead of being trained again from scratch.
    """

    base: str
    epochs: int


def continued_key(key: str, history: list[int]) -> str:
    """The fingerprint of a stage trained as ``history`` (the epochs of each earlier, shorter schedule) and then
    continued to the length ``key`` stands for: not the key of a straight run, whose schedule differs."""
    return fingerprint(key, "continued after", history) if history else key


class Stages:
    """Runs named stages once per fingerprint, timing each.

    ``extend``: names of stages (e.g. ``{"translator"}``) that ``--resume`` may continue from a shorter finished
    run of the same settings (`Length`) rather than train again; ours, asked for by the reference CycleGAN's users.
    """

    def __init__(self, run_dir: Path, resume: bool, keyed: bool = False, extend: Collection[str] = ()) -> None:
        self.run_dir, self.resume, self.keyed, self.extend = run_dir, resume, keyed, frozenset(extend)
        self.timings: dict[str, float] = {}

    def run(
        self,
        name: str,
        key: str,
        work: Callable[[Path], Any],
        collective: bool = False,
        length: Length | None = None,
    ) -> Path:
        """Run ``work(folder)`` unless ``folder`` holds a finished stage with this ``key`` (and resuming).

        With ``keyed=True`` (studies) folders are named ``name-key`` so variations share identical stages. Under
        torchrun, rank 0 decides whether to reuse the stage and writes its marker; ``collective`` work (DDP
        training) runs on every rank, other work on rank 0 only, and every rank leaves together. With ``length``
        a finished shorter run may be continued (``extend``); the fingerprint the stage ends with, the one its
        dependants must use, is in ``folder/done.json`` (`stage_key`).
        """
        folder = self.run_dir / (f"{name}-{key}" if self.keyed else name)
        with claimed(folder) if is_main() else contextlib.nullcontext():  # one writer per stage folder
            return self._run(name, key, work, collective, folder, length)

    def _run(
        self, name: str, key: str, work: Callable[[Path], Any], collective: bool, folder: Path, length: Length | None
    ) -> Path:
        marker = folder / "done.json"
        main = is_main()
        history: list[int] = []
        if main and self.resume and length is not None:
            key, history = self._lengthen(name, key, folder, length)
        reuse = main and self.resume and marker.exists() and read_json(marker).get("fingerprint") == key
        if broadcast_object(reuse):
            self.timings[name] = read_json(marker).get("seconds", 0.0)
            return folder
        lengths = {} if length is None else {"base": length.base, "epochs": length.epochs, "history": history}
        if main:
            self._prepare(name, folder, key, lengths)
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
            write_json(marker, {"fingerprint": key, "seconds": seconds, **lengths})
        barrier()
        return folder

    def _lengthen(self, name: str, key: str, folder: Path, length: Length) -> tuple[str, list[int]]:
        """The key and history of this stage when it continues a shorter finished run of the same ``base`` (or an
        interrupted continuation): ``(key, [])`` when it does not; says why a shorter run is not continued."""
        done = _record(folder / "done.json") or {}
        started = _record(folder / "started.json") or {}
        if done.get("fingerprint") == key:
            return key, []
        if done.get("base") == length.base and "epochs" in done:
            trained, before = int(done["epochs"]), [int(e) for e in done.get("history", [])]
            flag = f"--extend-{name}"
            if before and trained == length.epochs:  # continued earlier to this very length
                if name in self.extend:
                    return done["fingerprint"], before
                _say(f"stage '{name}': it was continued ({' -> '.join(map(str, [*before, trained]))} epochs, {flag}); "
                     f"without {flag} it is a straight {trained}-epoch schedule, not the one it had")  # fmt: skip
            elif trained < length.epochs and name in self.extend:
                _say(f"stage '{name}': continuing from epoch {trained} to {length.epochs} ({flag})")
                return continued_key(key, [*before, trained]), [*before, trained]
            elif trained < length.epochs:
                _say(f"stage '{name}': trained for {trained} epochs with otherwise the same settings; {flag} would "
                     f"continue it from its last checkpoint to {length.epochs} instead")  # fmt: skip
        elif not done and name in self.extend and started.get("base") == length.base:
            history = [int(e) for e in started.get("history", [])]
            if history and started.get("epochs") == length.epochs:  # an interrupted continuation: finish it
                return continued_key(key, history), history
        return key, []

    def _prepare(self, name: str, folder: Path, key: str, lengths: dict[str, Any]) -> None:
        """Make ``folder`` ready for a stage with fingerprint ``key``: keep a partial run of the same key (its
        checkpoints resume mid-training) or the finished shorter run it continues (``lengths["history"]``), clear
        anything else the run left there, so no checkpoint of other settings or inputs is ever continued; say in
        one line what happens on resume."""
        marker, started = folder / "done.json", folder / "started.json"
        same = started.is_file() and _fingerprint_in(started) == key
        continues = bool(lengths.get("history")) and marker.is_file()
        if self.resume and marker.is_file() and not continues:
            _say(f"stage '{name}': its settings, inputs or code changed since it ran; running it again")
        elif self.resume and same:
            _say(f"stage '{name}': continuing the interrupted stage from its last checkpoint")
        if folder.exists() and not (same or continues):
            shutil.rmtree(folder)  # a stage folder inside the run directory: da_seg wrote everything in it
        elif marker.exists():
            marker.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        write_json(started, {"fingerprint": key, **lengths})


def stage_key(folder: Path) -> str:
    """The fingerprint a finished stage ended with (a continued stage's differs from its settings' key)."""
    return read_json(folder / "done.json")["fingerprint"]


def _record(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path) if path.is_file() else None
    except DasegError:
        return None


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
