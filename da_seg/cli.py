"""The ``daseg`` command line: parses options, calls one API function, maps user errors to exit code 2."""

from __future__ import annotations

import functools
import signal
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from da_seg.errors import ConfigError, DasegError

app = typer.Typer(
    name="daseg",
    help="Transfer segmentation labels across imaging modalities (MR -> SynCT -> CT).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
_options = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def _plain(value: Any) -> str:
    """``value`` as text for a rich line, square brackets kept: rich reads ``[v2]`` in a user's ``exp[v2]`` folder or
    a message as markup and drops it."""
    return escape(str(value))


def _show_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one yellow line (``warning: <message>``) instead of Python's two-line source listing."""
    err_console.print(f"[yellow]warning:[/yellow] {_plain(message)}", highlight=False, soft_wrap=True)


def _fail(err: BaseException) -> typer.Exit:
    if _options["debug"]:
        err_console.print(traceback.format_exc(), markup=False, highlight=False)
    err_console.print(f"[red]error:[/red] {_plain(err)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _ignore_further_interrupts() -> None:
    """A second Ctrl-C while the run leaves (Python's shutdown takes ~1.5 s with torch loaded) would print a
    KeyboardInterrupt traceback or kill the process by SIGINT instead of exit 130; the work is already saved."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread (an API caller's thread): nothing to change
        pass


def handle_errors(fn: F) -> F:
    """Turn a `DasegError` (or a full disk / unwritable folder) into one red line on stderr and exit code 2.

    A traceback only with ``--debug``; warnings print as one line each.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from da_seg.files import os_error

        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                _ignore_further_interrupts()
                err_console.print(
                    "[yellow]interrupted[/yellow]: finished stages and the last checkpoint are kept; "
                    "rerun the same command with --resume to continue",
                    highlight=False,
                )
                raise typer.Exit(130) from None
            except DasegError as err:
                raise _fail(err) from None
            except OSError as err:
                mapped = os_error(err, "the output folder")
                if mapped is None:
                    raise
                raise _fail(mapped) from None

    return wrapper  # type: ignore[return-value]


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``app.command`` with the error handling every command needs."""

    def decorate(fn: F) -> F:
        app.command(*args, **kwargs)(handle_errors(fn))
        return fn

    return decorate


def _version(value: bool) -> None:
    if value:
        from da_seg import __version__

        console.print(f"da_seg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    plugin: list[str] = typer.Option([], "--plugin", help="Extra plugin module to load (repeatable)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for user errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    _options["debug"] = debug
    if plugin:
        from da_seg.plugins import load_plugins

        handle_errors(load_plugins)(plugin)


ConfigArg = typer.Argument(..., help="TOML config file.", show_default=False)
SetOpt = typer.Option([], "--set", help="Override a config key: --set segmentation.epochs=2 (value parsed as TOML).")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs with TOML values (``2``, ``"a"``, ``true``, ``[1, 2]``); bare words stay strings."""
    import tomllib

    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set needs key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = raw
    return overrides


@command("validate")
def validate_cmd(config: Path = ConfigArg, set_: list[str] = SetOpt) -> None:
    """Check a config: keys, values, every component it names, and one forward pass on a dummy batch (no training)."""
    from da_seg.api import validate
    from da_seg.config import load_config

    components = validate(load_config(config, parse_overrides(set_)))
    console.print(
        f"[green]ok[/green] {_plain(config)}: task '{components.task.name}', "
        f"translator {type(components.translator).__name__}, segmenter {type(components.segmenter).__name__}"
    )


@command("run")
def run_cmd(
    config: Path = ConfigArg,
    set_: list[str] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run, reusing finished stages."),
    force: bool = typer.Option(False, "--force", help="Redo every stage, overwriting the run directory."),
    extend_translator: bool = typer.Option(
        False,
        "--extend-translator",
        help="With --resume: continue a finished translator trained for fewer epochs (same settings otherwise) "
        "from its last checkpoint to translator.epochs, instead of training it again from scratch.",
    ),
) -> None:
    """Run the whole pipeline: data -> translator -> SynCT -> segmenter -> evaluation -> report."""
    from da_seg.config import load_config
    from da_seg.pipeline import run_pipeline

    config_ = load_config(config, parse_overrides(set_))
    result = run_pipeline(config_, resume=resume, force=force, extend_translator=extend_translator)
    console.print(f"[green]done[/green]: report at {_plain(result.report)}")


@command("translate")
def translate_cmd(
    inputs: Path = typer.Argument(..., help="Source image file, DICOM folder, or a folder of them."),
    model: Path = typer.Option(..., "--model", help="Trained translator folder (e.g. runs/NAME/translator/model)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (or folder for a folder input)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
) -> None:
    """Translate source images (e.g. MR) into the target modality (e.g. SynCT in HU), keeping their geometry."""
    from da_seg.training import resolve_device
    from da_seg.translators import translate_files

    written = translate_files(model, inputs, output, device=resolve_device(device, "--device"))
    shown = written[0] if len(written) == 1 else output
    console.print(f"[green]wrote[/green] {len(written)} volume(s): {_plain(shown)}")


@command("bench")
def bench_cmd(
    config: Path = ConfigArg,
    segmenter: list[str] = typer.Option(
        ...,
        "--segmenter",
        help="NAME or NAME:key=value,... (TOML values; the config's arguments are the defaults for its own segmenter), "
        "e.g. resunet25d:base=8,depth=3 or smp:Unet/resnet34 (repeatable).",
    ),
    set_: list[str] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Reuse finished stages of an earlier bench."),
    force: bool = typer.Option(False, "--force", help="Start the bench directory afresh."),
) -> None:
    """Several segmenters on the same SynCT training data and the same real target test set."""
    from da_seg.bench import run_bench
    from da_seg.config import load_config

    result = run_bench(load_config(config, parse_overrides(set_)), segmenter, resume=resume, force=force)
    table = Table(title="segmenter benchmark (real target images)")
    keys = [k for k in result.table[0] if k != "method"]
    for key in keys:
        table.add_column(key)
    for row in result.table:
        table.add_row(*["" if row[k] is None else str(row[k]) for k in keys])
    console.print(table)
    console.print(f"tables in {_plain(result.run_dir / 'bench')}")


@command("study")
def study_cmd(
    study: Path = typer.Argument(..., help="Study TOML: base config, \\[grid] of variations."),
    resume: bool = typer.Option(False, "--resume", help="Reuse finished stages of an earlier study."),
    force: bool = typer.Option(False, "--force", help="Start the study directory afresh."),
    seeds: str = typer.Option(
        None, "--seeds", help="Run only these of the study's seeds, e.g. 0,2 (split a study over processes)."
    ),
) -> None:
    """Run a grid of variations, sharing identical stages, ending in one Table 1 style table."""
    from da_seg.study import run_study

    result = run_study(study, resume=resume, force=force, seeds=None if seeds is None else _seed_list(seeds))
    table = Table(title="study")
    for key in result.table[0]:
        table.add_column(key)
    for row in result.table:
        table.add_row(*["" if v is None else str(v) for v in row.values()])
    console.print(table)
    console.print(f"report at {_plain(result.report)}")


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds '{text}': give seeds separated by commas, e.g. --seeds 0,2") from None


@command("plugins")
def plugins_cmd(
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON: kinds -> names -> plugin, package, location; failed plugins under 'failed'."
    ),
) -> None:
    """List every plugin and the components it registers, by kind, with where each comes from."""
    import json

    from da_seg.plugins import component_index, component_table, failed_plugins

    columns = ("plugin", "kind", "name", "defined at")
    rows = [(r.plugin, r.kind, r.name, r.location) for r in component_table()]
    if as_json:
        typer.echo(json.dumps({"components": component_index(), "failed": failed_plugins()}, indent=2))
    elif console.is_terminal:  # a table that folds long names instead of cutting them
        table = Table(title="da_seg plugins and components")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:  # piped or logged: plain columns, every name whole (rich would cut them to 80 columns)
        widths = [max(len(v) for v in values) for values in zip(columns, *rows, strict=True)]
        for row in (columns, *rows):
            typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for name, message in failed_plugins().items():
        err_console.print(f"[red]failed[/red] plugin '{_plain(name)}': {_plain(message)}", highlight=False)


@command("predict")
def predict_cmd(
    inputs: Path = typer.Argument(..., help="CT file, DICOM series folder, or a folder of images.", show_default=False),
    model: Path = typer.Option(
        ..., "--model", help="Trained segmenter directory (holds meta.json).", show_default=False
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Mask file, or output folder for a folder input."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    threshold: float = typer.Option(None, "--threshold", help="Probability threshold (default: the model's)."),
    tta_flip: bool = typer.Option(None, "--tta-flip/--no-tta-flip", help="Average with the left-right flip."),
    largest_component: bool = typer.Option(
        None, "--largest-component/--all-components", help="Keep one 3D component of each label."
    ),
    component_rule: str = typer.Option(
        None, "--component-rule", help="Which component to keep: largest, most_confident (default: the model's)."
    ),
) -> None:
    """Segment CT images with a trained segmenter; masks keep each input's size, spacing, origin and direction."""
    from da_seg.segmentation import predict
    from da_seg.training import resolve_device

    written = predict(
        model,
        inputs,
        output,
        device=resolve_device(device, "--device"),
        threshold=threshold,
        largest_component=largest_component,
        tta_flip=tta_flip,
        component_rule=component_rule,
    )
    for path in written:
        console.print(f"[green]wrote[/green] {_plain(path)}")


def add_plugin_commands(target: typer.Typer = app) -> None:
    """Each plugin's ``register_commands`` on ``target`` (the ``daseg`` app), every added command wrapped in
    `handle_errors`; a plugin that fails is reported in one line and the others still run."""
    from da_seg.plugins import load_plugins

    try:
        impls = load_plugins().hook.register_commands.get_hookimpls()
    except DasegError as err:  # a broken plugin must not make the CLI unusable
        err_console.print(f"[red]error:[/red] {_plain(err)}", highlight=False)
        return
    for impl in impls:
        known = len(target.registered_commands)
        try:
            impl.function(app=target)
            for info in target.registered_commands[known:]:  # a plugin's errors read like the built-ins'
                info.callback = handle_errors(info.callback)
        except Exception as err:
            message = f"plugin '{impl.plugin_name}' could not add its commands ({type(err).__name__}: {err})"
            err_console.print(f"[yellow]warning:[/yellow] {_plain(message)}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # a skipped plugin: one line, as inside the commands
        add_plugin_commands()
    app()
