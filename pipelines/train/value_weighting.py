"""Loss weighting of an answer's slot-value tokens (an option; the paper's loss is unweighted).

A labeling target is ~127 tokens of which 14 are the Yes/No values and the rest JSON the model
copies after a few steps; with the plain response-only loss the values carry ~11% of the loss,
and most of them are "No". `--value-weight w` multiplies the loss of every slot-value token
(tasks whose answer shape is SlotChoices) by w; all other response tokens keep weight 1, and
the batch loss is the weighted mean (sum of w_i * CE_i over sum of w_i per micro-batch).

`--value-balance p` (class-balanced weights, also an option) multiplies a value's weight further
by (m / n) ** p, where n is how often that slot takes that value in the training examples and m
how often it takes its most common value: with p = 0.5 a finding present in 3% of the reports
weighs about 5.7x its "No" (square-root inverse frequency); p = 0 is no balancing.

`--choice-weight c` (an option) does the same for tasks scored among candidate answers
(ScoredCandidates): a harmonization target repeats the description and then names the class
(``{"COR T2 loc": "Other"}``), and only the tokens in which the candidates differ (the class, with
whatever quote a tokenizer merges into it) decide the answer. Those tokens weigh c; the copied
description, which the model learns within a few steps, keeps 1.
"""
from __future__ import annotations

import logging
from collections import Counter

import torch

from pipelines.infer.constrained import CompiledSlots, TemplateError, compile_slots, shared_length, text_tokens
from pipelines.infer.evaluation import input_text
from pipelines.tasks import get_task
from pipelines.tasks.base import Example, ScoredCandidates, SlotChoices
from pipelines.train.encoding import IGNORE_INDEX, TOKEN_WEIGHTS
from pipelines.train.sampler import EpochSeededTrainer

log = logging.getLogger(__name__)


def slot_value_spans(compiled: CompiledSlots, target: list[int]) -> list[tuple[int, range]] | None:
    """Per slot of `target`, the chosen option's index and its tokens' positions; None if off-template."""
    spans: list[tuple[int, range]] = []
    at = 0
    for slot, options in enumerate([*compiled.options, None]):
        run = compiled.runs[slot]
        if target[at : at + len(run)] != run:
            return None
        at += len(run)
        if options is None:
            break
        chosen = next((i for i, o in enumerate(options) if target[at : at + len(o)] == o), None)
        if chosen is None:
            return None
        spans.append((chosen, range(at, at + len(options[chosen]))))
        at += len(options[chosen])
    return spans if at <= len(target) else None


def choice_span(tokenizer, shape: ScoredCandidates, text: str, target: list[int]) -> range | None:
    """Positions of `target` (one candidate's tokens, eos or not after them) in which the task's
    candidates for the input `text` differ; None if `target` is none of them (a cut target)."""
    rows = [text_tokens(tokenizer, c) for c in shape.candidates(text)]
    chosen = next((row for row in rows if target[: len(row)] == row), None)
    if chosen is None or len(rows) < 2:
        return None
    prefix = shared_length(rows, keep=0)
    suffix = shared_length([row[::-1] for row in rows], keep=0)
    return range(prefix, len(chosen) - min(suffix, len(chosen) - prefix))


def _response_start(labels: list[int]) -> int:
    """Index of the first trained (response) token of an encoded item."""
    return next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


def balance_factors(counts: Counter, power: float) -> dict[tuple, float]:
    """(task, slot, option) -> (m / n) ** power, m the count of the slot's most common option."""
    top: dict[tuple, int] = {}
    for (task, slot, _), n in counts.items():
        top[task, slot] = max(top.get((task, slot), 0), n)
    return {key: (top[key[:2]] / n) ** power for key, n in counts.items()}


def add_value_weights(items: list[dict], examples: list[Example], tokenizer, weight: float,
                      balance: float = 0.0, choice_weight: float = 1.0) -> int:
    """Give every item a TOKEN_WEIGHTS list (1.0 on response tokens, `weight` times the value's
    balance factor on slot-value tokens, `choice_weight` on a scored answer's choice tokens); the
    number of items with slot values weighted."""
    templates: dict[str, CompiledSlots | None] = {}
    found: list[tuple[int, list[tuple[int, range]]] | None] = []
    for item, example in zip(items, examples, strict=True):
        if example.task not in templates:
            templates[example.task] = _template(tokenizer, example.task)
        compiled = templates[example.task]
        start = _response_start(item["labels"])
        spans = slot_value_spans(compiled, item["labels"][start:]) if compiled else None
        found.append((start, spans) if spans is not None else None)
    counts = Counter((example.task, slot, chosen) for example, hit in zip(examples, found, strict=True)
                     if hit is not None for slot, (chosen, _) in enumerate(hit[1]))
    factors = balance_factors(counts, balance)
    for item, example, hit in zip(items, examples, found, strict=True):
        weights = [0.0 if label == IGNORE_INDEX else 1.0 for label in item["labels"]]
        if hit is not None:
            start, spans = hit
            for slot, (chosen, positions) in enumerate(spans):
                for p in positions:
                    weights[start + p] = weight * factors[example.task, slot, chosen]
        item[TOKEN_WEIGHTS] = weights
    chosen_items = _weigh_choices(items, examples, tokenizer, choice_weight) if choice_weight != 1.0 else 0
    weighted = sum(hit is not None for hit in found)
    log.info("value-token loss weight %.3g (balance power %.3g) on %d of %d training examples; "
             "choice-token weight %.3g on %d", weight, balance, weighted, len(items), choice_weight, chosen_items)
    if balance and factors:
        log.info("largest balance factor %.2f", max(factors.values()))
    return weighted


def _weigh_choices(items: list[dict], examples: list[Example], tokenizer, choice_weight: float) -> int:
    """Set `choice_weight` on the choice tokens of every ScoredCandidates item; how many had them."""
    done = 0
    for item, example in zip(items, examples, strict=True):
        shape = get_task(example.task).constrained
        if not isinstance(shape, ScoredCandidates):
            continue
        start = _response_start(item["labels"])
        span = choice_span(tokenizer, shape, input_text(example.prompt), item["labels"][start:])
        if span is None:
            continue
        for p in span:
            item[TOKEN_WEIGHTS][start + p] = choice_weight
        done += 1
    return done


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
