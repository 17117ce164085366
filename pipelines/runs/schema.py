"""The MLflow run schema: the one contract between producers (pipelines/) and consumers
(analysis/, dashboards/). Every role, tag, artifact path, prediction-record field and table name
a run carries is defined here once; docs/run_schema.md describes what each run holds."""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """The `role` tag: what a run is."""

    FINETUNE = "finetune"          # one fine-tune: params, train/loss by epoch, metrics at checkpoints
    CHECKPOINT = "checkpoint"      # child of a fine-tune: adapter, predictions and metrics at one epoch
    EVALUATION = "evaluation"      # a logged adapter or the base model scored (evaluate)
    BASELINE = "baseline"          # a prompted model or a rule back end scored (baseline)
    HARMONIZE = "harmonize"        # series descriptions of files mapped to classes (harmonize)
    SWEEP = "sweep"                # an Optuna sweep's parent run
    TRIAL = "trial"                # one sweep trial: a fine-tune nested in the sweep run
    STUDY = "study"                # a study's parent run
    ANALYSIS = "analysis"          # tables of an analysis (analysis.analyze)
    REGISTRATION = "registration"  # an assistant registered in the model registry
    ASSISTANT = "assistant"        # the logged pyfunc model's run
    RESUME = "resume"              # the run `mlflow run` made for a resumed fine-tune: a pointer


# Runs whose metrics are a model's scores on a test split, with predictions/<task>.jsonl.
SCORED_ROLES: tuple[Role, ...] = (Role.CHECKPOINT, Role.EVALUATION, Role.BASELINE)
# Runs that train a model (their checkpoints are children).
TRAINING_ROLES: tuple[Role, ...] = (Role.FINETUNE, Role.TRIAL)

# -- tags
ROLE = "role"
STUDY = "study"
MODEL = "model"
TASKS = "tasks"
OUTPUTS_PATH = "outputs_path"           # a fine-tune's local folder (resume finds it there)
RESUMED_FROM_EPOCH = "resumed_from_epoch"
RESUMES = "resumes"
RESUMED_RUN_ID = "resumed_run_id"       # on a Role.RESUME pointer
STOPPED_EARLY = "stopped_early"         # the epoch a checkpoint hook (a pruner) stopped at
EVALUATION_KIND = "evaluation"          # on Role.EVALUATION: "adapter" or "zero-shot"
ANALYSIS_KIND = "analysis"              # on Role.ANALYSIS: the analysis' kind
OPTUNA_STUDY = "optuna_study"

# -- artifacts
SPLIT_MANIFEST = "data/split_manifest.json"   # seed, fingerprint, train and test ids per dataset
POISONED_IDS = "data/poisoned_ids.json"       # the labeling reports a poisoning run altered
ADAPTER_DIR = "adapter"                       # LoRA adapter, tokenizer and model card
PREDICTIONS_DIR = "predictions"

# -- one prediction record (a line of predictions/<task>.jsonl)
PREDICTION_FIELDS: tuple[str, ...] = ("id", "input", "reference", "output", "parsed", "parse_status", "scores")


def run_tags(role: Role, study: str, model: str, tasks: tuple[str, ...] | list[str] | str,
             **extra: str) -> dict[str, str]:
    """The tags every producer sets: role, study, model and tasks (comma-joined), plus `extra`."""
    joined = tasks if isinstance(tasks, str) else ",".join(tasks)
    return {ROLE: str(role), STUDY: study, MODEL: model, TASKS: joined, **extra}


def config_artifact(entry_point: str) -> str:
    """Where a run logs its resolved config: `--config` with this file repeats the run."""
    return f"config/{entry_point}.yaml"


def predictions_file(task: str) -> str:
    """A task's prediction records, one JSON object per line (what analysis reads)."""
    return f"{PREDICTIONS_DIR}/{task}.jsonl"


def predictions_table(task: str) -> str:
    """The same records as an MLflow table (the UI's evaluation view, mlflow.load_table)."""
    return f"{PREDICTIONS_DIR}/{task}.json"
