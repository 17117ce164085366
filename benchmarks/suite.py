"""The benchmark: the reference method and ours, side by side, in one process on one model.

Measured, in order: the embedded model's first and second load; training (ours: packed batches
without padding, response-only loss; reference: random padded batches, whole-sequence loss), each
from the same fresh LoRA, reporting useful (non-padding) tokens/s, padding and the final response loss;
evaluation of each task with the model we trained (reference: one example at a time, 5 beams
plus sampling, 500 new tokens; ours: batched, constrained where the task has a shape, and
batched free greedy for comparison); the machine's matrix-multiply peak, for MFU; peak memory.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import Trainer, TrainingArguments, set_seed

from benchmarks.hardware import (
    lora_training_flops_per_token,
    matmul_peak_flops,
    peak_gpu_mb,
    peak_rss_mb,
    timed,
)
from benchmarks.reference import PaddingCounter, WholeSequenceCollator, reference_generate
from pipelines.config import FinetuneConfig
from pipelines.data.examples import build_examples
from pipelines.data.sources import load_data
from pipelines.data.split import split_bundle
from pipelines.infer.evaluation import input_text, score_outputs
from pipelines.infer.generation import complete
from pipelines.models import load_model_and_tokenizer, resolve_device, resolve_model, resolve_precision
from pipelines.tasks import get_task, task_names, task_tuple
from pipelines.train.encoding import EncodedDataset, ResponseOnlyCollator, encode_example, prompt_budget
from pipelines.train.packing import packed_attention, training_collator
from pipelines.train.recipe import build_lora_model
from pipelines.train.sampler import EpochSeededTrainer

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """What to measure on. Defaults: the embedded model on CPU, in well under 15 minutes on 2 cores.

    batch_size and learning_rate are the paper's (4, 8e-4) for both training methods.
    """

    model: str = "smollm2-135m"
    device: str = "cpu"
    precision: str = "auto"
    data: str = "synthetic"
    tasks: tuple[str, ...] = tuple(task_names())
    train_per_task: int = 6
    eval_per_task: int = 1  # 0: training only. The reference's 5 beams x 500 tokens take ~2 min per example on 2 cores
    epochs: int = 2
    batch_size: int = 4
    learning_rate: float = 8e-4
    eval_batch_size: int = 16
    reference_max_new_tokens: int = 500
    max_seq_length: int = 768
    seed: int = 42

    def __post_init__(self) -> None:
        self.tasks = task_tuple(self.tasks)
        if self.eval_per_task < 0:
            raise ValueError(f"--eval-per-task must be >= 0 (0 = training only), got {self.eval_per_task}")
        for name in ("train_per_task", "epochs", "batch_size", "eval_batch_size", "reference_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


@dataclass
class Row:
    """One line of the table: a quantity measured for the reference method and for ours."""

    measure: str
    unit: str
    reference: float
    ours: float
    reference_metric: str = ""
    ours_metric: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")


@dataclass
class BenchResult:
    """The table rows and the single facts (load times, peak FLOP/s, MFU, memory)."""

    config: BenchConfig
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "facts": self.facts,
                "rows": [asdict(r) | {"ratio": r.ratio} for r in self.rows]}


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """Measure everything listed in the module docstring; see BenchResult."""
    result = BenchResult(cfg)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    path = resolve_model(cfg.model).path
    for attempt in ("first", "second"):  # the second load reads the converted cache, warm
        start = time.perf_counter()
        model, tokenizer = load_model_and_tokenizer(path, precision, device)
        result.facts[f"model_load_{attempt}_s"] = time.perf_counter() - start
        del model

    bundle = load_data(cfg.data)
    examples = build_examples(bundle, split_bundle(bundle, 0), cfg.tasks, train_limit=cfg.train_per_task,
                              eval_limit=cfg.eval_per_task)
    items = [encode_example(tokenizer, e, cfg.max_seq_length) for ex in examples.train.values() for e in ex]

    ours_model = _train_and_measure(result, cfg, path, precision, device, items, "ours")
    _train_and_measure(result, cfg, path, precision, device, items, "reference")
    for task in cfg.tasks if cfg.eval_per_task else ():
        _evaluate_task(result, cfg, ours_model, tokenizer, task, examples.test[task], device)

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = matmul_peak_flops(device, dtype)
    result.facts["matmul_peak_tflops"] = peak / 1e12
    for method in ("ours", "reference"):
        achieved = result.facts[f"train_model_tflops_{method}"] * 1e12
        result.facts[f"train_mfu_{method}"] = achieved / peak
    result.facts["peak_rss_mb"] = peak_rss_mb()
    result.facts["peak_gpu_mb"] = peak_gpu_mb(device)
    return result


def _trainer(cfg: BenchConfig, model, items, collator, method: str, device: str, precision: str, out: str):
    args = TrainingArguments(
        output_dir=out, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, logging_strategy="no", save_strategy="no", report_to="none",
        seed=cfg.seed, data_seed=cfg.seed, bf16=precision == "bf16", use_cpu=device == "cpu",
        train_sampling_strategy="group_by_length" if method == "ours" else "random",
        remove_unused_columns=False, dataloader_pin_memory=False, disable_tqdm=False,
        optim="adamw_torch_fused" if device.startswith("cuda") else "adamw_torch",
    )
    # ours is the platform's own trainer (length-grouped, seeded per epoch); the reference the stock one
    trainer_class = EpochSeededTrainer if method == "ours" else Trainer
    return trainer_class(model=model, args=args, train_dataset=EncodedDataset(items), data_collator=collator)


def _train_and_measure(result: BenchResult, cfg: BenchConfig, path, precision: str, device: str,
                       items: list[dict], method: str):
    """Train a fresh LoRA with `method`, record tokens/s, padding and final loss; return the model."""
    set_seed(cfg.seed)
    base, tokenizer = load_model_and_tokenizer(path, precision, device)
    total_params = sum(p.numel() for p in base.parameters())
    finetune = FinetuneConfig(model=cfg.model, learning_rate=cfg.learning_rate)
    model = build_lora_model(base, finetune, resolve_model(cfg.model).lora_targets)
    inner = training_collator(model, True, tokenizer.pad_token_id) if method == "ours" \
        else WholeSequenceCollator(tokenizer.pad_token_id)
    counter = PaddingCounter(inner)
    with tempfile.TemporaryDirectory(prefix="bench-") as out, packed_attention(model, inner):
        warm_up(model, inner, items, cfg.batch_size)
        trainer = _trainer(cfg, model, items, counter, method, device, precision, out)
        log.info("training (%s): %d examples x %d epochs", method, len(items), cfg.epochs)
        with timed(device) as t:
            trainer.train()
    useful = sum(len(i["input_ids"]) for i in items) * cfg.epochs
    tokens_per_s = useful / t.seconds
    result.facts[f"train_seconds_{method}"] = t.seconds
    result.facts[f"train_padding_fraction_{method}"] = 1 - useful / max(counter.padded_tokens, 1)
    result.facts[f"train_model_tflops_{method}"] = tokens_per_s * lora_training_flops_per_token(total_params) / 1e12
    loss = response_loss(model, tokenizer, items, cfg.eval_batch_size)
    result.facts[f"final_response_loss_{method}"] = loss
    _set_row(result, "training", "useful tokens/s", method, tokens_per_s, f"response loss {loss:.3f}")
    return model


def warm_up(model, collator, items: list[dict], batch_size: int) -> None:
    """One untimed forward and backward on the longest examples (first calls pay for allocation and
    thread start-up; measured at 5 s of a 35 s CPU run), leaving the weights and gradients untouched."""
    device = next(model.parameters()).device
    longest = sorted(items, key=lambda i: len(i["input_ids"]), reverse=True)[:batch_size]
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(longest).items()}
    model.train()
    model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def response_loss(model, tokenizer, items: list[dict], batch_size: int) -> float:
    """Mean cross-entropy per answer token over `items` (the quantity both methods must get low)."""
    model.eval()
    device = next(model.parameters()).device
    collate = ResponseOnlyCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = {k: v.to(device) for k, v in collate(items[start : start + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                                   reduction="sum")
        total += float(losses)
        count += int((labels != -100).sum())
    return total / max(count, 1)


def _evaluate_task(result: BenchResult, cfg: BenchConfig, model, tokenizer, task_name: str, examples,
                   device: str) -> None:
    task = get_task(task_name)
    prompts = [e.prompt for e in examples]
    inputs = [input_text(p) for p in prompts]
    runs = {
        "reference": lambda: reference_generate(model, tokenizer, prompts,
                                                max_prompt_tokens=prompt_budget(task_name, cfg.max_seq_length),
                                                seed=cfg.seed, max_new_tokens=cfg.reference_max_new_tokens,
                                                desc=f"reference {task_name}"),
        "ours": lambda: complete(model, tokenizer, task, prompts, inputs, decoding="constrained",
                                 max_new_tokens=task.max_new_tokens, batch_size=cfg.eval_batch_size,
                                 max_seq_length=cfg.max_seq_length, desc=f"ours {task_name}"),
        "free": lambda: complete(model, tokenizer, task, prompts, inputs, decoding="free",
                                 max_new_tokens=task.max_new_tokens, batch_size=cfg.eval_batch_size,
                                 max_seq_length=cfg.max_seq_length, desc=f"free {task_name}"),
    }
    if task.constrained is None:
        del runs["free"]  # ours is already free decoding for this task
    for method, run in runs.items():
        with timed(device) as t:
            outputs = run()
        scored = score_outputs(task_name, examples, outputs, t.seconds)
        metric = f"{task_name}/{task.headline_metric}"
        fails = scored.metrics.get(f"{task_name}/parse_fail_rate", 0.0)
        summary = f"{task.headline_metric} {scored.metrics[metric]:.3f}, parse fails {fails:.0%}"
        result.facts[f"eval_{task_name}_{method}_{task.headline_metric}"] = scored.metrics[metric]
        result.facts[f"eval_{task_name}_{method}_seconds"] = t.seconds
        if method == "free":
            _set_row(result, f"eval {task_name} (free, batched)", "examples/s", "ours", len(examples) / t.seconds,
                     summary)
            reference_row = next(r for r in result.rows if r.measure == f"eval {task_name}")
            _set_row(result, f"eval {task_name} (free, batched)", "examples/s", "reference",
                     reference_row.reference, reference_row.reference_metric)
        else:
            _set_row(result, f"eval {task_name}", "examples/s", method, len(examples) / t.seconds, summary)


def _set_row(result: BenchResult, measure: str, unit: str, method: str, value: float, metric: str) -> None:
    row = next((r for r in result.rows if r.measure == measure), None)
    if row is None:
        row = Row(measure, unit, 0.0, 0.0)
        result.rows.append(row)
    setattr(row, method, value)
    setattr(row, f"{method}_metric", metric)


def format_table(result: BenchResult) -> str:
    """The rows as a Markdown table, then the single facts."""
    lines = ["| measure | unit | reference | ours | ratio | reference result | our result |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in result.rows:
        lines.append(f"| {r.measure} | {r.unit} | {r.reference:.3g} | {r.ours:.3g} | **{r.ratio:.1f}x** | "
                     f"{r.reference_metric} | {r.ours_metric} |")
    f = result.facts
    lines += [
        "",
        f"- model load: first {f['model_load_first_s']:.2f} s, second {f['model_load_second_s']:.2f} s",
        f"- matrix-multiply peak: {f['matmul_peak_tflops'] * 1000:.1f} GFLOP/s; training MFU: ours "
        f"{f['train_mfu_ours']:.1%}, reference {f['train_mfu_reference']:.1%}",
        f"- padding in training batches: ours {f['train_padding_fraction_ours']:.1%}, reference "
        f"{f['train_padding_fraction_reference']:.1%}",
        f"- peak resident memory: {f['peak_rss_mb']:.0f} MiB"
        + (f"; peak GPU memory {f['peak_gpu_mb']:.0f} MiB" if f.get("peak_gpu_mb") else ""),
    ]
    return "\n".join(lines)
