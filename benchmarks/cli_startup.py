"""Wall time of a `daseg` command that trains nothing (`daseg plugins`), this checkout against another, alternating.

Why: every command pays the imports before it does anything; they were most of `daseg plugins`, `validate` and
`--help`, and of the test suite's subprocess tests. Runs alternate so that a busy machine slows both alike.

Usage:
    git worktree add /tmp/before <commit>
    python benchmarks/cli_startup.py --other /tmp/before --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seconds(checkout: Path, command: list[str]) -> float:
    """One `python -m da_seg COMMAND` with ``checkout``'s da_seg first on the path."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "da_seg", *command], cwd=checkout, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, help="another checkout (e.g. a git worktree of an older commit)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--command", nargs="+", default=["plugins"])
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"other": args.other.resolve()} if args.other else {})}
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    for _ in range(args.runs):
        for name, checkout in checkouts.items():
            times[name].append(seconds(checkout, args.command))
    for name, values in times.items():
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{name} ({checkouts[name]}): median {statistics.median(values):.2f} s; runs {runs}")


if __name__ == "__main__":
    main()
