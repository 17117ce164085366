"""An Optuna sweep over LoRA fine-tunes: each trial is one `train()` call, tracked in MLflow.

MLflow layout (one sweep worker):

    sweep run          role=sweep, optuna_study=<name>: the sweep's config, and at the end the
    │                  best trial, trial counts, re-run command, figures
    └── trial run      role=trial, optuna_trial_number, optuna_state (RUNNING -> COMPLETE/PRUNED/FAIL);
        │              the fine-tune's params and metrics by epoch, plus sweep/objective by epoch
        └── checkpoint runs (role=checkpoint), as for any fine-tune

Several workers joining one study each have their own sweep run, all tagged with the same
`optuna_study`; `tags.optuna_study = '<name>'` finds them all. Optuna's storage holds the one
shared study, and each trial's user attrs link back to MLflow (`mlflow_run_id`,
`mlflow_parent_run_id`) and to the worker that ran it (`worker` = host:pid).
"""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.trial import FrozenTrial

from pipelines.config import FinetuneConfig
from pipelines.data.sources import load_data
from pipelines.redaction import redact_url
from pipelines.runs import schema, tracking
from pipelines.sweeps.report import log_summary
from pipelines.sweeps.samplers import build_pruner, build_sampler, describe
from pipelines.sweeps.space import Objective, SweepSpace, SweepSpaceError
from pipelines.sweeps.storage import (
    StaleTrialHandler,
    StorageOptions,
    fail_stale_trials,
    open_storage,
    sqlite_schema_lock,
    worker_attrs,
    worker_id,
)
from pipelines.train.recipe import FinetuneResult, train

log = logging.getLogger(__name__)

# Trial failures the sweep survives (the trial is FAIL, the next one starts): e.g. CUDA out of
# memory for a large batch, or a configuration the model cannot take.
TRIAL_ERRORS = (RuntimeError, ValueError)


@dataclass
class SweepOptions:
    """One sweep worker: the space, where the study lives, and this worker's budget."""

    space: SweepSpace
    storage: StorageOptions = field(default_factory=StorageOptions)
    study_name: str = ""  # empty: a new study named after the space file and the time
    n_trials: int | None = 20  # this worker's trials (None: until the timeout)
    timeout: float | None = None  # seconds for this worker (None: no limit)
    worker_index: int = 0  # added to the sampler seed; give each worker of a study its own
    study_tag: str = ""  # the lab's `study` tag on every run; empty: the Optuna study name
    experiment: str = "clinical-slm"
    figures: bool = True
    space_file: str = ""

    def __post_init__(self) -> None:
        if self.n_trials is not None and self.n_trials < 1:
            raise SweepSpaceError(f"--n-trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and not self.timeout > 0:  # `not >` also refuses nan
            raise SweepSpaceError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if self.n_trials is None and self.timeout is None:
            raise SweepSpaceError("give --n-trials or --timeout, else the sweep never ends")
        if self.worker_index < 0:
            raise SweepSpaceError(f"--worker-index must be >= 0, got {self.worker_index}")
        if not self.study_name:
            stem = Path(self.space_file).stem if self.space_file else "sweep"
            self.study_name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.study_tag = self.study_tag or self.study_name


@dataclass
class SweepResult:
    """What one worker did, and the study's state when it stopped."""

    study_name: str
    parent_run_id: str
    own_trials: list[int]
    summary: dict[str, Any]


def open_study(options: SweepOptions, handler: StaleTrialHandler) -> optuna.Study:
    """Create the study, or join it when it exists; a joining worker must share its space."""
    objective = options.space.resolved_objective()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=open_storage(options.storage, handler), study_name=options.study_name,
            direction=objective.direction, load_if_exists=True,
            sampler=build_sampler(options.space.sampler, options.worker_index),
            pruner=build_pruner(options.space.pruner),
        )
    if study.direction.name.lower() != objective.direction:
        raise SweepSpaceError(f"study {study.study_name} is {study.direction.name.lower()}d, the sweep "
                              f"file says {objective.direction}; use another --study-name")
    fingerprint = options.space.fingerprint()
    existing = study.user_attrs.get("space_fingerprint")
    if existing is None:
        study.set_user_attr("space_fingerprint", fingerprint)
        study.set_user_attr("space", options.space.describe())
        study.set_user_attr("objective", objective.name)
    elif existing != fingerprint:
        raise SweepSpaceError(
            f"study {study.study_name} was created with another search space (fingerprint {existing}, "
            f"this worker's is {fingerprint}); join with the same sweep file and overrides, or use a "
            "new --study-name"
        )
    return study


class TrialObjective:
    """The Optuna objective: sample a config, fine-tune it, report each evaluation, return the value."""

    def __init__(self, options: SweepOptions, objective: Objective, parent_run_id: str) -> None:
        self.options, self.objective, self.parent_run_id = options, objective, parent_run_id
        self.own_trials: list[int] = []

    def __call__(self, trial: optuna.Trial) -> float:
        config, tags = self._start(trial)
        try:
            result = train(config, on_checkpoint=self._reporter(trial), run_tags=tags)
        except BaseException:
            self._mark_runs(trial.number, "FAIL")
            raise
        return self._finish(trial, result)

    def _start(self, trial: optuna.Trial) -> tuple[FinetuneConfig, dict[str, str]]:
        """Claim the trial for this worker, sample its values, build its fine-tune config and tags."""
        self.own_trials.append(trial.number)
        for key, value in {**worker_attrs(), "mlflow_parent_run_id": self.parent_run_id,
                           "mlflow_run_id": ""}.items():
            trial.set_user_attr(key, value)
        values = {name: spec.suggest(trial) for name, spec in self.options.space.params.items()}
        config = self.options.space.trial_config(
            values, study=self.options.study_tag, experiment=self.options.experiment,
            run_name=f"{self.options.study_name}-trial-{trial.number}")
        return config, self._tags(trial)

    def _reporter(self, trial: optuna.Trial):
        """The checkpoint hook: log and report the objective; True (stop training) if the pruner says so."""
        def report(run_id: str, epoch: int, metrics: dict[str, float]) -> bool:
            value = self.objective.value(metrics)
            # on the trial run (by id: with --processes it runs in other processes)
            mlflow.MlflowClient().log_metric(run_id, "sweep/objective", value, step=epoch)
            trial.set_user_attr("mlflow_run_id", run_id)
            trial.report(value, epoch)
            return trial.should_prune()

        return report

    def _finish(self, trial: optuna.Trial, result: FinetuneResult) -> float:
        """The objective at the last evaluation; a stopped trial is PRUNED, in Optuna and MLflow."""
        trial.set_user_attr("mlflow_run_id", result.run_id)
        last = result.metrics[max(result.metrics)]
        value = self.objective.value(last)
        trial.set_user_attr("metrics", {m: last[m] for m in self.objective.metrics})
        if result.stopped_early_at:
            _set_state(result.run_id, "PRUNED")
            raise optuna.TrialPruned(f"pruned after the evaluation at epoch {result.stopped_early_at}")
        if not math.isfinite(value):
            _set_state(result.run_id, "FAIL")
            raise ValueError(f"objective {self.objective.name} is {value}")
        _set_state(result.run_id, "COMPLETE")
        return value

    def _tags(self, trial: optuna.Trial) -> dict[str, str]:
        tags = {schema.ROLE: schema.Role.TRIAL, schema.OPTUNA_STUDY: self.options.study_name, "optuna_state": "RUNNING",
                "optuna_trial_number": str(trial.number), "sweep_run_id": self.parent_run_id,
                "sweep_worker": worker_id(), "objective": self.objective.name}
        retried = trial.study.get_trials(deepcopy=False)[trial.number].system_attrs.get("failed_trial")
        if retried is not None:
            tags["optuna_retry_of"] = str(retried)
        return tags

    def _mark_runs(self, number: int, state: str) -> None:
        for run in find_trial_runs(self.options.study_name, number):
            _set_state(run.info.run_id, state)


def _set_state(run_id: str, state: str) -> None:
    mlflow.MlflowClient().set_tag(run_id, "optuna_state", state)


def find_trial_runs(study_name: str, number: int) -> list:
    """The MLflow trial runs of trial `number` of `study_name`, in the active experiment."""
    experiment_id = mlflow.active_run().info.experiment_id if mlflow.active_run() else None
    if experiment_id is None:
        return []
    return mlflow.search_runs(
        experiment_ids=[experiment_id], output_format="list",
        filter_string=(f"tags.optuna_study = '{study_name}' and tags.optuna_trial_number = '{number}' "
                       "and tags.role = 'trial'"),
    )


def mark_dead_worker_runs(study_name: str, trial: FrozenTrial) -> None:
    """A trial whose worker died: its trial run (and open children) and the worker's sweep run
    end FAILED in MLflow, tagged so, instead of showing RUNNING forever."""
    client = mlflow.MlflowClient()
    for run in find_trial_runs(study_name, trial.number):
        client.set_tag(run.info.run_id, "optuna_state", "FAIL")
        client.set_tag(run.info.run_id, "optuna_failed_by", "dead worker")
        children = mlflow.search_runs(
            experiment_ids=[run.info.experiment_id], output_format="list",
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'")
        for open_run in [run, *children]:
            if open_run.info.status == "RUNNING":
                client.set_terminated(open_run.info.run_id, "FAILED")
    parent = trial.user_attrs.get("mlflow_parent_run_id")
    if parent and client.get_run(parent).info.status == "RUNNING":
        client.set_tag(parent, "sweep_worker_died", "true")
        client.set_terminated(parent, "FAILED")


def sweep_params(options: SweepOptions, objective: Objective) -> dict[str, Any]:
    """The sweep run's params: storage, study, sampler, pruner, objective, space, budget."""
    space = options.space
    sampler = dict(space.sampler)
    if sampler.get("seed") is not None:
        sampler["seed"] = int(sampler["seed"]) + options.worker_index
    params: dict[str, Any] = {
        "optuna_study": options.study_name, "storage": redact_url(options.storage.url),
        "space_file": options.space_file or "<memory>", "space_fingerprint": space.fingerprint(),
        "sampler": describe(sampler), "pruner": describe(space.pruner), "objective": objective.name,
        "objective_metrics": ",".join(objective.metrics), "objective_combine": objective.combine,
        "direction": objective.direction, "n_trials": options.n_trials, "timeout": options.timeout,
        "worker_index": options.worker_index, "evaluate_at": ",".join(map(str, space.evaluate_at)),
        "heartbeat_interval": options.storage.heartbeat_interval,
        "grace_period": options.storage.grace_period, "max_retry": options.storage.max_retry,
    }
    params.update({f"fixed/{k}": v for k, v in space.fixed.items()})
    params.update({f"search/{k}": json.dumps(v) for k, v in space.describe()["params"].items()})
    return params


def run_sweep(options: SweepOptions) -> SweepResult:
    """Run (or join) the study for this worker's budget, tracked under one MLflow sweep run."""
    # -- the trials' data, loaded once: a missing or damaged file fails before the study and run exist
    for spec in options.space.data_specs():
        load_data(spec)

    # -- study: create or join; trials of dead workers are failed and re-queued
    handler = StaleTrialHandler(options.storage.max_retry)
    study = open_study(options, handler)
    objective = options.space.resolved_objective()
    log.info("study %s on %s; other workers join with --study-name %s --storage %s",
             options.study_name, redact_url(options.storage.url), options.study_name, redact_url(options.storage.url))

    # -- the MLflow sweep run (several processes may create a new SQLite store at once)
    with sqlite_schema_lock(tracking.default_tracking_uri()):
        tracking.setup_tracking(options.experiment)
    run = mlflow.start_run(run_name=f"sweep-{options.study_name}", tags={
        schema.ROLE: schema.Role.SWEEP, schema.STUDY: options.study_tag, schema.OPTUNA_STUDY: options.study_name,
        "objective": objective.name, "direction": objective.direction, "sweep_worker": worker_id()})
    handler.on_failed = lambda trial: mark_dead_worker_runs(options.study_name, trial)
    trial_objective = TrialObjective(options, objective, run.info.run_id)
    try:
        tracking.log_params_once(sweep_params(options, objective))
        tracking.log_json(options.space.describe(), "sweep/space.json")
        fail_stale_trials(study, handler)

        # -- the trials
        study.optimize(
            trial_objective, n_trials=options.n_trials, timeout=options.timeout, catch=TRIAL_ERRORS,
            gc_after_trial=True, callbacks=[lambda study, _: fail_stale_trials(study, handler)],
        )

        # -- the study as this worker leaves it
        fail_stale_trials(study, handler)
        summary = log_summary(study, options.space, options.study_tag, trial_objective.own_trials,
                              options.figures)
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")
    return SweepResult(options.study_name, run.info.run_id, trial_objective.own_trials, summary)
