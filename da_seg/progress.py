"""Progress on long loops (rich bars in a terminal, plain lines in a log file) and JSON-lines scalar logs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_PROGRESS_EVERY = 10.0
"""Seconds between two plain progress lines of one loop (batch-job logs stay short: ~6 lines a minute at most)."""


class PlainProgress:
    """`progress_bar` where the output is not a terminal (``daseg run > log 2>&1``, batch jobs, nohup): rich draws
    nothing there, so this prints the bar's facts as one plain line, at most every `PLAIN_PROGRESS_EVERY` seconds
    per loop and once at its end: ``cyclegan 3/15: 250/1500 (17%), 4.1 it/s, ETA 5m05s, g 1.234 d 0.456``.

    It implements the part of `rich.progress.Progress` the loops use (``add_task``, ``update``, ``disable``, a
    context manager).
    """

    def __init__(self, every: float = PLAIN_PROGRESS_EVERY, stream: Any = None) -> None:
        self.every, self.stream, self.disable = every, stream, False
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for task_id, task in self._tasks.items():
            if not task["printed_final"] and task["completed"] > task["start"]:
                self._print(task_id, time.perf_counter())

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        task_id = len(self._tasks)
        now = time.perf_counter()
        self._tasks[task_id] = {
            "description": description,
            "total": total,
            "completed": completed,
            "start": completed,
            "started": now,
            "printed": now,
            "printed_final": False,
            "fields": fields,
        }
        return task_id

    def update(self, task_id: int, advance: float = 0, description: str | None = None, **fields: Any) -> None:
        task = self._tasks[task_id]
        task["completed"] += advance
        task["fields"].update(fields)
        if description is not None:
            task["description"] = description
        done = task["total"] is not None and task["completed"] >= task["total"]
        now = time.perf_counter()
        if done or now - task["printed"] >= self.every:
            self._print(task_id, now)
            task["printed_final"] = done

    def _print(self, task_id: int, now: float) -> None:
        if self.disable:
            return
        task = self._tasks[task_id]
        task["printed"] = now
        rate = (task["completed"] - task["start"]) / max(now - task["started"], 1e-9)
        parts = [f"{task['description']}: {task['completed']:.0f}"]
        if task["total"]:
            parts[0] += f"/{task['total']:.0f} ({100 * task['completed'] / task['total']:.0f}%)"
        parts.append(f"{rate:.2f} it/s")
        if task["total"] and rate > 0:
            left = int((task["total"] - task["completed"]) / rate)
            parts.append(f"ETA {left // 60}m{left % 60:02d}s")
        if status := task["fields"].get("status"):
            parts.append(str(status))
        print(", ".join(parts), file=self.stream or sys.stdout, flush=True)


def output_is_terminal() -> bool:
    """Whether rich can draw live progress (a terminal), as rich itself decides."""
    from rich.console import Console

    return Console(stderr=False).is_terminal


def progress_bar(transient: bool = False) -> Progress | PlainProgress:
    """The progress display every long loop uses (description carries the current losses): rich's bar in a
    terminal, `PlainProgress` lines in a log file."""
    if not output_is_terminal():
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=transient,
    )


class ScalarLog:
    """Append-only JSON-lines log of training scalars (one object per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **scalars: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(scalars, default=float) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
