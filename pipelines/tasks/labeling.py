"""Task `labeling`: a whole CXR report in, a JSON object of 14 Yes/No labels out.

The 14 keys are "No Finding" and the 13 CheXpert labels (pipelines.vocabulary.LABEL_KEYS). The
headline metric is the unweighted mean of the 14 per-label F1 scores, the figure the paper
reports (0.894 for its multi-task OPT-350m).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.data.records import ReportRecord
from pipelines.tasks.base import (
    Example,
    Metric,
    Parsed,
    SlotChoices,
    Task,
    TaskScores,
    check_scoring_inputs,
    make_example,
    status_rate,
    usable_value,
)
from pipelines.tasks.json_output import extract_json_object
from pipelines.tasks.metrics import macro_f1, precision_recall_f1
from pipelines.vocabulary import LABEL_KEYS, NO, YES

NAME = "labeling"
DIRECTIVE = "Report CXR diagnosis."

# The all-"Yes" target is 327 characters; at roughly 3-4 characters per BPE token that is
# about 80-110 tokens, so 160 leaves room for tokenizers that split the medical words finely.
MAX_NEW_TOKENS = 160


def _key_form(key: str) -> str:
    """Case, space, underscore and punctuation-free form: "PLEURAL_EFFUSION" -> "pleuraleffusion"."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


# Spelling variants seen in prose; the paper's own text writes "other pleural".
_KEY_ALIASES = {"otherpleural": "Pleural Other", "supportdevice": "Support Devices"}
_CANONICAL_KEYS: dict[str, str] = {_key_form(k): k for k in LABEL_KEYS} | _KEY_ALIASES

_VALUE_WORDS: dict[str, str] = {
    "yes": YES, "true": YES, "1": YES,
    "no": NO, "false": NO, "0": NO,
}  # fmt: skip


def _opposite(value: str) -> str:
    return NO if value == YES else YES


def normalize_value(value: str) -> str | None:
    """Map yes/no/true/false/1/0 (any case, with stray quotes or a final period) to Yes/No."""
    return _VALUE_WORDS.get(value.strip().strip("\"'.!;").strip().lower())


def render_target(values: Sequence[str]) -> str:
    """The answer for one Yes/No per label, in LABEL_KEYS order: exactly the training target."""
    return json.dumps(dict(zip(LABEL_KEYS, values, strict=True)), ensure_ascii=False)


def build_example(record: ReportRecord) -> Example:
    """The whole report in; the 14 labels, in LABEL_KEYS order, as a JSON object out."""
    labels = {key: record.labels[key] for key in LABEL_KEYS}
    target = render_target([labels[key] for key in LABEL_KEYS])
    return make_example(NAME, DIRECTIVE, record.id, record.text(with_impression=True), target, labels)


def parse(text: str) -> Parsed:
    """Labels found in the output: "ok" with all 14, "partial" with some, "failed" with none.

    Keys match case-, space- and underscore-insensitively; unknown keys and values that are
    not a yes/no word are ignored (so that label counts as missing).
    """
    pairs = extract_json_object(text) or {}
    found: dict[str, str] = {}
    for raw_key, raw_value in pairs.items():
        key, value = _CANONICAL_KEYS.get(_key_form(raw_key)), normalize_value(raw_value)
        if key and value:
            found.setdefault(key, value)
    if not found:
        return Parsed(None, "failed")
    ordered = {key: found[key] for key in LABEL_KEYS if key in found}
    return Parsed(ordered, "ok" if len(ordered) == len(LABEL_KEYS) else "partial")


def _predictions(reference: dict[str, str], parsed: Parsed) -> dict[str, str]:
    """Predicted Yes/No for all 14 labels; a missing or invalid one is the reference's opposite."""
    value = usable_value(parsed)
    found = value if isinstance(value, dict) else {}
    return {key: _valid_or(found.get(key), _opposite(reference[key])) for key in LABEL_KEYS}


def _valid_or(value: object, fallback: str) -> str:
    return value if isinstance(value, str) and value in (YES, NO) else fallback


def score(references: Sequence[dict[str, str]], parsed: Sequence[Parsed]) -> TaskScores:
    """Per-label and averaged F1 with Yes as the positive class.

    A failed parse, or a label missing from a partial one, counts as wrong: an FN when the
    reference is Yes, an FP when it is No. Zero-division policy (pipelines.tasks.metrics):
    a label with tp + fp + fn == 0 scores 1.0 on F1, precision and recall.
    Metrics: f1/<label>, precision/<label>, recall/<label>, support/<label> (reference Yes
    count), f1_macro (the paper's: unweighted mean of the 14 F1s), f1_macro_supported (mean over
    the labels with at least one reference Yes; NaN if none has), f1_micro (counts pooled over
    labels), exact_match (all 14 right), parse_fail_rate, parse_partial_rate.
    """
    check_scoring_inputs(references, parsed)
    counts = {key: {"tp": 0, "fp": 0, "fn": 0} for key in LABEL_KEYS}
    per_example: list[dict[str, Any]] = []
    for reference, output in zip(references, parsed, strict=True):
        predicted = _predictions(reference, output)
        correct = {key: int(predicted[key] == reference[key]) for key in LABEL_KEYS}
        for key in LABEL_KEYS:
            _count(counts[key], reference[key], predicted[key])
        per_example.append(
            {
                "correct": correct,
                "label_accuracy": sum(correct.values()) / len(LABEL_KEYS),
                "exact_match": int(all(correct.values())),
            }
        )
    metrics = _label_metrics(counts)
    metrics["exact_match"] = sum(e["exact_match"] for e in per_example) / len(per_example)
    metrics["parse_fail_rate"] = status_rate(parsed, "failed")
    metrics["parse_partial_rate"] = status_rate(parsed, "partial")
    return TaskScores(metrics, per_example)


def _count(counts: dict[str, int], reference: str, predicted: str) -> None:
    # Yes is the positive class; a true negative changes none of tp/fp/fn.
    if predicted == YES:
        counts["tp" if reference == YES else "fp"] += 1
    elif reference == YES:
        counts["fn"] += 1


def _label_metrics(counts: dict[str, dict[str, int]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, c in counts.items():
        precision, recall, f1 = precision_recall_f1(c["tp"], c["fp"], c["fn"])
        metrics |= {
            f"f1/{key}": float(f1),
            f"precision/{key}": float(precision),
            f"recall/{key}": float(recall),
            f"support/{key}": float(c["tp"] + c["fn"]),
        }
    tp, fp, fn = (np.array([c[name] for c in counts.values()]) for name in ("tp", "fp", "fn"))
    metrics["f1_macro"] = float(macro_f1(tp, fp, fn, "all"))
    metrics["f1_macro_supported"] = float(macro_f1(tp, fp, fn, "supported"))
    pooled = {name: sum(c[name] for c in counts.values()) for name in ("tp", "fp", "fn")}
    metrics["f1_micro"] = float(precision_recall_f1(pooled["tp"], pooled["fp"], pooled["fn"])[2])
    return metrics


TASK = Task(
    name=NAME,
    directive=DIRECTIVE,
    dataset="reports",
    max_new_tokens=MAX_NEW_TOKENS,
    build_example=build_example,
    parse=parse,
    score=score,
    headline_metric="f1_macro",
    metrics=(
        Metric("f1_macro", "macro F1, 14 labels (paper)", headline=True),
        Metric("f1_macro_supported", "macro F1, labels present", headline=True),
        Metric("f1_micro", "micro F1"),
    ),
    constrained=SlotChoices(render=render_target, slots=len(LABEL_KEYS), values=(YES, NO)),
    stop=("}",),
)
