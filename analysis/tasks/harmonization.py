"""Task 2, series harmonization: accuracy with a Wilson interval, confusion matrix, McNemar.

A parsed class outside the seven classes, or no parse, is wrong; in the confusion matrix it is
the column "(invalid)".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from analysis.runs import AlignedPair
from analysis.stats import wilson_interval
from analysis.tasks.base import (
    TASK_ANALYSES,
    CompareOptions,
    Records,
    Tables,
    TaskAnalysis,
    add_adjusted,
    f1_from_counts,
    mcnemar_row,
    parse_fail_rate,
)
from pipelines.schema import SERIES_CLASSES

INVALID = "(invalid)"


def predicted_class(record: dict[str, Any]) -> str:
    parsed = record.get("parsed")
    return parsed if parsed in SERIES_CLASSES else INVALID


def correctness(records: list[dict[str, Any]]) -> np.ndarray:
    return np.array([predicted_class(r) == r.get("reference") for r in records], dtype=bool)


def summarize(records: Records, alpha: float = 0.05) -> Tables:
    """harmonization_summary (accuracy, Wilson CI, macro F1 over the classes) and the confusion matrix."""
    pairs = [(r.get("reference"), predicted_class(r)) for r in records.values()]
    counts = Counter(pairs)
    confusion = [
        {"reference": truth, "predicted": guess, "count": counts[(truth, guess)]}
        for truth in SERIES_CLASSES
        for guess in (*SERIES_CLASSES, INVALID)
    ]
    f1s = []
    for cls in SERIES_CLASSES:
        tp = counts[(cls, cls)]
        fp = sum(n for (t, g), n in counts.items() if g == cls and t != cls)
        fn = sum(n for (t, g), n in counts.items() if t == cls and g != cls)
        f1s.append(f1_from_counts(tp, fp, fn)[2])
    accuracy = wilson_interval(sum(t == g for t, g in pairs), len(pairs), alpha)
    summary = {
        "n": accuracy.n,
        "correct": accuracy.successes,
        "accuracy": accuracy.value,
        "ci_low": accuracy.ci_low,
        "ci_high": accuracy.ci_high,
        "ci_method": "wilson",
        "f1_macro": float(np.mean(f1s)),
        "parse_fail_rate": parse_fail_rate(records),
    }
    return {"harmonization_summary": [summary], "harmonization_confusion": confusion}


def compare(pair: AlignedPair, options: CompareOptions) -> Tables:
    """McNemar on paired per-description correctness (a single test: no family to correct)."""
    ref, other = correctness(pair.ref), correctness(pair.other)
    row = mcnemar_row(ref, other)
    return {"harmonization_mcnemar": add_adjusted([row], options)}


ANALYSIS = TASK_ANALYSES.add(
    "harmonization", TaskAnalysis("harmonization", summarize, compare, ("accuracy",))
)
