"""``kexp train``: from a config file to a complete run directory.

    run = train("configs/digits_cnn.yaml")
    run.directory, run.test_metrics

The order matters and is the point of this module:

1. validate the config (schema, no TensorFlow),
2. create the strategy, then build and compile the model inside its scope, resolving every
   Keras name and argument (all mistakes reported at once),
3. read the data and check that every split fits the model input, the loss and each metric,
4. only then create the run directory, so a broken config never leaves a run behind,
5. train, save, evaluate, keeping ``manifest.json`` truthful at every step: a run that fails
   keeps its directory, marked ``failed`` with the error.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from kexp.config import LoadedConfig, load_config
from kexp.config.overrides import overrides_record
from kexp.config.schema import ExperimentConfig
from kexp.config.yaml_io import dump
from kexp.data.pipeline import make_dataset, pipeline_record, steps
from kexp.data.preprocessing import attach_preprocessing
from kexp.data.splits import Recorded, Splits, load_splits
from kexp.display import RichProgress, console as progress_console, metrics_table
from kexp.environment import collect
from kexp.errors import ConfigError, ConfigIssue, TrainingFailed, UserError
from kexp.hardware import StrategyInfo, setup_hardware
from kexp.hardware.batch import check_last_batch
from kexp.hardware.execution import fit_execution
from kexp.hardware.precision import policy_kept
from kexp.hardware.cluster import release, scratch_root
from kexp.manifest import Manifest
from kexp.model import build_model, compile_model
from kexp.model.build import resolve_compile
from kexp.model.schedules import check_callbacks, check_schedule_steps
from kexp.plugins import import_config_plugins, records_for
from kexp.preflight import check_paths, check_space
from kexp.safety import check_config as check_config_code, unsafe_allowed
from kexp.seeding import seed_everything
from kexp.training.artifacts import save_final_models, write_json, write_text
from kexp.training.callbacks import (
    build_callbacks, check_callback_paths, check_monitors, check_swap_ema,
)
from kexp.training.class_weight import class_weights
from kexp.training.probe import check_data_fits
from kexp.training.session import Session, resume_command
from kexp.training.weights import weights_sha256
from kexp.training.stages import apply_freeze, fit as fit_stages


#: Stands for the name of a new run's directory, drawn only once the checks pass.
NEW_RUN = "<new run>"


@dataclass
class Run:
    """The outcome of ``kexp train``: where it went and what it measured."""

    directory: Path
    config: ExperimentConfig
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    test_metrics: dict[str, float] | None = None
    status: str = "completed"


@dataclass
class Checked:
    """The model and data once every check before a run directory has passed."""

    model: Any  # with the preprocessing adapted on the training split inside it
    splits: Splits
    data_pipeline: dict[str, Any]


def check_data(loaded: LoadedConfig, config: ExperimentConfig, info: StrategyInfo,
               model: Any, plan: Any = None) -> Checked:
    """Read the data and check it against the compiled ``model`` (from :func:`prepare`).

    The last step before a run directory exists, shared by ``kexp train`` and
    ``kexp validate --data``: a label out of range or a monitor that names nothing the run
    logs is found here, not after an epoch of training. A resume (``plan``) reads what the
    run read: its split indices and the files its TFRecord globs matched then.
    """
    with loaded.locating():
        splits = load_splits(config.data, config.seed,
                             saved_indices=plan.saved_indices if plan else None,
                             recorded=Recorded.from_manifest(plan.manifest.data) if plan else None)
        # adapted on the training split only, then saved inside the model (kexp.data)
        model = attach_preprocessing(model, config, splits.train, info.strategy)
        # the first examples of every split through the model, loss and each metric
        # (kexp.training.probe); every monitor names what they logged (Keras' names)
        logged = check_data_fits(model, splits, config)
        check_monitors(model, logged, config)
        class_weights(model, config)  # keys against the model's classes
        data_pipeline = pipeline_record(splits, config.data)
        # a last batch the replicas share unevenly: warned, noted (kexp.hardware.batch)
        check_last_batch(info, len(splits.train), config.data)
        # whole executions that end where an epoch ends (kexp.hardware.execution)
        steps = train_steps(splits, config)
        fit_execution(model, info, config.hardware.steps_per_execution, steps)
        # a schedule in epochs, in steps now they are known (two boundaries on one step?);
        # training converts it again, with the same number (kexp.model.schedules)
        check_schedule_steps(model, config, steps)
    return Checked(model, splits, data_pipeline)


def _as_loaded(config: str | Path | dict[str, Any] | LoadedConfig) -> LoadedConfig:
    """A config file, an already loaded config, or a mapping (a config read or made in
    Python: checked as the same YAML would be, relative paths from the working directory)."""
    if isinstance(config, LoadedConfig):
        return config
    if isinstance(config, dict):
        from kexp.config.loader import load_config_text

        return load_config_text(dump(config), base_dir=Path.cwd())
    if not isinstance(config, (str, Path)):
        raise UserError(f"a config is a YAML file's path or a mapping, not "
                        f"{type(config).__name__}")
    return load_config(config)


def prepare(
    loaded: LoadedConfig, *, connect: bool = True
) -> tuple[ExperimentConfig, StrategyInfo, Any]:
    """Seed, create the strategy, build and compile the model: everything before data.

    Raises ConfigError (with every Keras-level mistake) before anything is written.
    """
    config = loaded.config
    with loaded.locating():  # Keras-level errors get their YAML file and line here
        # the user code the config names (plugins:), before any name is resolved; and no
        # code written into the config itself (kexp.safety)
        import_config_plugins(loaded)
        check_config_code(config.model_dump(mode="json"))
        # devices, strategy, seed (shared by all workers), global batch, dtype policy;
        # connect=False (validate) creates no multi-worker/TPU strategy
        config, info = setup_hardware(config, connect=connect)
        seed_everything(config.seed, config.deterministic)
        issues: list[ConfigIssue] = []
        with info.strategy.scope(), unsafe_allowed(config.allow_unsafe_deserialization):
            model = _collect(issues, build_model, config)
            if model is not None:
                _collect(issues, apply_freeze, model, config)  # before compile: freeze stage
                model = info.adapt_model(model)  # float32 outputs under mixed precision
                _collect(issues, compile_model, model, config)
            else:  # still check the optimizer, loss and metric names
                _collect(issues, resolve_compile, config)
        # Construct the callbacks once against a scratch directory: a bad callback argument
        # is found now, before a run directory exists. (Constructors do not write files.)
        _collect(issues, build_callbacks, config,
                 Path(tempfile.gettempdir()) / "kexp-callback-check")
        _collect(issues, check_callbacks, config, model)  # ReduceLROnPlateau vs a schedule
        _collect(issues, check_swap_ema, config, model)  # SwapEMAWeights needs use_ema
        if issues:
            raise ConfigError(issues)
    return config, info, model


def _collect(issues: list[ConfigIssue], step: Any, *args: Any) -> Any:
    """Run one Keras-level check; its ConfigError joins ``issues`` so all are reported."""
    try:
        return step(*args)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None


def _datasets(splits: Splits, config: ExperimentConfig, run_dir: Path,
              passes_from: int | None = None) -> dict[str, Any]:
    """The split's datasets; with ``passes_from``, training is an endless stream of passes
    from that one (kexp.data.pipeline), which is what the resumable fit reads."""
    data = config.data
    out = {}
    for name in ("train", "validation", "test"):
        arrays = getattr(splits, name)
        if arrays is not None:
            out[name] = make_dataset(
                arrays,
                data.batch_size,
                training=name == "train",
                seed=config.seed,
                shuffle=data.shuffle,
                shuffle_buffer=data.shuffle_buffer,
                cache=data.cache,
                cache_file=run_dir / "cache" / name,
                prefetch=data.prefetch,
                drop_remainder=data.drop_remainder,
                shard_policy=data.shard_policy,
                passes_from=passes_from if name == "train" else None,
            )
    return out


def _set_aside_stale_models(run_dir: Path, formats: list[str], say: Console) -> dict[str, str]:
    """Rename a final model of a format this run no longer writes (a resume that dropped
    ``h5`` from ``output.formats``) to ``model.<fmt>.stale``, and say so.

    Left under its name, it would sit beside the new model with older weights, and
    ``kexp evaluate RUN`` (which takes ``model.keras``, else ``model.h5``) could read it.
    Renamed, not deleted: it is still the user's.
    """
    stale = {}
    for fmt in ("keras", "h5"):
        old = run_dir / f"model.{fmt}"
        if fmt not in formats and old.is_file():
            target = old.with_name(f"{old.name}.stale")
            os.replace(old, target)
            stale[target.name] = (f"{old.name} from before this resume, whose output.formats "
                                  "no longer writes it: not the final weights")
            say.print(f"[yellow]note:[/yellow] {old.name} is from before this resume, which "
                      f"writes only {', '.join(formats)}: renamed {target.name}", highlight=False)
    return stale


def _validation(dataset: Any, validation_steps: int | None) -> Any:
    """The validation batches of an epoch: the first ``validation_steps`` of them, if given.

    Given to ``fit`` as ``validation_steps``, Keras would round them up to whole executions
    of ``steps_per_execution`` steps (1 step at 4 per execution evaluates 4 batches); a
    dataset that ends after them stops the execution where it should, at any execution size.
    """
    if dataset is None or validation_steps is None:
        return dataset
    return dataset.take(validation_steps)


def train(
    config: str | Path | dict[str, Any] | LoadedConfig | None,
    *,
    output_root: str | Path | None = None,
    out: Console | None = None,
    resume: str | Path | None = None,
) -> Run:
    """Train the experiment ``config`` declares and write its run directory.

    With ``resume``, continue that run directory instead (``config``, if given, may change
    only the keys :mod:`kexp.training.resume` declares safe).
    """
    say = out or Console()
    with policy_kept():  # the run sets the process-wide dtype policy; the caller's is back
        if resume is not None:  # the run's own config, its state, safe changes only
            from kexp.training.resume import plan_resume

            # the plan holds the run's lock from before it reads the state until training ends
            with plan_resume(resume, config) as plan:
                return _train(plan.loaded, output_root, say, plan)
        return _train(_as_loaded(config), output_root, say, None)


def _train(loaded: LoadedConfig, output_root: str | Path | None, say: Console,
           plan: Any) -> Run:
    if isinstance(output_root, str) and not output_root.strip():
        raise UserError("--output-root is empty: give a folder for the runs ('.' for the "
                        "working directory)")
    root = Path(output_root) if output_root is not None else Path(loaded.config.output.root)
    # before the model and the data: data files there, output root writable (kexp.preflight)
    check_paths(loaded, None if plan else root, root_from_option=output_root is not None)
    with loaded.locating():  # the paths the config gives callbacks, likewise
        check_callback_paths(loaded.config, plan.run_dir if plan else
                             root / loaded.config.name / NEW_RUN, new_run=plan is None)
    config_obj, info, model = prepare(loaded)
    check_space(plan.run_dir if plan else root, model, len(config_obj.output.formats))
    checked = check_data(loaded, config_obj, info, model, plan)
    model, splits, data_pipeline = checked.model, checked.splits, checked.data_pipeline

    from kexp.training.rundir import new_run_dir

    root = Path(output_root) if output_root is not None else Path(config_obj.output.root)
    say.print(info.summary())
    environment = None if plan is not None else collect()
    # only the chief writes the run directory; other workers write a scratch copy, removed
    scratch = None if info.is_chief else scratch_root(info.cluster)
    try:
        run_dir = plan.run_dir if plan is not None else new_run_dir(
            scratch or root, config_obj.name).resolve()
        # entered at once: locked (a resume's lock taken over), signal-safe, and in charge of
        # the manifest's status from before it says `running` (kexp.training.session)
        with Session(run_dir, snapshot=plan.snapshot if plan else None,
                     lock=plan.lock if plan else None) as session:
            if plan is not None:  # the same directory: manifest, config.yaml (safe changes)
                manifest = plan.manifest
                session.track(manifest)
                plan.start(config_obj, say)
            else:
                resolved = config_obj.model_dump(mode="json")
                write_text(run_dir / "config.yaml", dump(resolved))
                if loaded.overrides:  # config.yaml includes them; this says which were given
                    write_text(run_dir / "overrides.yaml", overrides_record(loaded.overrides))
                manifest = Manifest.new(
                    run_dir, config=resolved, config_file=loaded.file, seed=config_obj.seed,
                    environment=environment,
                )
                session.track(manifest)
                manifest.save()
                say.print(f"[bold]kexp[/bold] run directory: {run_dir}" if scratch is None else
                          f"[bold]kexp[/bold] this worker's scratch copy of the run (removed "
                          f"at the end; the chief writes the run directory): {run_dir}",
                          soft_wrap=True)
            manifest.record_data_files(splits.files)
            manifest.update(plugins=[r.as_dict() for r in records_for(config_obj.plugins)])
            manifest.update(splits=splits.record(), strategy=info.record())
            manifest.update(class_names=splits.class_names, data_pipeline=data_pipeline)
            splits.save_indices(run_dir / "splits.npz")
            run = _fit_and_save(config_obj, model, splits, run_dir, manifest, say, session,
                                chief=scratch is None)
    finally:
        release(scratch)
    return run


def train_steps(splits: Splits, config: ExperimentConfig) -> int:
    """Training steps in an epoch: ``train.steps_per_epoch``, else one pass over the split."""
    return config.train.steps_per_epoch or steps(
        splits.train, config.data.batch_size, config.data.drop_remainder
    )


def _fit_and_save(
    config: ExperimentConfig, model: Any, splits: Splits, run_dir: Path,
    manifest: Manifest, say: Console, session: Session, chief: bool = True,
) -> Run:
    datasets = _datasets(splits, config, run_dir)
    callbacks, checkpoints = build_callbacks(config, run_dir)
    epoch_steps = train_steps(splits, config)
    progress = RichProgress(config.train.epochs, epoch_steps, progress_console)
    freeze = getattr(config, "freeze", None)
    # model.fit per stage (kexp.training.stages) on a seeded stream of epochs, from the saved
    # state on a resume, stopping cleanly on a signal (kexp.training.session); NaN: raises
    logs = session.fit(
        model,
        lambda first_pass: _datasets(splits, config, run_dir, first_pass)["train"],
        epochs=config.train.epochs,
        steps_per_epoch=epoch_steps,
        batches_per_pass=steps(splits.train, config.data.batch_size, config.data.drop_remainder),
        callbacks=[progress, *callbacks],
        last_checkpoint=run_dir / "checkpoints" / "last.keras" if config.checkpoint.save_last else None,
        stage_starts=[freeze.epochs] if freeze is not None and freeze.epochs else [],
        enter_stage=lambda m, x, **kwargs: fit_stages(m, config, x, **kwargs),
        validation_data=_validation(datasets.get("validation"), config.train.validation_steps),
        class_weight=class_weights(model, config),  # every class (kexp.training.class_weight)
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,
    )
    epochs_done = len(next(iter(logs.values()), []))

    # a format that cannot be written costs that file only: the rest is saved and recorded
    missing = save_final_models(model, run_dir, config.output.formats)
    stale = _set_aside_stale_models(run_dir, config.output.formats, say)

    rows: dict[str, dict[str, float]] = {}
    if logs:
        rows["train (last epoch)"] = {
            k: v[-1] for k, v in logs.items() if not k.startswith("val_") and k != "learning_rate"
        }
        val = {k[4:]: v[-1] for k, v in logs.items() if k.startswith("val_")}
        if val:
            rows["validation (last epoch)"] = val
    test_metrics = None
    if "test" in datasets:
        test_metrics = {k: float(v) for k, v in model.evaluate(
            datasets["test"], return_dict=True, verbose=0).items()}
        rows["test"] = test_metrics
        write_json(run_dir / "evaluation.json", {
            "split": "test", "examples": len(splits.test), "metrics": test_metrics,
            "model": "model.keras",
        })
    say.print(metrics_table(rows, title=f"{config.name}: {epochs_done} epoch(s)"))
    best = None
    if checkpoints is not None and checkpoints.best_epoch is not None:
        best = {"monitor": checkpoints.monitor, "value": checkpoints.best, "epoch": checkpoints.best_epoch}
    status = "incomplete" if missing else "completed"
    # everything is written: a signal from here on changes nothing (kexp.training.signals)
    session.stop.completed = status == "completed"
    manifest.finish(
        status,
        missing_artifacts=missing or None,
        epochs_completed=epochs_done,
        final_metrics={k: v[-1] for k, v in logs.items()},
        test_metrics=test_metrics,
        best_checkpoint=best,
        weights_sha256=weights_sha256(model),  # what `kexp reproduce` compares
        **({"stale_models": stale} if stale else {}),
    )
    for name, why in missing.items():
        say.print(f"[red]error:[/red] {name} could not be written: {escape(why)}",
                  highlight=False)
    if missing:
        say.print(f"the run trained to the end, but is [bold]incomplete[/bold] (manifest.json: "
                  f"missing_artifacts); what was written is in {run_dir}. Once the cause is "
                  f"fixed, {escape(resume_command(run_dir))} writes the missing files",
                  highlight=False)
    elif chief:
        say.print(f"saved: {run_dir}", soft_wrap=True)  # one line, for scripts
    else:  # run_dir is this worker's scratch copy, removed as the run ends
        say.print("done: the chief wrote the run directory; this worker's scratch copy is "
                  "removed")
    return Run(run_dir, config, model, logs, test_metrics, status)
