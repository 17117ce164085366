"""Task `harmonization`: one MRI series description (DICOM 0008,103E) in, ``{description: class}`` out.

The class is one of the seven in pipelines.vocabulary.SERIES_CLASSES; the headline metric is
accuracy (the paper reports 0.975 for its multi-task OPT-350m).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pipelines.data.records import SeriesRecord
from pipelines.tasks.base import (
    Example,
    Metric,
    Parsed,
    ScoredCandidates,
    Task,
    TaskScores,
    check_scoring_inputs,
    make_example,
    status_rate,
    usable_value,
)
from pipelines.tasks.json_output import extract_json_object
from pipelines.tasks.metrics import macro_f1
from pipelines.vocabulary import SERIES_CLASSES

NAME = "harmonization"
DIRECTIVE = "Harmonize sequence name."

# The model echoes the description: DICOM caps it at 64 characters (VR LO), about 20-40 tokens,
# plus about 10 for the braces, quotes and class.
MAX_NEW_TOKENS = 64


def _class_form(text: str) -> str:
    """Upper case without separators or stray punctuation: "t2-flair." -> "T2FLAIR"."""
    return re.sub(r"[\s_\-/.'\"]+", "", text.upper())


# Accepted spellings of each class, keyed by their separator-free upper-case form.
_CLASS_VARIANTS: dict[str, str] = {_class_form(c): c for c in SERIES_CLASSES} | {
    "FLAIR": "T2/FLAIR",
    "T1W": "T1",
    "T2W": "T2",
}

# Finds a class name written without JSON; longer alternatives first so "T2 FLAIR" beats "T2".
_BARE_CLASS = re.compile(
    r"(?<![A-Za-z0-9])(T2[\s_/-]*FLAIR|FLAIR|T[12]W?|DWI|ADC|SWI|OTHER)(?![A-Za-z0-9])", re.IGNORECASE
)


def normalize_class(text: str) -> str | None:
    """The series class `text` names ("flair", "T2 FLAIR", "t1" ...), or None if it names none."""
    return _CLASS_VARIANTS.get(_class_form(text))


def render_target(description: str, label: str) -> str:
    """The answer mapping `description` to `label`: exactly the training target."""
    return json.dumps({description: label}, ensure_ascii=False)


def candidates(description: str) -> list[str]:
    """Every valid answer for `description`, one per class (what constrained decoding scores)."""
    return [render_target(description, c) for c in SERIES_CLASSES]


def build_example(record: SeriesRecord) -> Example:
    """The raw description in; a one-pair JSON object mapping it to its class out."""
    target = render_target(record.description, record.label)
    return make_example(NAME, DIRECTIVE, record.id, record.description, target, record.label)


def parse(text: str) -> Parsed:
    """The class in the output.

    "ok": the value of the first JSON pair names a class. "partial": no JSON object, but the
    first non-blank line names a class (right answer, wrong format; still scored). "failed":
    anything else, including a JSON value that is not a class.
    """
    pairs = extract_json_object(text)
    if pairs:
        found = normalize_class(next(iter(pairs.values())))
        return Parsed(found, "ok") if found else Parsed(None, "failed")
    match = _BARE_CLASS.search(_first_line(text))
    found = normalize_class(match.group(1)) if match else None
    return Parsed(found, "partial") if found else Parsed(None, "failed")


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def score(references: Sequence[str], parsed: Sequence[Parsed]) -> TaskScores:
    """Accuracy and macro F1 over the seven classes; a failed parse counts as wrong.

    A failed parse is an FN for its reference class and an FP for none. The macro mean runs
    over the classes that occur in the references or the predictions (as scikit-learn does),
    so classes absent from a small test set and never predicted neither raise nor lower it.
    Metrics: accuracy, f1_macro, parse_fail_rate.
    """
    check_scoring_inputs(references, parsed)
    counts = {c: {"tp": 0, "fp": 0, "fn": 0} for c in SERIES_CLASSES}
    per_example: list[dict[str, Any]] = []
    for reference, output in zip(references, parsed, strict=True):
        value = usable_value(output)
        predicted = value if isinstance(value, str) and value in counts else None
        correct = predicted == reference
        if correct:
            counts[predicted]["tp"] += 1
        else:
            _bump(counts, reference, "fn")
            _bump(counts, predicted, "fp")
        per_example.append({"correct": int(correct)})
    tp, fp, fn = ([c[name] for c in counts.values()] for name in ("tp", "fp", "fn"))
    metrics = {
        "accuracy": sum(e["correct"] for e in per_example) / len(per_example),
        "f1_macro": float(macro_f1(tp, fp, fn, "occurring")),
        "parse_fail_rate": status_rate(parsed, "failed"),
    }
    return TaskScores(metrics, per_example)


def _bump(counts: dict[str, dict[str, int]], cls: str | None, kind: str) -> None:
    # None (failed parse) and a reference outside the seven classes have no column to count in.
    if cls in counts:
        counts[cls][kind] += 1


TASK = Task(
    name=NAME,
    directive=DIRECTIVE,
    dataset="series",
    max_new_tokens=MAX_NEW_TOKENS,
    build_example=build_example,
    parse=parse,
    score=score,
    headline_metric="accuracy",
    metrics=(
        Metric("accuracy", "accuracy", headline=True, example_score="correct"),
        Metric("f1_macro", "macro F1", shown=True),
    ),
    constrained=ScoredCandidates(candidates),
    stop=("}",),
)
