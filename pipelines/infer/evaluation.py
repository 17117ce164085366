"""Score a model on task examples: generate, parse, score, and build prediction records."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pipelines.infer.generation import complete
from pipelines.tasks import get_task, headline_metric_keys
from pipelines.tasks.base import RESPONSE_MARKER, Example
from pipelines.train.encoding import MAX_SEQ_LENGTH

INPUT_HEADER = "### Input:\n"

log = logging.getLogger(__name__)


@dataclass
class TaskEvaluation:
    """One task's metrics (``<task>/<metric>`` names) and per-example prediction records."""

    task: str
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]


def input_text(prompt: str) -> str:
    """The task input inside a formatted prompt (between the input header and the response marker)."""
    _, _, rest = prompt.partition(INPUT_HEADER)
    return rest.rsplit("\n\n" + RESPONSE_MARKER, 1)[0] if rest else prompt


def evaluate_task(
    model, tokenizer, task_name: str, examples: list[Example], *, batch_size: int = 16,
    max_seq_length: int = MAX_SEQ_LENGTH, max_new_tokens: int = 0, decoding: str = "free",
) -> TaskEvaluation:
    """Answer every example (decoding "free" or "constrained"), parse (never raising) and score.

    max_new_tokens caps the task's own generation budget (0 = the task's budget).
    """
    start = time.perf_counter()
    outputs = answer_task(model, tokenizer, task_name, examples, batch_size=batch_size,
                          max_seq_length=max_seq_length, max_new_tokens=max_new_tokens, decoding=decoding)
    return score_outputs(task_name, examples, outputs, time.perf_counter() - start)


def answer_task(
    model, tokenizer, task_name: str, examples: list[Example], *, batch_size: int = 16,
    max_seq_length: int = MAX_SEQ_LENGTH, max_new_tokens: int = 0, decoding: str = "free",
) -> list[str]:
    """The model's raw answer to each example (what evaluate_task scores)."""
    task = get_task(task_name)
    budget = task.generation_budget(max_new_tokens)
    prompts = [e.prompt for e in examples]
    return complete(
        model, tokenizer, task, prompts, [input_text(p) for p in prompts], decoding=decoding,
        max_new_tokens=budget, batch_size=batch_size, max_seq_length=max_seq_length,
        desc=f"eval {task_name}",
    )


def score_outputs(
    task_name: str, examples: list[Example], outputs: list[str], seconds: float
) -> TaskEvaluation:
    """Parse (never raising) and score raw outputs, one per example, into metrics and prediction records.

    Shared by fine-tuned checkpoints and by baselines (API or local chat models), so both are
    scored and logged identically.
    """
    task = get_task(task_name)
    parsed = [task.parse(o) for o in outputs]
    scores = task.score([e.reference for e in examples], parsed)
    metrics = {f"{task_name}/{k}": float(v) for k, v in scores.metrics.items()}
    metrics[f"perf/{task_name}/eval_examples_per_s"] = len(examples) / max(seconds, 1e-9)
    predictions = [
        {
            "id": e.id,
            "task": task_name,
            "input": input_text(e.prompt),
            "reference": e.reference,
            "output": out,
            "parsed": p.value,
            "parse_status": p.status,
            "scores": s,
        }
        for e, out, p, s in zip(examples, outputs, parsed, scores.per_example, strict=True)
    ]
    log.info("%s: %s", task_name, {k: round(v, 4) for k, v in metrics.items() if k.count("/") == 1})
    return TaskEvaluation(task_name, metrics, predictions)


def evaluate_all(model, tokenizer, test: dict[str, list[Example]], **kwargs) -> dict[str, TaskEvaluation]:
    """evaluate_task for each task in `test`."""
    return {name: evaluate_task(model, tokenizer, name, ex, **kwargs) for name, ex in test.items()}


# One figure per evaluated model, the runs table's first metric (docs/metrics.md): the mean over
# the tasks scored of each task's headline metric (labeling f1_macro, harmonization accuracy,
# impression rougeL), every one on a 0-1 scale, higher is better.
HEADLINE = "headline"


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """`headline` and the `<task>/<metric>` headline figures of a metrics dict, rounded for printing."""
    wanted = {HEADLINE, *headline_metric_keys()}
    return {k: round(v, 4) for k, v in metrics.items() if k in wanted}


def headline_score(metrics: dict[str, float], tasks) -> float | None:
    """The mean of each task's headline metric in `metrics`; None when one is missing (or no tasks)."""
    values = [metrics.get(f"{t}/{get_task(t).headline_metric}") for t in tasks]
    return None if not values or None in values else sum(values) / len(values)


def merged_metrics(evaluations: dict[str, TaskEvaluation]) -> dict[str, float]:
    """All tasks' metrics in one dict, plus their `headline` (see HEADLINE)."""
    merged = {k: v for ev in evaluations.values() for k, v in ev.metrics.items()}
    headline = headline_score(merged, list(evaluations))
    return merged if headline is None else {HEADLINE: headline, **merged}
