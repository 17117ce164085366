"""Pick a fine-tune checkpoint, log it as the clinical-assistant pyfunc, register and alias it.

The logged model is self-contained: its artifacts are the LoRA adapter and a copy of the base
model's weights and tokenizer, and its code is this package, so `mlflow models serve` needs
neither the training machine's paths nor the Hugging Face hub.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from pipelines.config import ConfigError, check_decoding, flat_params
from pipelines.infer.evaluation import headline_score
from pipelines.runs import schema, tracking
from pipelines.serving.assistant_model import ADAPTER_ARTIFACT, BASE_MODEL_ARTIFACT, OUTPUT_COLUMNS

log = logging.getLogger(__name__)

HEADLINE_MEAN = "headline_mean"  # mean of each trained task's headline metric (all on a 0-1 scale)
WEIGHT_DTYPES = ("auto", "fp32", "bf16", "fp16")
MODE = ("max", "min")

# What the served model imports; pinned to this environment (without local tags such as +cpu).
# Listed by hand because inference from the model would also ask for torchvision.
SERVING_PACKAGES = ("mlflow", "torch", "transformers", "peft", "safetensors", "tokenizers", "pandas", "tqdm")

# A short synthetic request per task: the input example logged with the model.
EXAMPLE_REQUESTS = (
    {"task": "labeling", "text": "COMPARISON: None.\nINDICATION: Cough and fever.\nFINDINGS: Heart size is "
     "normal. There is a right lower lobe consolidation. No pleural effusion or pneumothorax.\n"
     "IMPRESSION: Right lower lobe pneumonia."},
    {"task": "harmonization", "text": "AX T2 FLAIR FS"},
    {"task": "impression", "text": "COMPARISON: Chest radiograph from last year.\nINDICATION: Shortness of "
     "breath.\nFINDINGS: The cardiac silhouette is enlarged. Small bilateral pleural effusions. No focal "
     "consolidation."},
)


@dataclass
class RegisterConfig:
    """Which checkpoint becomes the assistant, and under which registry name and alias.

    run: a fine-tune (or sweep trial) run id, or one checkpoint run id; empty picks the latest
    finished fine-tune on two or more tasks in `experiment`.
    epoch: the checkpoint epoch; 0 picks the best checkpoint by `metric` (`mode` max or min;
    ties go to the later epoch). metric: `headline_mean` or any checkpoint metric such as
    `labeling/f1_macro`.
    weights_dtype: how the base model is stored in the logged model; `auto` keeps the precision
    the fine-tune trained in, so the served answers are the evaluated ones (fp32 SmolLM2-135M is
    about 540 MB, bf16/fp16 half of that).
    batch_size: rows generated together per task when serving.
    decoding: `constrained` (default: labels and class always valid, and fast) or `free`; a
    request may override it with the `decoding` param.
    """

    run: str = ""
    epoch: int = 0
    metric: str = HEADLINE_MEAN
    mode: str = "max"
    name: str = "clinical-assistant"
    alias: str = "champion"
    weights_dtype: str = "auto"
    batch_size: int = 16
    decoding: str = "constrained"
    experiment: str = "clinical-slm"

    def __post_init__(self) -> None:
        self.run = self.run.strip()
        check_decoding(self.decoding)
        if self.epoch < 0:
            raise ConfigError(f"--epoch must be 0 (best checkpoint) or a checkpoint epoch, got {self.epoch}")
        if self.mode not in MODE:
            raise ConfigError(f"--mode must be one of {MODE}, got {self.mode!r}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"--weights-dtype must be one of {WEIGHT_DTYPES}, got {self.weights_dtype!r}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.name.strip():
            raise ConfigError("--name must not be empty; the default is clinical-assistant")
        # The registry's own rule: letters, digits, _ and -, and not `latest` or a version (v3).
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.alias) or self.alias.lower() == "latest" \
                or re.fullmatch(r"[vV]\d+", self.alias):
            raise ConfigError(f"--alias {self.alias!r} is not a valid alias: use letters, digits, _ or -, "
                              "not `latest` or a version such as v3 (e.g. champion, staging)")

    def as_params(self) -> dict[str, str]:
        return flat_params(self)


@dataclass(frozen=True)
class Selection:
    """The chosen checkpoint and why it was chosen."""

    finetune: Run
    checkpoint: Run
    epoch: int
    tasks: tuple[str, ...]
    metric: str
    value: float | None


@dataclass(frozen=True)
class Registered:
    """What `register` produced."""

    name: str
    version: str
    alias: str
    model_uri: str  # models:/m-... (the logged model)
    run_id: str  # the registration run
    selection: Selection

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


# -- choosing the checkpoint

def run_tasks(run: Run) -> tuple[str, ...]:
    """The tasks a fine-tune or checkpoint run trained on."""
    text = run.data.tags.get("tasks") or run.data.params.get("tasks", "")
    return tuple(t for t in text.split(",") if t)


def latest_multitask_finetune(experiment: str) -> Run:
    """The most recent finished fine-tune on two or more tasks in `experiment`."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no experiment {experiment!r} in {mlflow.get_tracking_uri()}: run a fine-tune "
                          "first, or pass --experiment / --run")
    runs = mlflow.search_runs(experiment_ids=[found.experiment_id], output_format="list",
                              filter_string="tags.role = 'finetune' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    for run in runs:
        if len(run_tasks(run)) >= 2:
            return run
    raise ConfigError(f"no finished multi-task fine-tune in experiment {experiment!r}: train one "
                      "(e.g. `mlflow run . -e finetune`) or pass --run <run id>")


def checkpoints_of(run: Run) -> dict[int, Run]:
    """The checkpoint child runs of a fine-tune, by epoch."""
    children = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id], output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.role = 'checkpoint'",
    )
    return {int(c.data.params["epoch"]): c for c in children if "epoch" in c.data.params}


def metric_value(run: Run, metric: str, tasks: tuple[str, ...]) -> float | None:
    """The checkpoint's value of `metric` (headline_mean: the mean of its tasks' headline metrics)."""
    metrics = run.data.metrics
    if metric != HEADLINE_MEAN:
        return metrics.get(metric)
    return headline_score(metrics, tasks)


def select_checkpoint(config: RegisterConfig) -> Selection:
    """The checkpoint named by --run/--epoch, or the best one by --metric."""
    if config.run:
        try:
            run = mlflow.get_run(config.run)
        except MlflowException:
            raise ConfigError(f"--run {config.run!r} is not a run in {mlflow.get_tracking_uri()}") from None
    else:
        run = latest_multitask_finetune(config.experiment)
    if run.data.tags.get(schema.ROLE) == schema.Role.CHECKPOINT:
        epoch = int(run.data.params.get("epoch", 0))
        if config.epoch and config.epoch != epoch:
            raise ConfigError(f"run {run.info.run_id} is the epoch-{epoch} checkpoint, not epoch "
                              f"{config.epoch}; pass its fine-tune run id to choose another epoch")
        finetune = mlflow.get_run(run.data.tags["mlflow.parentRunId"])
        tasks = run_tasks(finetune)
        return Selection(finetune, run, epoch, tasks, config.metric, metric_value(run, config.metric, tasks))

    checkpoints = checkpoints_of(run)
    if not checkpoints:
        raise ConfigError(f"run {run.info.run_id} has no checkpoint runs with an adapter; "
                          "pass a fine-tune run")
    tasks = run_tasks(run)
    if config.epoch:
        if config.epoch not in checkpoints:
            raise ConfigError(f"run {run.info.run_id} has checkpoints at epochs {sorted(checkpoints)}, "
                              f"not {config.epoch}")
        chosen = checkpoints[config.epoch]
        return Selection(run, chosen, config.epoch, tasks, config.metric,
                         metric_value(chosen, config.metric, tasks))
    scored = {e: metric_value(c, config.metric, tasks) for e, c in checkpoints.items()}
    scored = {e: v for e, v in scored.items() if v is not None}
    if not scored:
        names = sorted({m for c in checkpoints.values() for m in c.data.metrics if m.count("/") == 1})
        raise ConfigError(f"no checkpoint of run {run.info.run_id} has metric {config.metric!r}; use "
                          f"{HEADLINE_MEAN} or one of: {', '.join(names)}")
    sign = 1 if config.mode == "max" else -1
    epoch = max(scored, key=lambda e: (sign * scored[e], e))
    return Selection(run, checkpoints[epoch], epoch, tasks, config.metric, scored[epoch])


# -- building the model's artifacts

def pip_requirements() -> list[str]:
    """Pins of the serving packages as installed here."""
    pins = []
    for dist in SERVING_PACKAGES:
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def signature():
    """Inputs task and text; outputs as assistant_model.OUTPUT_COLUMNS; optional generation params."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        # `text` optional so that a null text is answered with a row error, not a failed batch.
        inputs=Schema([ColSpec("string", "task"), ColSpec("string", "text", required=False)]),
        outputs=Schema([ColSpec("string", c) for c in OUTPUT_COLUMNS]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 0), ParamSpec("batch_size", "long", 0),
                            ParamSpec("decoding", "string", "")]),
    )


def stage_base_model(model_name: str, dtype: str, target: Path) -> Path:
    """Save the base model's weights (in `dtype`) and tokenizer to `target`, for the artifacts."""
    from pipelines.models import load_model_and_tokenizer, resolve_model

    model, tokenizer = load_model_and_tokenizer(resolve_model(model_name).path, dtype, "cpu")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def describe(selection: Selection, metrics: dict[str, float], base_model: str) -> str:
    """The model version's description: where it came from and what it scored."""
    chosen = (f"chosen by {selection.metric} = {selection.value:.4f}" if selection.value is not None
              else "chosen by epoch")
    lines = [
        f"Clinical assistant: {base_model} with a LoRA adapter fine-tuned on {', '.join(selection.tasks)}.",
        f"Fine-tune run {selection.finetune.info.run_id}, checkpoint epoch {selection.epoch} "
        f"(run {selection.checkpoint.info.run_id}), {chosen}.",
        "",
        "Metrics on the test split at that epoch:",
        *[f"- {k}: {v:.4f}" for k, v in sorted(metrics.items())],
    ]
    return "\n".join(lines)


def task_metrics(run: Run) -> dict[str, float]:
    """The checkpoint's per-task metrics (`<task>/<metric>`, not per-label or perf figures)."""
    return {k: v for k, v in run.data.metrics.items()
            if k.count("/") == 1 and not k.startswith(("perf/", "train/"))}


# -- the job

def provenance(selection: Selection, config: RegisterConfig) -> dict[str, str]:
    """Where the model comes from: params of the registration run and model, tags of the version."""
    ft_params = selection.finetune.data.params
    dtype = config.weights_dtype
    if dtype == "auto":  # the precision the fine-tune trained (and was evaluated) in
        trained = ft_params.get("precision", "")
        dtype = trained if trained in WEIGHT_DTYPES[1:] else "fp32"
    return {"source_run_id": selection.checkpoint.info.run_id,
            "finetune_run_id": selection.finetune.info.run_id, "checkpoint_epoch": str(selection.epoch),
            "base_model": ft_params.get("model") or selection.checkpoint.data.params["model"],
            "tasks": ",".join(selection.tasks), "weights_dtype": dtype,
            "selection_metric": selection.metric,
            "selection_value": "" if selection.value is None else f"{selection.value:.6g}",
            "study": selection.finetune.data.tags.get("study", ""),
            "data_fingerprint": ft_params.get("data_fingerprint", "")}


def serving_config(selection: Selection, config: RegisterConfig) -> dict:
    """The pyfunc's model_config: the served tasks and the fine-tune's evaluation settings."""
    ft_params = selection.finetune.data.params
    # Flat values: MLflow also logs model_config as run params, next to the same `tasks` param.
    return {"tasks": ",".join(selection.tasks), "batch_size": config.batch_size,
            "max_seq_length": int(ft_params.get("max_seq_length", 768)),
            "max_new_tokens": int(ft_params.get("max_new_tokens", 0)), "decoding": config.decoding,
            "device": "auto", "precision": "auto", "merge_adapter": False}


def log_assistant(selection: Selection, config: RegisterConfig, source: dict[str, str], scratch: Path):
    """Log the pyfunc (adapter + copied base model + this package's code) in the active run."""
    import pandas as pd

    import pipelines

    package = Path(pipelines.__file__).parent
    adapter = mlflow.artifacts.download_artifacts(run_id=selection.checkpoint.info.run_id,
                                                  artifact_path="adapter", dst_path=str(scratch))
    base = stage_base_model(source["base_model"], source["weights_dtype"], scratch / BASE_MODEL_ARTIFACT)
    return mlflow.pyfunc.log_model(
        name="assistant",
        python_model=str(package / "serving" / "assistant_code.py"),
        artifacts={BASE_MODEL_ARTIFACT: str(base), ADAPTER_ARTIFACT: adapter},
        code_paths=[str(package)],
        signature=signature(),
        input_example=pd.DataFrame(list(EXAMPLE_REQUESTS)),
        pip_requirements=pip_requirements(),
        model_config=serving_config(selection, config),
        params=source,
        tags={schema.ROLE: schema.Role.ASSISTANT},
    )


def add_version(config: RegisterConfig, info, selection: Selection, source: dict[str, str],
                metrics: dict[str, float]):
    """A new version of the registered model for the logged model, with `alias` pointing at it."""
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(
            config.name, description="Fine-tuned small language model answering the three radiology "
            "tasks (labeling, harmonization, impression); serve with `mlflow models serve`.")
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # The version's run is the checkpoint run: the registry links to the run holding the
    # adapter, its metrics and its per-example predictions.
    version = client.create_model_version(
        config.name, source=info.model_uri, run_id=selection.checkpoint.info.run_id,
        tags={**source, **{k: f"{v:.6g}" for k, v in metrics.items()}},
        description=describe(selection, metrics, source["base_model"]), model_id=info.model_id,
    )
    client.set_registered_model_alias(config.name, config.alias, version.version)
    return version


def register(config: RegisterConfig) -> Registered:
    """Log the chosen checkpoint as a pyfunc, register it under `name` and point `alias` at it."""
    tracking.setup_tracking(config.experiment, must_exist=True)  # it picks a logged fine-tune
    selection = select_checkpoint(config)
    source = provenance(selection, config)
    metrics = task_metrics(selection.checkpoint)
    log.info("registering %s epoch %d (%s = %s) as %s@%s", selection.finetune.info.run_id, selection.epoch,
             selection.metric, selection.value, config.name, config.alias)
    with tracking.scratch_dir("assistant-") as scratch, \
            mlflow.start_run(run_name=f"register-{config.name}") as run:
        tracking.log_params_once({**config.as_params(), **source, "git_commit": tracking.git_commit()})
        mlflow.set_tags(schema.run_tags(schema.Role.REGISTRATION, source["study"], source["base_model"],
                                        source["tasks"]))
        info = log_assistant(selection, config, source, scratch)
        if metrics:
            mlflow.log_metrics(metrics, step=selection.epoch, model_id=info.model_id)
        version = add_version(config, info, selection, source, metrics)
        mlflow.set_tags({"registered_model": config.name, "registered_version": str(version.version),
                         "registered_alias": config.alias})
    return Registered(config.name, str(version.version), config.alias, info.model_uri, run.info.run_id,
                      selection)
