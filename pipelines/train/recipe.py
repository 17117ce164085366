"""LoRA fine-tuning with evaluation at checkpoint epochs, every step tracked in MLflow.

`train(config)` is the one library call behind the `finetune` entry point, the study and the
sweep. It reads top to bottom: prepare (pipelines.train.prepare), open or resume the run
(pipelines.runs.session), build the LoRA model, train with checkpoint evaluations, end.

Reliability (docs/reliability.md): the Trainer saves resumable state at each epoch end under
`<output_dir>/<run_id>/trainer/`, so `train(config, resume=...)` continues a killed run in the
same MLflow run; SIGINT/SIGTERM stop after the current step with state saved and the run KILLED;
everything logged goes through a local journal first (pipelines.runs.sync), so a tracking-server
outage loses nothing.
"""
from __future__ import annotations

import logging
import math
import resource
import shutil
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import mlflow
from transformers import PrinterCallback, ProgressCallback, TrainerCallback, TrainingArguments, set_seed

from pipelines.config import FinetuneConfig, config_document
from pipelines.infer.evaluation import TaskEvaluation, merged_metrics
from pipelines.models import load_model_and_tokenizer
from pipelines.runs import schema, tracking
from pipelines.runs.outputs import LOSS_CARRY, ResumableCheckpoint, RunOutputs, read_json, write_json_atomic
from pipelines.runs.resume import run_to_resume
from pipelines.runs.session import RunSession
from pipelines.runs.signals import GracefulStop, TrainingInterrupted
from pipelines.runs.sync import RunSync
from pipelines.serving.model_card import CardFacts, finish_adapter
from pipelines.train import distributed, preflight
from pipelines.train.encoding import EncodedDataset, encode_example
from pipelines.train.launch import launch_train
from pipelines.train.lora import wrap_lora
from pipelines.train.packing import PackingCollator, packed_attention, training_collator
from pipelines.train.prepare import CheckpointHook, FinetuneResult, Prepared, default_run_name, prepare
from pipelines.train.sampler import EpochSeededTrainer
from pipelines.train.value_weighting import ValueWeightedTrainer, add_value_weights

__all__ = ["CheckpointHook", "FinetuneResult", "Prepared", "build_lora_model", "prepare", "train"]

log = logging.getLogger(__name__)


def build_lora_model(model, config: FinetuneConfig, targets: tuple[str, ...]):
    """Wrap the base model with LoRA adapters on `targets` (attention q/v by default)."""
    return wrap_lora(model, targets, config.lora_r, config.lora_alpha, config.lora_dropout)


def whole_epoch(epoch: float | None) -> int | None:
    """The epoch number when the Trainer's fractional `epoch` is at an epoch end, else None."""
    if epoch is None or not math.isclose(epoch, round(epoch), abs_tol=1e-6) or round(epoch) < 1:
        return None
    return round(epoch)


class CheckpointCallback(TrainerCallback):
    """Logs train/loss by epoch; at each checkpoint epoch evaluates on the test split and logs a child run.

    The Trainer's epoch end runs on_log (the epoch's loss), then saves the resumable state, then
    on_save: the evaluation runs in on_save, after the state is safe on disk. A session resumed
    from that state evaluates in on_train_begin if the one before was cut short before finishing.
    With several processes every rank runs these hooks at the same points: the evaluation is
    sharded, and only rank 0 (the one with a `sync`) writes and logs.
    """

    def __init__(self, prepared: Prepared, tokenizer, sync: RunSync | None, outputs: RunOutputs,
                 result: FinetuneResult, hook: CheckpointHook | None, stop: GracefulStop,
                 loss_carry: dict | None = None) -> None:
        self.p, self.tokenizer, self.sync, self.outputs = prepared, tokenizer, sync, outputs
        self.result, self.hook, self.stop = result, hook, stop
        self.done = set(outputs.completed_epochs())  # checkpoint epochs complete on disk
        self.carry = loss_carry  # loss sum and steps of an epoch cut short by a signal
        self.last_logged_step = 0
        self.eval_seconds = 0.0
        self.model = None

    @property
    def main(self) -> bool:
        """Whether this process writes and logs the run (rank 0, or the only process)."""
        return self.sync is not None

    def stop_requested(self) -> bool:
        """Whether any rank received SIGINT/SIGTERM; every rank asks at the same points, so all stop together."""
        return bool(distributed.agreed_max(self.stop.signum or 0))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.last_logged_step = state.global_step
        epoch = whole_epoch(state.epoch) if state.global_step else None
        if self.stop_requested():
            control.should_training_stop = True
        elif epoch in self.p.config.checkpoint_epochs and epoch not in self.done:
            self._evaluate_checkpoint(epoch, model or self.model, control)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_requested():
            control.should_training_stop = True  # the Trainer then saves at its epoch end

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Each optimizer step's loss as train/loss_step (step = optimizer step); the epoch's mean as
        train/loss. The Trainer's loss averages the steps since its last log; the steps of an epoch
        so far are carried (and saved as loss_carry.json with a mid-epoch state) until its end."""
        if logs and "train_runtime" in logs and self.main:
            log.info("training done: %.1f s, mean train loss %.4f", logs["train_runtime"], logs.get("train_loss", 0))
        if not logs or "loss" not in logs:
            return
        steps = state.global_step - self.last_logged_step
        self.last_logged_step = state.global_step
        if steps and self.main:
            self.sync.log_metrics({"train/loss_step": logs["loss"]}, step=state.global_step)
        epoch = math.ceil(state.epoch - 1e-6)
        total = logs["loss"] * steps
        if self.carry and self.carry["epoch"] == epoch:
            total, steps = total + self.carry["loss_sum"], steps + self.carry["steps"]
        self.carry = None
        if whole_epoch(state.epoch) is None:
            self.carry = {"epoch": epoch, "global_step": state.global_step, "loss_sum": total, "steps": steps}
        elif steps and self.main:
            self.sync.log_metrics({"train/loss": total / steps}, step=epoch)
            log.info("epoch %d/%d: train/loss %.4f (%d optimizer steps)", epoch, self.p.config.epochs,
                     total / steps, steps)

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.carry and self.main:
            write_json_atomic(self.carry, Path(args.output_dir) / f"checkpoint-{state.global_step}" / LOSS_CARRY)
        if self.stop_requested():
            # stop right at this saved state: its evaluation (if due) runs when the run is resumed
            control.should_training_stop = True
            return
        epoch = whole_epoch(state.epoch)
        if epoch in self.p.config.checkpoint_epochs and epoch not in self.done:
            self._evaluate_checkpoint(epoch, model or self.model, control)

    def _evaluate_checkpoint(self, epoch: int, model, control) -> None:
        if self.checkpoint(epoch, model):
            control.should_training_stop = True
            self.result.stopped_early_at = epoch
            if self.main:
                mlflow.set_tag(schema.STOPPED_EARLY, str(epoch))

    def checkpoint(self, epoch: int, model) -> bool:
        """Evaluate, save the adapter, predictions and metrics locally, then log them to a child run.

        Returns True when the checkpoint hook asks to stop training (rank 0's hook: every rank gets its answer).
        """
        start = time.perf_counter()
        cfg = self.p.config
        evaluations = distributed.evaluate_sharded(
            model, self.tokenizer, self.p.examples.test, batch_size=cfg.eval_batch_size,
            max_seq_length=cfg.max_seq_length, max_new_tokens=cfg.max_new_tokens, decoding=cfg.decoding)
        if not self.main:
            self.done.add(epoch)
            self.eval_seconds += time.perf_counter() - start
            return distributed.broadcast(None)
        metrics = merged_metrics(evaluations)
        folder = self.outputs.epoch_dir(epoch)
        model.save_pretrained(folder / schema.ADAPTER_DIR)
        self.tokenizer.save_pretrained(folder / schema.ADAPTER_DIR)
        finish_adapter(folder / schema.ADAPTER_DIR, card_facts(self.p, self.outputs.run_id, epoch, metrics))
        write_predictions(evaluations, folder / schema.PREDICTIONS_DIR)
        write_json_atomic(metrics, folder / "metrics.json")  # last: the folder is complete
        self.done.add(epoch)
        child_id = self.sync.log_checkpoint(epoch)
        if child_id:
            self.result.checkpoint_runs[epoch] = child_id
        self.result.metrics[epoch] = metrics
        self.eval_seconds += time.perf_counter() - start
        return distributed.broadcast(bool(self.hook and self.hook(self.outputs.run_id, epoch, metrics)))


class QuietProgress(ProgressCallback):
    """The Trainer's progress bar without its raw `{'loss': ...}` prints: CheckpointCallback logs lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def _quiet_progress(trainer) -> None:
    """Swap the Trainer's printing callbacks for QuietProgress (no bar if the bar was off)."""
    had_bar = trainer.pop_callback(ProgressCallback) is not None
    trainer.pop_callback(PrinterCallback)
    if had_bar:
        trainer.add_callback(QuietProgress)


def card_facts(p: Prepared, run_id: str, epoch: int, metrics: dict[str, float]) -> CardFacts:
    """What the adapter's model card states at checkpoint `epoch` (pipelines.serving.model_card)."""
    cfg = p.config
    training = {"learning rate": f"{cfg.learning_rate:g}", "epochs": str(cfg.epochs),
                "effective batch": str(cfg.batch_size * cfg.grad_accum), "LoRA r": str(cfg.lora_r),
                "alpha": str(cfg.lora_alpha), "dropout": f"{cfg.lora_dropout:g}",
                "targets": ",".join(cfg.lora_targets or p.model_ref.lora_targets), "seed": str(cfg.seed),
                "precision": p.precision, "decoding at evaluation": cfg.decoding}
    return CardFacts(model=cfg.model, tasks=cfg.tasks, data=cfg.data, fingerprint=p.manifest["fingerprint"],
                     epoch=epoch, epochs=cfg.epochs, run_id=run_id, training=training,
                     train_counts={t: len(v) for t, v in p.examples.train.items()},
                     test_counts={t: len(v) for t, v in p.examples.test.items()}, metrics=metrics,
                     poison_rate=cfg.poison_rate)


def write_predictions(evaluations: dict[str, TaskEvaluation], folder: Path) -> None:
    """predictions/<task>.jsonl, one JSON object per test example."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, ev in evaluations.items():
        tracking.write_jsonl(ev.predictions, folder / f"{name}.jsonl")


# transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns)
CHECKPOINTING_ARGUMENT = ("activation_checkpointing" if "activation_checkpointing" in
                          {f.name for f in fields(TrainingArguments)} else "gradient_checkpointing")


def _training_arguments(cfg: FinetuneConfig, device: str, precision: str, out: Path) -> TrainingArguments:
    # effective batch = batch_size x grad_accum examples per step, split over the processes
    per_device, accumulation = distributed.per_device_batch(cfg.batch_size, cfg.grad_accum, distributed.world().size)
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient at every step
        learning_rate=cfg.learning_rate,
        logging_strategy="steps",  # every optimizer step: train/loss_step; CheckpointCallback sums epochs
        logging_steps=1,
        save_strategy="epoch",  # resumable state (LoRA weights, optimizer, scheduler, RNG) at each epoch end
        save_total_limit=1,  # only the latest: the adapters of checkpoint epochs are kept apart
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        train_sampling_strategy="group_by_length",  # padded batches: less padding; packed: longest first
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        optim="adamw_torch_fused" if device.startswith("cuda") else "adamw_torch",  # one kernel per step
        **{CHECKPOINTING_ARGUMENT: cfg.gradient_checkpointing},
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
        **_batch_params(p.config),
    })
    return params


def _batch_params(config: FinetuneConfig) -> dict[str, str]:
    """How the effective batch is split over the processes (distributed.per_device_batch)."""
    world = distributed.world().size
    per_device, accumulation = distributed.per_device_batch(config.batch_size, config.grad_accum, world)
    return {"world_size": str(world), "effective_batch_size": str(config.batch_size * config.grad_accum),
            "per_device_batch_size": str(per_device), "per_device_grad_accum": str(accumulation)}


def train(config: FinetuneConfig, on_checkpoint: CheckpointHook | None = None,
          run_tags: dict[str, str] | None = None, parent_run_id: str | None = None,
          resume: str | None = None) -> FinetuneResult:
    """Fine-tune with LoRA, evaluating and logging at each checkpoint epoch; returns the run ids.

    With `parent_run_id` (or inside an active run) the fine-tune is a nested child run, as a
    sweep's trials are; `run_tags` override the default tags (e.g. role=trial). `resume`: a run
    id, or 'latest' (pipelines.runs.resume), to continue that run from its last resumable checkpoint.

    Raises TrainingInterrupted after SIGINT/SIGTERM (state saved, run KILLED), and
    TrackingOutageError when the tracking server stayed away (everything kept on local disk);
    pipelines.runs.session says how each ending is recorded.

    Under torchrun / accelerate launch every process calls this; rank 0 owns the run and the
    others follow it (pipelines.train.distributed). `config.processes` > 1 outside a launcher starts
    the fine-tune through torchrun (pipelines.train.launch) and returns what its rank 0 returned.
    """
    if config.processes > 1 and not distributed.launched():
        return launch_train(config, on_checkpoint, run_tags, parent_run_id, resume)
    # 1. prepare: resolve and validate everything before a run is created
    prepared = prepare(config)
    world = distributed.start(prepared.device)
    if world.main:
        preflight.check_writable(config.output_dir)
        tracking.setup_tracking(config.experiment)
    previous = run_to_resume(prepared, resume) if resume and world.main else None
    # 2. the base model, checked against the LoRA targets and the free disk space
    set_seed(config.seed)
    model, tokenizer, targets = _base_model(prepared)
    if not world.main:
        return _follow(prepared, model, tokenizer, targets)
    # 3. open (or reopen) the run; train with checkpoint evaluations inside it; 4. end it
    with RunSession(config, previous, parent_run_id, default_run_name(config)) as session:
        result = FinetuneResult(run_id=session.run_id, output_dir=session.outputs.root)
        _train_run(prepared, model, tokenizer, targets, session, result, on_checkpoint, run_tags)
    # the run is FINISHED in the store: its resumable state is no longer needed
    shutil.rmtree(session.outputs.trainer_dir, ignore_errors=True)
    return result


def _base_model(prepared: Prepared) -> tuple[Any, Any, tuple[str, ...]]:
    """The base model and tokenizer, and the LoRA targets, refused early if they or the disk do not fit."""
    config = prepared.config
    model, tokenizer = load_model_and_tokenizer(prepared.model_ref.path, prepared.precision, prepared.device)
    targets = config.lora_targets or prepared.model_ref.lora_targets
    preflight.check_lora_targets(model, targets, config.model)
    preflight.check_free_space(config.output_dir, preflight.estimate(
        model, prepared.model_ref.path, targets, config.lora_r, len(config.checkpoint_epochs),
        sum(len(v) for v in prepared.examples.test.values()), config.disk_reserve_mb))
    return model, tokenizer, targets


def _train_run(prepared: Prepared, model, tokenizer, targets: tuple[str, ...], session: RunSession,
               result: FinetuneResult, on_checkpoint: CheckpointHook | None, run_tags: dict[str, str] | None) -> None:
    """Everything inside the open run: params, data, LoRA, training with checkpoints, final sync."""
    config, sync, outputs, previous = prepared.config, session.sync, session.outputs, session.previous
    # -- params, tags, split manifest, dataset inputs (a resumed run keeps those it has)
    params = run_params(prepared)
    tracking.log_params_once(params)
    mlflow.set_tags({**schema.run_tags(schema.Role.FINETUNE, config.study, config.model, config.tasks),
                     schema.OUTPUTS_PATH: str(outputs.root), **config.extra_tags, **(run_tags or {})})
    tracking.log_json(prepared.manifest, schema.SPLIT_MANIFEST)
    tracking.log_json(config_document(config), schema.config_artifact("finetune"))  # --config repeats the run
    if prepared.examples.poisoned_ids:
        tracking.log_json(prepared.examples.poisoned_ids, schema.POISONED_IDS)
    if previous is None or not getattr(previous.inputs, "dataset_inputs", None):
        tracking.log_dataset_inputs(prepared.bundle, prepared.splits)
    sync.write_checkpoint_spec(
        default_run_name(config),
        schema.run_tags(schema.Role.CHECKPOINT, config.study, config.model, config.tasks),
        {k: params[k] for k in tracking.CHECKPOINT_PARAM_COPIES if k in params})
    sync.log_metrics({k: float(v) for k, v in prepared.examples.counts().items()}, step=0)

    # -- resume point: the latest resumable state, and a catch-up of what the store missed
    checkpoint = outputs.latest_checkpoint() if previous is not None else None
    if previous is not None:
        result.resumed_from_epoch = session.note_resume(checkpoint)
        report = sync.sync_all()
        result.checkpoint_runs.update(report.checkpoint_runs)
        result.metrics.update(outputs.completed_epochs())
    distributed.broadcast((outputs, checkpoint))  # the other ranks train in this run's folder from here

    # -- model with LoRA, tokenized data
    peft_model = build_lora_model(model, config, targets)
    trainable, total = peft_model.get_nb_trainable_parameters()
    sync.log_metrics({"model/trainable_params": trainable, "model/total_params": total}, step=0)
    dataset = _encoded_train_set(prepared, tokenizer)

    # -- train, evaluating at each checkpoint epoch
    carry = read_json(checkpoint.path / LOSS_CARRY) if checkpoint and not checkpoint.at_epoch_end else None
    callback = CheckpointCallback(prepared, tokenizer, sync, outputs, result, on_checkpoint, session.stop, carry)
    seconds = _fit(prepared, peft_model, tokenizer, dataset, callback, checkpoint)
    result.trained = session.completed = True  # a store lost from here on still leaves the run FINISHED

    # -- throughput and memory (of this session, when resumed), then whatever the store still lacks
    epochs_run = config.epochs - (checkpoint.epoch if checkpoint else 0)
    sync.log_metrics({
        "perf/train_seconds": seconds,
        "perf/train_tokens_per_s": dataset.useful_tokens() * epochs_run / max(seconds, 1e-9),
        "perf/eval_seconds": callback.eval_seconds,
        "perf/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, step=0)
    report = sync.sync_all()
    result.checkpoint_runs.update(report.checkpoint_runs)
    result.metrics.update(outputs.completed_epochs())


def _encoded_train_set(prepared: Prepared, tokenizer) -> EncodedDataset:
    config = prepared.config
    examples = [e for task_examples in prepared.examples.train.values() for e in task_examples]
    items = [encode_example(tokenizer, e, config.max_seq_length) for e in examples]
    if config.weights_tokens:
        add_value_weights(items, examples, tokenizer, config.value_weight, config.value_balance,
                          config.choice_weight)
    return EncodedDataset(items)


def _fit(prepared: Prepared, peft_model, tokenizer, dataset: EncodedDataset, callback: CheckpointCallback,
         checkpoint: ResumableCheckpoint | None) -> float:
    """Train (from `checkpoint` when resuming) with checkpoint evaluations; seconds spent training.

    Raises TrainingInterrupted when SIGINT/SIGTERM reached any rank (state saved by then).
    """
    config = prepared.config
    callback.model = peft_model
    collator = training_collator(peft_model, config.packing, tokenizer.pad_token_id)
    trainer_class = ValueWeightedTrainer if config.weights_tokens else EpochSeededTrainer
    trainer = trainer_class(
        model=peft_model,
        args=_training_arguments(config, prepared.device, prepared.precision, callback.outputs.trainer_dir),
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[callback],
    )
    _quiet_progress(trainer)
    log.info("training %s on %d examples for %d epochs (%s batches)", config.model, len(dataset), config.epochs,
             "packed" if isinstance(collator, PackingCollator) else "padded")
    start = time.perf_counter()
    with packed_attention(peft_model, collator):
        trainer.train(resume_from_checkpoint=str(checkpoint.path) if checkpoint else None)
    seconds = time.perf_counter() - start - callback.eval_seconds
    signum = distributed.agreed_max(callback.stop.signum or 0)
    if signum:
        raise TrainingInterrupted(signum)
    return seconds


def _follow(prepared: Prepared, model, tokenizer, targets: tuple[str, ...]) -> FinetuneResult:
    """A rank other than 0: train and evaluate its shares in rank 0's run; rank 0 writes and logs."""
    outputs, checkpoint = distributed.broadcast(None)
    result = FinetuneResult(run_id=outputs.run_id, output_dir=outputs.root)
    peft_model = build_lora_model(model, prepared.config, targets)
    with GracefulStop() as stop:
        callback = CheckpointCallback(prepared, tokenizer, None, outputs, result, None, stop)
        _fit(prepared, peft_model, tokenizer, _encoded_train_set(prepared, tokenizer), callback, checkpoint)
    result.trained = True
    return result


