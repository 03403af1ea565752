"""Hook implementations: the `prostate_mr2ct` task and the ``daseg phantom`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from da_seg import Task, hookimpl
from prostate_mr2ct.phantom import write_phantom


def prostate_mr2ct() -> Task:
    """Prostate on T2 MR -> CT; CT windowed to soft tissue (-500..500 HU) as in the paper.

    The common grid (3 mm slices, 1 mm in-plane, 256 x 256 = 256 mm field of view) holds the prostate and the
    whole true pelvis; a CPU example can coarsen it (``data.spacing = [3.0, 2.0, 2.0]``, ``data.size = [96, 96]``,
    a 192 mm field of view that still holds prostate, rectum, bladder base and femoral heads).
    """
    return Task(
        name="prostate_mr2ct",
        source_modality="MR",
        target_modality="CT",
        labels=("prostate",),
        source_intensity={"name": "mr_percentile", "lower": 0.5, "upper": 99.5},
        target_intensity={"name": "ct_window", "low": -500.0, "high": 500.0},
        spacing=(3.0, 1.0, 1.0),
        size=(256, 256),
        centre="body",  # the CT's field of view is centred on the table, the MR's on the prostate
        phantom=write_phantom,
        description="prostate, T2 MR -> CT (reference plugin, pelvic phantom included)",
    )


@hookimpl
def register_tasks(register: Any) -> None:
    register("prostate_mr2ct", prostate_mr2ct)


@hookimpl
def register_commands(app: Any) -> None:
    import typer

    @app.command("phantom")
    def phantom_cmd(
        out: Path = typer.Option(..., "--out", help="Folder to write the data set into."),
        n_mr: int = typer.Option(12, "--n-mr", min=1, help="Labelled MR subjects (source/)."),
        n_ct: int = typer.Option(12, "--n-ct", min=1, help="Unlabelled CT subjects (target/)."),
        n_eval: int = typer.Option(8, "--n-eval", min=0, help="Labelled CT subjects for evaluation only."),
        n_ct_labelled: int = typer.Option(0, "--n-ct-labelled", min=0, help="Labelled CT for the oracle."),
        paired: bool = typer.Option(False, "--paired/--no-paired", help="Also render each MR subject as CT."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same data set."),
        realism: str = typer.Option(
            "default", "--realism", help="'default', or 'clinical': the real world's differences (docs/data.md)."
        ),
    ) -> None:
        """Write the pelvic phantom (T2 MR with prostate masks, CT in HU) in the documented data layout."""
        write_phantom(
            out,
            n_source=n_mr,
            n_target=n_ct,
            n_evaluation=n_eval,
            n_target_labelled=n_ct_labelled,
            paired=paired,
            seed=seed,
            realism=realism,
        )
        typer.echo(f"phantom written to {out} ({n_mr} MR, {n_ct} CT, {n_eval} evaluation CT)")
