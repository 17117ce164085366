"""Which MLflow run a `--resume` continues, and the config it was started with.

`--resume` alone (or `latest`): the newest fine-tune run in the experiment that is not FINISHED
(RUNNING after a SIGKILL or a power cut, KILLED after SIGINT/SIGTERM, FAILED) and whose params
equal this command's; none: a new run starts. `--resume RUN_ID`: that run; its logged params are
the config, and options given on the command line must agree with them.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, get_type_hints

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from pipelines.cli import parse_bool
from pipelines.config import ConfigError, FinetuneConfig
from pipelines.runs import schema

if TYPE_CHECKING:
    from pipelines.train.prepare import Prepared

log = logging.getLogger(__name__)

LATEST = "latest"
NOT_COMPARED = {"extra_tags", "output_dir", "processes", "system_metrics"}  # not a param, or no effect on results


def stored_values(params: dict[str, str]) -> dict[str, Any]:
    """FinetuneConfig field values read back from a run's params (strings), typed."""
    hints = get_type_hints(FinetuneConfig)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(FinetuneConfig):
        if f.name in NOT_COMPARED or f.name not in params:
            continue
        raw = params[f.name]
        kind = hints[f.name]
        readers = {int: lambda text: int(float(text)), float: float, bool: parse_bool}
        values[f.name] = readers.get(kind, str)(raw)
    return values


def _resolved(prepared: Prepared) -> FinetuneConfig:
    """The config as the run logged it: device, precision and LoRA targets resolved."""
    cfg = prepared.config
    return dataclasses.replace(cfg, device=prepared.device, precision=prepared.precision,
                               lora_targets=cfg.lora_targets or prepared.model_ref.lora_targets)


def differences(prepared: Prepared, run: Run) -> list[str]:
    """How this fine-tune differs from what `run` was started with ('' if it does not)."""
    params = run.data.params
    try:
        stored = FinetuneConfig(**stored_values(params))
    except (ValueError, TypeError) as exc:
        return [f"its params cannot be read back ({exc})"]
    mine = _resolved(prepared)
    diffs = [f"{f.name} (run: {getattr(stored, f.name)!r}, now: {getattr(mine, f.name)!r})"
             for f in dataclasses.fields(FinetuneConfig)
             if f.name not in NOT_COMPARED and f.name in params and getattr(stored, f.name) != getattr(mine, f.name)]
    fingerprint = params.get("data_fingerprint")
    if fingerprint and fingerprint != prepared.manifest["fingerprint"]:
        now = prepared.manifest["fingerprint"]
        diffs.append(f"data_fingerprint (run: {fingerprint}, now: {now}: the data changed)")
    return diffs


def _experiment_id(config: FinetuneConfig) -> str | None:
    """The experiment this command logs to: `mlflow run`'s (MLFLOW_RUN_ID), else config.experiment."""
    if os.environ.get("MLFLOW_RUN_ID"):
        return MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
    experiment = mlflow.get_experiment_by_name(config.experiment)
    return experiment.experiment_id if experiment else None


def find_latest(prepared: Prepared) -> Run | None:
    """The newest unfinished fine-tune in this experiment with the same params, if any."""
    experiment_id = _experiment_id(prepared.config)
    if experiment_id is None:
        return None
    wrapper = os.environ.get("MLFLOW_RUN_ID")  # the run `mlflow run` just created for this command
    runs = MlflowClient().search_runs([experiment_id], filter_string=f"tags.{schema.ROLE} = '{schema.Role.FINETUNE}'",
                                      order_by=["attributes.start_time DESC"], max_results=500)
    for run in runs:
        if run.info.status != "FINISHED" and run.info.run_id != wrapper and not differences(prepared, run):
            return run
    return None


def get_run(run_id: str) -> Run:
    """The run `run_id`, or a ConfigError saying it is not in this store."""
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--resume {run_id}: no such run in the tracking store {mlflow.get_tracking_uri()}; "
                          "check the run id and MLFLOW_TRACKING_URI") from None


def run_to_resume(prepared: Prepared, resume: str) -> Run | None:
    """The run to continue (None: nothing to resume, start a new one); errors say what to change."""
    if resume == LATEST:
        run = find_latest(prepared)
        if run is None:
            log.info("--resume: no unfinished fine-tune with these params in experiment %r; starting a new run",
                     prepared.config.experiment)
        return run
    run = get_run(resume)
    role = run.data.tags.get(schema.ROLE)
    if run.info.lifecycle_stage != "active":
        raise ConfigError(f"--resume {resume}: the run is deleted; restore it (mlflow runs restore) or start anew")
    if role != schema.Role.FINETUNE:
        raise ConfigError(f"--resume {resume}: it is a {role or 'untagged'} run, not a fine-tune (tag role=finetune)")
    if run.info.status == "FINISHED":
        raise ConfigError(f"--resume {resume}: the run is already FINISHED; nothing to resume")
    diffs = differences(prepared, run)
    if diffs:
        raise ConfigError(f"--resume {resume}: these options differ from the run's: {'; '.join(diffs)}. "
                          "Drop them (the run's values are used) or start a new run without --resume")
    return run


def config_for_run(run_id: str, explicit: dict[str, Any]) -> FinetuneConfig:
    """The config `run_id` was started with; options given explicitly override (and are checked later)."""
    run = get_run(run_id)
    return FinetuneConfig(**{**stored_values(run.data.params), **explicit})
