"""Benchmark: a conv training step with 1, 2 and "auto" torch threads, alone and beside one busy process.

Why: torch's default of one thread per core is slow when another job holds a core (every parallel region waits
for the thread that job crowds out); ``runtime.threads = "auto"`` (`da_seg.threads`) takes the free cores instead.

The step: resunet25d (base 16) forward + backward + Adam on a batch of 2 x 3 x 64 x 64, fp32, BCE against a fixed
random mask. Each setting runs in a fresh Python process, so that ``OMP_WAIT_POLICY`` can be set before torch is
imported (libgomp reads it then): the rows "PASSIVE before import" and "PASSIVE after import" show whether the wait
policy matters and whether setting it late (all `da_seg.threads.apply_threads` can do) changes anything.
"Busy" is one ``python -c "while True: pass"`` started before the measurement and killed after it; "auto" samples
the load when its process starts, so it sees that process.

Each measurement: ``--warmup`` untimed steps, then up to ``--steps`` timed ones, stopping early after
``--max-seconds`` (a 2-thread step beside a busy process can take seconds); the median ms/step is reported with
the number of steps it comes from. Other jobs on the machine disturb every number: run it on an idle machine.

Usage:
    python benchmarks/threads_shared.py [--steps 20] [--warmup 5] [--max-seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SETTINGS = [  # (label, threads, when OMP_WAIT_POLICY=PASSIVE is set: "" never, "before" / "after" importing torch)
    ("1", "1", ""),
    ("2", "2", ""),
    ("2, PASSIVE before import", "2", "before"),
    ("2, PASSIVE after import", "2", "after"),
    ('"auto"', "auto", ""),
]
BUSY = [sys.executable, "-c", "while True: pass"]


def worker(threads: str, passive: str, steps: int, warmup: int, max_seconds: float) -> dict:
    """Time the step in this process; runs before anything else imports torch."""
    if passive == "before":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    import da_seg
    from da_seg.threads import apply_threads

    if passive == "after":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    used = apply_threads("auto" if threads == "auto" else int(threads))
    torch.manual_seed(0)
    net = da_seg.SEGMENTERS.create("resunet25d", in_channels=3, classes=1, base=16)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 64, 64)
    y = (torch.rand(2, 1, 64, 64) > 0.5).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
        if time.perf_counter() - start > max_seconds / 2:
            break
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < steps and time.perf_counter() - start < max_seconds:
        tic = time.perf_counter()
        step()
        times.append(time.perf_counter() - tic)
    return {"threads": used, "ms": 1000 * statistics.median(times), "steps": len(times)}


def measure(args: argparse.Namespace, threads: str, passive: str) -> dict:
    """One setting in a fresh interpreter, with OMP_WAIT_POLICY only where the setting asks for it."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    command = [sys.executable, __file__, "--worker", threads, "--passive", passive or "never"]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--max-seconds", str(args.max_seconds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.max_seconds * 2 + 180)
    if done.returncode != 0:
        raise RuntimeError(f"worker {threads}/{passive} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(result: dict, steps: int, auto: bool) -> str:
    text = f"{result['ms']:.1f}"
    if result["steps"] < steps:
        text += f" ({result['steps']} steps)"
    if auto:
        text += f" ({result['threads']} thread{'s' if result['threads'] > 1 else ''})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=15.0, help="time limit of the timed steps per setting")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--passive", default="never", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.passive, args.steps, args.warmup, args.max_seconds)))
        return

    from da_seg.threads import allowed_cpus, free_cores

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, affinity {len(allowed_cpus())} CPUs, "
        f"{free_cores()} free now, load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}"
    )
    if "OMP_WAIT_POLICY" in os.environ:
        print(f"note: OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} in this shell is not passed to the workers")
    results: dict[str, dict[str, dict]] = {"alone": {}, "busy": {}}
    for condition in results:
        busy = subprocess.Popen(BUSY) if condition == "busy" else None
        try:
            if busy is not None:
                time.sleep(1.0)  # let it reach full speed before "auto" samples the load
            for label, threads, passive in SETTINGS:
                results[condition][label] = measure(args, threads, passive)
                print(f"{condition:5s} {label}: {results[condition][label]}", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()

    print(f"\nresunet25d (base 16) training step, batch 2 x 3 x 64 x 64, fp32; median ms/step of {args.steps} steps")
    print("\n| torch threads | alone: ms/step | beside one busy process: ms/step |")
    print("|---|---|---|")
    for label, threads, _ in SETTINGS:
        alone, busy = (cell(results[c][label], args.steps, threads == "auto") for c in ("alone", "busy"))
        print(f"| {label} | {alone} | {busy} |")


if __name__ == "__main__":
    main()
