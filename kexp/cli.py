"""The ``kexp`` command line: a thin Typer layer over the Python API.

Each command parses its options, calls the function of the same name in :mod:`kexp`, and
prints. User mistakes (:class:`~kexp.errors.KexpError`) become one clear message and exit
code 2 (``--debug`` shows the traceback). TensorFlow is imported only inside the commands
that need it, so ``kexp --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from kexp import __version__
from kexp.errors import ConfigError, KexpError, UserError

app = typer.Typer(
    name="kexp",
    help="Run Keras experiments declared in YAML: train, evaluate, predict, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich-formatted help imports rich's markdown and syntax machinery,
    # which alone costs more than `kexp --help`'s time budget.
    rich_markup_mode=None,
)


class _LazyConsole:
    """A rich Console made on first use: importing rich is not free, and most runs of
    ``kexp --help`` or of a schema check never print through it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


err: Any = _LazyConsole(stderr=True, highlight=False)
out: Any = _LazyConsole(highlight=False)

DebugOption = typer.Option(False, "--debug", help="Show the Python traceback of an error.")
SetOption = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a config key (repeatable): train.epochs=5, +callbacks[]={TerminateOnNaN: {}} "
    "appends, ~callbacks[0] removes. Values are YAML.",
)


def _label(text: str) -> str:
    """``text`` in bold red on a terminal (unless NO_COLOR), plain otherwise."""
    if sys.stderr.isatty() and "NO_COLOR" not in os.environ:
        return f"\x1b[1;31m{text}\x1b[0m"
    return text


def _report(exc: KexpError) -> None:
    """The message of a user error, one issue per line, never wrapped (so each line can be
    searched and clicked as ``file:line``). Plain writes: an error found by the schema
    check is reported without importing rich at all."""
    if isinstance(exc, ConfigError):
        errors = [i for i in exc.issues if i.severity == "error"]
        noun = "problem" if len(errors) == 1 else "problems"
        lines = [f"{_label('error:')} {len(errors)} {noun} in the config:"]
        lines += [f"  {issue}" for issue in exc.issues]
        if exc.hint:
            lines.append(f"  ({exc.hint})")
    else:  # a KexpError may name itself (an interrupted run is not an error)
        lines = [f"{_label(getattr(exc, 'title', 'error') + ':')} {exc}"]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Print a ConfigWarning like an issue (path, line, message); others as Python does."""
    from kexp.errors import ConfigWarning

    if isinstance(message, ConfigWarning):
        err.print("[yellow]warning:[/yellow] ", end="")
        err.print(str(message.issue), markup=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, *args, **kwargs)


_python_showwarning = warnings.showwarning


def _run(debug: bool, action: Callable[[], Any]) -> Any:
    """Run ``action``; a user error is reported and exits 2 (or its own code)."""
    previous, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return action()
    except KexpError as exc:
        if debug:
            err.print_exception()
        _report(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    finally:
        warnings.showwarning = previous


def _version(value: bool) -> None:
    if value:
        out.print(f"kexp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Run Keras experiments declared in YAML: train, evaluate, predict, report."""


@app.command()
def train(
    config: Optional[Path] = typer.Argument(
        None, help="The experiment's YAML config (optional with --resume)."
    ),
    output_root: Optional[str] = typer.Option(  # str: Path("") would be the working dir
        None, "--output-root", help="Root of run directories (default: output.root)."
    ),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue this run directory from its saved training state; "
        "a CONFIG given too may differ from the run's only in keys safe to change.",
    ),
    sets: Optional[List[str]] = SetOption,
    print_config: bool = typer.Option(
        False, "--print-config",
        help="Print the resolved config (extends, --set, defaults) and exit without training.",
    ),
    debug: bool = DebugOption,
) -> None:
    """Train the model a config declares and write a new run directory."""

    def action() -> None:
        from kexp.config import load_config

        if config is None and resume is None:
            from kexp.errors import UserError

            raise UserError("give the experiment's CONFIG (or --resume RUN_DIR)")
        loaded = _resume_config(resume, sets) if config is None else load_config(
            config, sets or ())
        if print_config and loaded is None and resume is not None:  # the run's own config
            loaded = load_config(resume / "config.yaml")
        if print_config and loaded is not None:
            from kexp.config.resolved import resolved_yaml

            sys.stdout.write(resolved_yaml(loaded))
            return
        if loaded is not None:
            _check_files(loaded)
        from kexp.training.run import train as run_train

        run = run_train(loaded, output_root=output_root, out=out, resume=resume)
        if run.status != "completed":  # trained, but a model file is missing (said above)
            raise typer.Exit(1)

    _run(debug, action)


def _check_files(loaded: Any) -> None:
    """What can be checked of a loaded config before TensorFlow is imported (3-8 s): the
    plugin files it names exist."""
    from kexp.plugins import check_files

    check_files(loaded)


def _resume_config(run_dir: Path | None, sets: Optional[List[str]]) -> Any:
    """With ``--set`` and no CONFIG: the run's own config with the overrides (else None)."""
    if run_dir is None or not sets or not (run_dir / "config.yaml").is_file():
        return None
    from kexp.config import load_config

    return load_config(run_dir / "config.yaml", sets)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="The run directory to continue."),
    sets: Optional[List[str]] = SetOption,
    debug: bool = DebugOption,
) -> None:
    """Continue an interrupted (or crashed) run from its saved training state, in place.

    Only keys safe to change may be changed with --set (train.epochs, a callback's patience,
    output formats); the run's history, checkpoints and manifest continue.
    """

    def action() -> None:
        # the overrides first, without TensorFlow: a typo is answered at once
        loaded = _resume_config(run_dir, sets)
        if loaded is not None:
            _check_files(loaded)
        from kexp.training.run import train as run_train

        if run_train(loaded, out=out, resume=run_dir).status != "completed":
            raise typer.Exit(1)  # trained, but a model file is missing (said above)

    _run(debug, action)


@app.command()
def reproduce(
    run_dir: Path = typer.Argument(..., help="The completed run directory to rerun."),
    debug: bool = DebugOption,
) -> None:
    """Rerun a run's saved config in a new run directory next to it and compare: final
    weights hash and every final metric, plus what differs in the environment.
    Exit 0 when everything matches, 1 when something differs."""

    def action() -> int:
        from kexp.reproduce import reproduce as run_reproduce

        return run_reproduce(run_dir, out=out).exit_code

    code = _run(debug, action)
    if code:
        raise typer.Exit(code)


InputKeys = "KEY or INPUT=KEY"
OutputKeys = "KEY or OUTPUT=KEY"


@app.command()
def evaluate(
    target: Path = typer.Argument(..., help="A run directory or a .keras/.h5 model file."),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluate on this csv/npz file."),
    x: Optional[List[str]] = typer.Option(
        None, "--x", metavar=InputKeys,
        help="npz key of the features (INPUT=KEY, repeated, for several inputs)."),
    y: Optional[List[str]] = typer.Option(
        None, "--y", metavar=OutputKeys,
        help="npz key of the labels (OUTPUT=KEY, repeated, for several outputs)."),
    label: Optional[List[str]] = typer.Option(
        None, "--label", metavar="COLUMN or OUTPUT=COLUMN",
        help="csv column of the labels (OUTPUT=COLUMN, repeated, for several outputs)."),
    features: Optional[List[str]] = typer.Option(
        None, "--feature", metavar="COLUMN", help="csv feature column (repeat for several)."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write the JSON here (a new file)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the --output file if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    debug: bool = DebugOption,
) -> None:
    """Evaluate a saved model on the run's test split or on --data."""

    def action() -> None:
        from kexp.evaluation import evaluate as run_evaluate
        from kexp.inputs import parse_keys

        result = run_evaluate(
            target, data=data, x=parse_keys(x, "--x"), y=parse_keys(y, "--y"),
            label=parse_keys(label, "--label"), features=features or None, output=output,
            out=err if as_json else out, overwrite=overwrite)
        if as_json:
            print(json.dumps(result, indent=2))

    _run(debug, action)


@app.command()
def predict(
    target: Path = typer.Argument(..., help="A run directory or a .keras/.h5 model file."),
    input: Path = typer.Option(
        ..., "--input", "-i",
        help="Examples: a .csv or .npz file; given a run trained on image_dir, also one image "
        "(.png, .jpg, .jpeg, .gif, .bmp) or a folder of them; on text_dir, a folder of .txt "
        "files; on tfrecord, a TFRecord file."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write predictions here (.csv or .npz; a new file); "
        "default: stdout."
    ),
    x: Optional[List[str]] = typer.Option(
        None, "--x", metavar=InputKeys,
        help="npz key of the features (INPUT=KEY, repeated, for several inputs)."),
    features: Optional[List[str]] = typer.Option(
        None, "--feature", metavar="COLUMN", help="csv feature column (repeat for several)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the --output file if it exists."),
    debug: bool = DebugOption,
) -> None:
    """Predict class probabilities and labels (or values) for every example in a file.
    Labels are not needed: a label column in the file is left out of the features."""

    def action() -> None:
        from kexp.inputs import parse_keys
        from kexp.prediction import predict as run_predict, to_csv

        columns = run_predict(target, input, output=output, x=parse_keys(x, "--x"),
                              features=features or None, overwrite=overwrite)
        if output is None:
            sys.stdout.write(to_csv(columns))
        else:
            rows = len(next(iter(columns.values()))) if columns else 0
            err.print(f"wrote {rows} predictions to {output}", soft_wrap=True)

    _run(debug, action)


@app.command("env-report")
def env_report(
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
    debug: bool = DebugOption,
) -> None:
    """Show the software and hardware a run here would record in its manifest, and what
    each distribution strategy would see (devices, replicas, TF_CONFIG, XLA, mixed precision)."""

    def action() -> None:
        from kexp.environment import collect, render
        from kexp.hardware.report import strategy_report

        record = collect()
        record["hardware"] = strategy_report()
        if as_json:
            print(json.dumps(record, indent=2))
        else:
            render(record, out)

    _run(debug, action)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="The experiment's YAML config."),
    sets: Optional[List[str]] = SetOption,
    plot: Optional[Path] = typer.Option(
        None, "--plot", metavar="FILE",
        help="Also draw the model graph into FILE (.png, .svg, .pdf); needs pydot and graphviz.",
    ),
    data: bool = typer.Option(
        False, "--data",
        help="Also read the data and check it as train does before it writes anything: every "
        "split through the model, loss and metrics, label ranges, class weights, and each "
        "callback's monitor against the names the run will log.",
    ),
    debug: bool = DebugOption,
) -> None:
    """Check a config (schema, then every Keras name and argument) and show the model.

    Every problem is reported at once, each with its key path, file and line. The schema is
    checked first, without TensorFlow; Keras names and arguments once it passes. The data is
    not read unless --data is given, so a graph is checked in seconds whatever its data.
    """

    def action() -> None:
        from kexp.config import load_config

        if plot is not None:  # checked first: never draw over a file, nor build for nothing
            from kexp.outputs import check_output_file

            check_output_file(plot, "--plot", example="model.png")
        try:
            loaded = load_config(config, sets or ())
        except ConfigError as exc:
            if exc.hint is None and any(i.line or i.file for i in exc.issues):
                exc.hint = ("layer, optimizer, loss, metric and callback names and arguments "
                            "are checked once these are fixed")
            raise
        _check_files(loaded)
        if data:  # the data files are there before TensorFlow is imported
            from kexp.preflight import check_paths

            check_paths(loaded, None)
        from kexp.training.run import check_data, prepare

        config_obj, info, model = prepare(loaded, connect=False)  # no cluster, no TPU
        if data:  # the model shown is then the one train saves: preprocessing inside
            model = check_data(loaded, config_obj, info, model).model
        from kexp.model.summary import plot as plot_model, render_summary

        render_summary(model, out)
        if data:
            out.print(f"[green]ok:[/green] {config} is valid, and so is its data")
        else:
            out.print(f"[green]ok:[/green] {config} is valid (the data was not read: --data "
                      "checks it and each monitor too)")
        if plot is not None:
            from kexp.outputs import writing

            with writing(plot, "--plot"):
                note = plot_model(model, plot)
            if note is None:
                err.print(f"wrote {plot}", markup=False, soft_wrap=True)
            else:
                err.print("[yellow]note:[/yellow] ", end="")
                err.print(f"no plot written: {note}", markup=False, soft_wrap=True)

    _run(debug, action)


@app.command()
def schema(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write here instead of printing (replaces only a file "
        "kexp generated)."
    ),
    fmt: str = typer.Option(
        "json", "--format", help="json: the JSON Schema for editors; markdown: the reference "
        "page of every key and default."
    ),
    debug: bool = DebugOption,
) -> None:
    """Write the config's JSON Schema (or its reference page), generated from the schema
    that validates configs. Editors: put `# yaml-language-server: $schema=FILE` on a
    config's first line."""

    def action() -> None:
        from kexp.config.schema_output import render_schema, write_generated

        text = render_schema(fmt)
        if output is None:
            sys.stdout.write(text)
        else:
            write_generated(output, text, fmt=fmt)
            err.print(f"wrote {output}", soft_wrap=True)

    _run(debug, action)


@app.command()
def init(
    path: Path = typer.Argument(Path("kexp.yaml"), help="The config file to write."),
    functional: bool = typer.Option(
        False, "--functional", help="A Functional (graph) model instead of a Sequential one."
    ),
    debug: bool = DebugOption,
) -> None:
    """Write a commented starter config that validates and trains as it is (with its data
    and the JSON Schema for editors next to it). Never overwrites a file."""

    def action() -> None:
        from kexp.starter import write_starter

        done = write_starter(path, functional=functional)
        for written in done.written:
            err.print(f"wrote {written}", markup=False, soft_wrap=True)
        for kept in done.kept:
            err.print(f"kept  {kept} (already there)", markup=False)
        out.print(f"next: kexp validate {path} && kexp train {path}", markup=False)

    _run(debug, action)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        _ignore_ctrl_c_while_exiting()


def _ignore_ctrl_c_while_exiting() -> None:
    """Ignore SIGINT once the command has returned and the process only exits.

    The interpreter's teardown (TensorFlow's above all) takes a second or more, and CPython
    puts Ctrl-C back to the system default while it finalizes: a Ctrl-C then killed kexp
    (exit status -2, no message) after a run had completed and printed ``saved:``. The
    command's own exit code stands; its results (a completed run's manifest) are already
    final. SIGTERM keeps its default, so a teardown that hangs can still be stopped.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
