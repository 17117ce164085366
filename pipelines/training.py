"""LoRA fine-tuning with evaluation at checkpoint epochs, every step tracked in MLflow.

`train(config)` is the one library call behind the `finetune` entry point and the sweep.
"""
from __future__ import annotations

import logging
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from pipelines import tracking
from pipelines.config import FinetuneConfig
from pipelines.data.sources import load_data
from pipelines.data.split import carve_validation, manifest, split_bundle
from pipelines.evaluation import TaskEvaluation, evaluate_all, merged_metrics
from pipelines.examples import TaskExamples, build_examples
from pipelines.models import (
    ResolvedModel,
    load_model_and_tokenizer,
    resolve_device,
    resolve_model,
    resolve_precision,
)
from pipelines.training_data import EncodedDataset, ResponseOnlyCollator, encode_example

log = logging.getLogger(__name__)

# Called after each checkpoint evaluation with (epoch, metrics); returning True stops training
# after this epoch (the sweep's pruner does this), and the run is tagged `stopped_early`.
CheckpointHook = Callable[[int, dict[str, float]], bool | None]


@dataclass
class FinetuneResult:
    """What a finished fine-tune produced."""

    run_id: str
    checkpoint_runs: dict[int, str] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    output_dir: Path | None = None
    stopped_early_at: int = 0


@dataclass
class Prepared:
    """Everything resolved and loaded before any MLflow run exists."""

    config: FinetuneConfig
    model_ref: ResolvedModel
    device: str
    precision: str
    examples: TaskExamples
    manifest: dict
    bundle: object
    splits: dict


def prepare(config: FinetuneConfig) -> Prepared:
    """Resolve model, device, data, split and examples; every bad input fails here, before a run."""
    model_ref = resolve_model(config.model)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    bundle = load_data(config.data)
    splits = split_bundle(bundle, config.split_seed)
    used = carve_validation(splits) if config.eval_split == "validation" else splits
    examples = build_examples(
        bundle, used, config.tasks, train_limit=config.train_limit, eval_limit=config.eval_limit,
        poison_rate=config.poison_rate, poison_seed=config.seed,
    )
    return Prepared(config, model_ref, device, precision, examples,
                    manifest(bundle, splits, config.split_seed), bundle, splits)


def build_lora_model(model, config: FinetuneConfig, targets: tuple[str, ...]):
    """Wrap the base model with LoRA adapters on `targets` (attention q/v by default)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def default_run_name(config: FinetuneConfig) -> str:
    """e.g. 'smollm2-135m-multitask' or 'opt-350m-labeling-poison0.25'."""
    model = Path(config.model).name if "/" in config.model else config.model
    tasks = "multitask" if len(config.tasks) > 1 else config.tasks[0]
    poison = f"-poison{config.poison_rate:g}" if config.poison_rate else ""
    return config.run_name or f"{model}-{tasks}{poison}"


class CheckpointCallback(TrainerCallback):
    """At each checkpoint epoch: evaluate on the test split and log a child run.

    Runs in on_log (not on_epoch_end) because the Trainer logs the epoch's loss after
    on_epoch_end; this way train/loss of the epoch is logged before its evaluation.
    """

    def __init__(self, prepared: Prepared, tokenizer, parent_params: dict[str, str],
                 out_dir: Path, result: FinetuneResult, hook: CheckpointHook | None) -> None:
        self.p, self.tokenizer, self.parent_params = prepared, tokenizer, parent_params
        self.out_dir, self.result, self.hook = out_dir, result, hook
        self.eval_seconds = 0.0
        self.model = None

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        epoch = round(state.epoch)
        tracking.log_metrics_at({"train/loss": logs["loss"]}, step=epoch)
        if epoch in self.p.config.checkpoint_epochs and epoch not in self.result.checkpoint_runs:
            if self.checkpoint(epoch, model or self.model):
                control.should_training_stop = True
                self.result.stopped_early_at = epoch
                mlflow.set_tag("stopped_early", str(epoch))

    def checkpoint(self, epoch: int, model) -> bool:
        """Evaluate, save the adapter and predictions locally, log them to a child run.

        Returns True when the checkpoint hook asks to stop training.
        """
        start = time.perf_counter()
        cfg = self.p.config
        evaluations = evaluate_all(model, self.tokenizer, self.p.examples.test, batch_size=cfg.eval_batch_size,
                                   max_prompt_tokens=cfg.max_seq_length, max_new_tokens=cfg.max_new_tokens,
                                   decoding=cfg.decoding)
        metrics = merged_metrics(evaluations)
        folder = self.out_dir / f"epoch-{epoch}"
        model.save_pretrained(folder / "adapter")
        self.tokenizer.save_pretrained(folder / "adapter")
        write_predictions(evaluations, folder / "predictions")
        tracking.log_metrics_at(metrics, step=epoch)
        tags = {"role": "checkpoint", "study": cfg.study, "model": cfg.model, "tasks": ",".join(cfg.tasks)}
        with tracking.child_run(f"{default_run_name(cfg)}-epoch{epoch}", tags) as child:
            params = {k: self.parent_params[k] for k in tracking.CHECKPOINT_PARAM_COPIES
                      if k in self.parent_params}
            tracking.log_params_once({"epoch": epoch, **params})
            tracking.log_metrics_at(metrics, step=epoch)
            tracking.log_folder(folder / "adapter", "adapter")
            tracking.log_folder(folder / "predictions", "predictions")
        self.result.checkpoint_runs[epoch] = child.info.run_id
        self.result.metrics[epoch] = metrics
        self.eval_seconds += time.perf_counter() - start
        log.info("epoch %d checkpoint logged as run %s", epoch, child.info.run_id)
        return bool(self.hook and self.hook(epoch, metrics))


def write_predictions(evaluations: dict[str, TaskEvaluation], folder: Path) -> None:
    """predictions/<task>.jsonl, one JSON object per test example."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, ev in evaluations.items():
        tracking.write_jsonl(ev.predictions, folder / f"{name}.jsonl")


def _training_arguments(cfg: FinetuneConfig, device: str, precision: str, out: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        logging_strategy="epoch",
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        train_sampling_strategy="group_by_length",  # less padding per batch
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        optim="adamw_torch",
    )


def run_params(p: Prepared) -> dict[str, str]:
    """The fine-tune's MLflow params: the resolved config plus data, device and code facts."""
    params = p.config.as_params()
    params.update({
        "data_fingerprint": p.manifest["fingerprint"],
        "split_seed": str(p.config.split_seed),
        "lora_targets": ",".join(p.config.lora_targets or p.model_ref.lora_targets),
        "device": p.device,
        "precision": p.precision,
        "model_path": str(p.model_ref.path),
        "reports_source": p.manifest["notes"].get("reports_source", p.config.data),
        "series_source": p.manifest["notes"].get("series_source", p.config.data),
        "poisoned_count": str(len(p.examples.poisoned_ids)),
        "git_commit": tracking.git_commit(),
    })
    return params


def train(config: FinetuneConfig, on_checkpoint: CheckpointHook | None = None,
          run_tags: dict[str, str] | None = None, parent_run_id: str | None = None) -> FinetuneResult:
    """Fine-tune with LoRA, evaluating and logging at each checkpoint epoch; returns the run ids.

    With `parent_run_id` (or inside an active run) the fine-tune is a nested child run, as a
    sweep's trials are; `run_tags` override the default tags (e.g. role=trial).
    """
    # -- resolve and validate everything before a run is created
    prepared = prepare(config)
    tracking.setup_tracking(config.experiment)
    set_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(prepared.model_ref.path, prepared.precision, prepared.device)
    targets = config.lora_targets or prepared.model_ref.lora_targets

    outer = mlflow.active_run()
    run = mlflow.start_run(run_name=default_run_name(config), nested=outer is not None,
                           parent_run_id=parent_run_id)
    result = FinetuneResult(run_id=run.info.run_id)
    try:
        # -- params, tags, split manifest, dataset inputs
        params = run_params(prepared)
        tracking.log_params_once(params)
        mlflow.set_tags({"role": "finetune", "study": config.study, "model": config.model,
                         "tasks": ",".join(config.tasks), **config.extra_tags, **(run_tags or {})})
        tracking.log_json(prepared.manifest, "data/split_manifest.json")
        tracking.log_json(config.to_dict(), "config/finetune.json")
        if prepared.examples.poisoned_ids:
            tracking.log_json(prepared.examples.poisoned_ids, "data/poisoned_ids.json")
        tracking.log_dataset_inputs(prepared.bundle, prepared.splits)
        mlflow.log_metrics({k: float(v) for k, v in prepared.examples.counts().items()})

        # -- model with LoRA, tokenized data
        peft_model = build_lora_model(model, config, targets)
        trainable, total = peft_model.get_nb_trainable_parameters()
        mlflow.log_metrics({"model/trainable_params": trainable, "model/total_params": total})
        items = [encode_example(tokenizer, e, config.max_seq_length)
                 for examples in prepared.examples.train.values() for e in examples]
        dataset = EncodedDataset(items)

        # -- train, evaluating at each checkpoint epoch
        out_dir = Path(config.output_dir) / result.run_id
        result.output_dir = out_dir
        callback = CheckpointCallback(prepared, tokenizer, params, out_dir, result, on_checkpoint)
        callback.model = peft_model
        with tempfile.TemporaryDirectory(prefix="trainer-") as scratch:
            trainer = Trainer(
                model=peft_model,
                args=_training_arguments(config, prepared.device, prepared.precision, scratch),
                train_dataset=dataset,
                data_collator=ResponseOnlyCollator(tokenizer.pad_token_id),
                callbacks=[callback],
            )
            log.info("training %s on %d examples for %d epochs", config.model, len(dataset), config.epochs)
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start - callback.eval_seconds

        # -- throughput and memory
        mlflow.log_metrics({
            "perf/train_seconds": seconds,
            "perf/train_tokens_per_s": dataset.useful_tokens() * config.epochs / max(seconds, 1e-9),
            "perf/eval_seconds": callback.eval_seconds,
            "perf/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        })
    except KeyboardInterrupt:
        _end_runs_until(result.run_id, "KILLED")
        raise
    except BaseException:
        _end_runs_until(result.run_id, "FAILED")
        raise
    _end_runs_until(result.run_id, "FINISHED")
    return result


def _end_runs_until(run_id: str, status: str) -> None:
    """End the runs this fine-tune opened (any open child, then `run_id`), leaving outer runs open."""
    while (active := mlflow.active_run()) is not None:
        mlflow.end_run(status)
        if active.info.run_id == run_id:
            break
