"""Loss weighting of an answer's slot-value tokens (an option; the paper's loss is unweighted).

A labeling target is ~127 tokens of which 14 are the Yes/No values and the rest JSON the model
copies after a few steps; with the plain response-only loss the values carry ~11% of the loss,
and most of them are "No". `--value-weight w` multiplies the loss of every slot-value token
(tasks whose answer shape is SlotChoices) by w; all other response tokens keep weight 1, and
the batch loss is the weighted mean (sum of w_i * CE_i over sum of w_i per micro-batch).
"""
from __future__ import annotations

import logging

import torch

from pipelines.infer.constrained import CompiledSlots, TemplateError, compile_slots
from pipelines.tasks import get_task
from pipelines.tasks.base import Example, SlotChoices
from pipelines.train.encoding import IGNORE_INDEX, TOKEN_WEIGHTS
from pipelines.train.sampler import EpochSeededTrainer

log = logging.getLogger(__name__)


def slot_value_positions(compiled: CompiledSlots, target: list[int]) -> list[int] | None:
    """Indices in `target` of its slot-value tokens, or None if `target` does not follow the template."""
    positions: list[int] = []
    at = 0
    for slot, options in enumerate([*compiled.options, None]):
        run = compiled.runs[slot]
        if target[at : at + len(run)] != run:
            return None
        at += len(run)
        if options is None:
            break
        value = next((o for o in options if target[at : at + len(o)] == o), None)
        if value is None:
            return None
        positions.extend(range(at, at + len(value)))
        at += len(value)
    return positions if at <= len(target) else None


def add_value_weights(items: list[dict], examples: list[Example], tokenizer, weight: float) -> int:
    """Give every item a TOKEN_WEIGHTS list (1.0, or `weight` on slot-value tokens); the number of items weighted."""
    templates: dict[str, CompiledSlots | None] = {}
    weighted = 0
    for item, example in zip(items, examples, strict=True):
        weights = [0.0 if label == IGNORE_INDEX else 1.0 for label in item["labels"]]
        if example.task not in templates:
            templates[example.task] = _template(tokenizer, example.task)
        compiled = templates[example.task]
        start = weights.index(1.0) if 1.0 in weights else len(weights)
        positions = slot_value_positions(compiled, item["labels"][start:]) if compiled else None
        if positions is not None:
            for p in positions:
                weights[start + p] = weight
            weighted += 1
        item[TOKEN_WEIGHTS] = weights
    log.info("value-token loss weight %.3g on %d of %d training examples", weight, weighted, len(items))
    return weighted


def _template(tokenizer, task_name: str) -> CompiledSlots | None:
    shape = get_task(task_name).constrained
    if not isinstance(shape, SlotChoices):
        return None
    try:
        return compile_slots(tokenizer, shape)
    except TemplateError:
        return None


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean next-token cross-entropy: token t's label is predicted by logits at t-1."""
    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:].to(logits.device)
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=IGNORE_INDEX, reduction="none")
    weights = weights.reshape(-1) * (labels.reshape(-1) != IGNORE_INDEX)
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


class ValueWeightedTrainer(EpochSeededTrainer):
    """EpochSeededTrainer whose loss is weighted_lm_loss when the batch carries TOKEN_WEIGHTS."""

    loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by the accumulation steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(TOKEN_WEIGHTS, None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = weighted_lm_loss(outputs.logits, labels, weights)
        return (loss, outputs) if return_outputs else loss
