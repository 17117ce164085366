"""Score an adapter (logged or on disk) or a base model alone, as an MLflow run of its own."""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from pipelines.config import ConfigError, EvaluateConfig, config_document
from pipelines.data.examples import build_test_examples
from pipelines.data.sources import load_data
from pipelines.data.split import manifest, split_bundle
from pipelines.infer.evaluation import evaluate_all, merged_metrics
from pipelines.infer.loading import load_for_inference
from pipelines.models import resolve_device, resolve_precision
from pipelines.runs import schema, tracking

log = logging.getLogger(__name__)


@dataclass
class AdapterRef:
    """Where an adapter came from: its local folder, the run that logged it, its base model."""

    folder: Path | None = None
    run_id: str = ""
    epoch: int = 0
    model: str = ""


def _checkpoint_run(run, epoch: int):
    """The checkpoint child of a fine-tune run: the given epoch, or the last one."""
    children = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id], output_format="list",
        filter_string=(f"tags.mlflow.parentRunId = '{run.info.run_id}' "
                       f"and tags.{schema.ROLE} = '{schema.Role.CHECKPOINT}'"),
    )
    by_epoch = {int(c.data.params["epoch"]): c for c in children if "epoch" in c.data.params}
    if not by_epoch:
        raise ConfigError(f"fine-tune run {run.info.run_id} has no checkpoint runs with an adapter")
    if epoch and epoch not in by_epoch:
        raise ConfigError(f"run {run.info.run_id} has checkpoints at epochs {sorted(by_epoch)}, not {epoch}")
    return by_epoch[epoch or max(by_epoch)]


def require_store_for(ref: str) -> None:
    """An --adapter that is not a folder must be a run id, so the store must exist: refuse before an
    empty one is created (e.g. started from another folder)."""
    if ref and not Path(ref).expanduser().is_dir():
        try:
            tracking.check_store_exists(tracking.default_tracking_uri())
        except tracking.TrackingUnavailableError as exc:
            raise ConfigError(f"--adapter {ref!r} is neither a folder nor a run id: {exc}") from None


def resolve_adapter(ref: str, epoch: int, scratch: Path) -> AdapterRef:
    """Turn --adapter (folder or run id) into a local adapter folder, downloading if logged."""
    if not ref:
        return AdapterRef()
    folder = Path(ref).expanduser()
    if folder.is_dir():
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"adapter folder {folder} has no adapter_config.json")
        return AdapterRef(folder=folder.resolve())
    try:
        run = mlflow.get_run(ref)
    except MlflowException:
        raise ConfigError(f"--adapter {ref!r} is neither a folder nor a run id in {mlflow.get_tracking_uri()}") \
            from None
    if run.data.tags.get(schema.ROLE) == schema.Role.FINETUNE:
        run = _checkpoint_run(run, epoch)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=schema.ADAPTER_DIR,
                                                dst_path=str(scratch))
    return AdapterRef(Path(local), run.info.run_id, int(run.data.params.get("epoch", 0)), run.data.params["model"])


def evaluate_model(config: EvaluateConfig) -> str:
    """Score the adapter or base model on the chosen split; returns the evaluation run id."""
    require_store_for(config.adapter)
    tracking.setup_tracking(config.experiment)
    bundle = load_data(config.data)
    splits = split_bundle(bundle, config.split_seed)
    ids = {name: (s.test if config.split == "test" else tuple(sorted(s.train + s.test)))
           for name, s in splits.items()}
    test = build_test_examples(bundle, ids, config.tasks, config.eval_limit)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    with tempfile.TemporaryDirectory(prefix="adapter-") as scratch:
        adapter = resolve_adapter(config.adapter, config.epoch, Path(scratch))
        model_name = adapter.model or config.model
        model, tokenizer = load_for_inference(model_name, adapter.folder, precision, device)
        kind = "adapter" if adapter.folder else "zero-shot"
        name = config.run_name or f"eval-{model_name}-{kind}-{config.split}"
        params = {**config.as_params(), "model": model_name, "data_fingerprint": bundle.fingerprint(),
                  "source_run": adapter.run_id, "source_epoch": str(adapter.epoch), "device": device,
                  "precision": precision, "git_commit": tracking.git_commit()}
        tags = schema.run_tags(schema.Role.EVALUATION, config.study, model_name, config.tasks,
                               **{schema.EVALUATION_KIND: kind})
        with tracking.scored_run(name, params, tags, manifest=manifest(bundle, splits, config.split_seed),
                                 config=config_document(config), entry_point="evaluate") as run:
            evaluations = evaluate_all(model, tokenizer, test, batch_size=config.eval_batch_size,
                                       max_seq_length=config.max_seq_length,
                                       max_new_tokens=config.max_new_tokens, decoding=config.decoding)
            predictions = {task_name: ev.predictions for task_name, ev in evaluations.items()}
            tracking.log_scores(merged_metrics(evaluations), predictions, step=adapter.epoch)
            log.info("evaluation run %s: %s", run.info.run_id,
                     json.dumps({k: round(v, 4) for k, v in merged_metrics(evaluations).items() if k.count("/") == 1}))
            return run.info.run_id
