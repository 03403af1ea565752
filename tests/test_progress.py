"""Progress on long loops: rich in a terminal, plain lines in a log file."""

from __future__ import annotations


def test_plain_progress_prints_the_bars_facts_at_most_every_few_seconds(monkeypatch) -> None:
    """In a log file rich draws nothing; plain lines carry description, count, rate, ETA and the losses."""
    import io

    import da_seg.progress as progress

    clock = iter([0.0, 1.0, 2.0, 12.0, 13.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    with progress.PlainProgress(every=10.0, stream=out) as bar:
        task = bar.add_task("cyclegan", total=4, status="")  # t=0
        bar.update(task, advance=1, status="g 1.000")  # t=1: too soon, nothing printed
        bar.update(task, advance=1, status="g 0.500")  # t=2: too soon
        bar.update(task, advance=1, description="cyclegan 2/2", status="g 0.250")  # t=12: 10 s since the start
        bar.update(task, advance=1)  # t=13: the last step always prints
    lines = out.getvalue().splitlines()
    assert lines[0] == "cyclegan 2/2: 3/4 (75%), 0.25 it/s, ETA 0m04s, g 0.250"
    assert lines[1].startswith("cyclegan 2/2: 4/4 (100%)") and len(lines) == 2


def test_progress_bar_is_plain_without_a_terminal() -> None:
    from da_seg.progress import PlainProgress, progress_bar

    assert isinstance(progress_bar(), PlainProgress)  # pytest captures the output: not a terminal
