"""Task 2, series harmonization: accuracy (Wilson and bootstrap intervals), macro F1, confusion
matrix, McNemar, and the paired bootstrap test of the macro-F1 difference.

A parsed class outside the seven classes, or no parse, is wrong; in the confusion matrix it is
the column "(invalid)". It is an FN for the reference class and an FP for none, and macro F1 runs
over the classes in the references or the valid predictions (scikit-learn's definition), exactly
as the runs log it (pipelines.tasks.metrics).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from analysis.runs import AlignedPair
from analysis.stats import DEFAULT_BOOTSTRAP, BootstrapSpec, WeightedStatistic, wilson_interval
from analysis.tasks.base import (
    TASK_ANALYSES,
    CompareOptions,
    Records,
    Tables,
    TaskAnalysis,
    add_adjusted,
    bootstrap_columns,
    bootstrap_test_rows,
    mcnemar_row,
    parse_fail_rate,
    sorted_records,
)
from pipelines.tasks.metrics import macro_f1
from pipelines.vocabulary import SERIES_CLASSES

INVALID = "(invalid)"


def predicted_class(record: dict[str, Any]) -> str:
    parsed = record.get("parsed")
    return parsed if parsed in SERIES_CLASSES else INVALID


def correctness(records: list[dict[str, Any]]) -> np.ndarray:
    return np.array([predicted_class(r) == r.get("reference") for r in records], dtype=bool)


def statistics(records: list[dict[str, Any]]) -> dict[str, WeightedStatistic]:
    """accuracy and f1_macro as functions of (resamples x n) example weights."""
    truth = np.array([r.get("reference") for r in records], dtype=object)
    guess = np.array([predicted_class(r) for r in records], dtype=object)
    classes = np.array(SERIES_CLASSES, dtype=object)
    is_truth, is_guess = truth[:, None] == classes, guess[:, None] == classes  # n x 7 one-hot
    tp, fp, fn = (m.astype(float) for m in (is_truth & is_guess, ~is_truth & is_guess, is_truth & ~is_guess))
    correct = (truth == guess).astype(float)
    return {
        "accuracy": lambda weights: weights @ correct / max(len(records), 1),
        "f1_macro": lambda weights: macro_f1(weights @ tp, weights @ fp, weights @ fn, "occurring"),
    }


def summarize(records: Records, alpha: float = 0.05, bootstrap: BootstrapSpec = DEFAULT_BOOTSTRAP) -> Tables:
    """harmonization_summary (accuracy with Wilson and bootstrap intervals, macro F1 with a bootstrap
    interval) and the confusion matrix."""
    ordered = sorted_records(records)
    pairs = [(r.get("reference"), predicted_class(r)) for r in ordered]
    counts = Counter(pairs)
    confusion = [
        {"reference": truth, "predicted": guess, "count": counts[(truth, guess)]}
        for truth in SERIES_CLASSES
        for guess in (*SERIES_CLASSES, INVALID)
    ]
    accuracy = wilson_interval(sum(t == g for t, g in pairs), len(pairs), alpha)
    summary = {
        "n": accuracy.n,
        "correct": accuracy.successes,
        "ci_low": accuracy.ci_low,
        "ci_high": accuracy.ci_high,
        "ci_method": "wilson",
        **bootstrap_columns(statistics(ordered), len(ordered), alpha, bootstrap),
        "parse_fail_rate": parse_fail_rate(records),
    }
    return {"harmonization_summary": [summary], "harmonization_confusion": confusion}


def compare(pair: AlignedPair, options: CompareOptions) -> Tables:
    """McNemar on paired per-description correctness (a single test: no family to correct), and the
    paired bootstrap test of the macro-F1 difference."""
    ref, other = correctness(pair.ref), correctness(pair.other)
    row = mcnemar_row(ref, other)
    tests = {"f1_macro": (statistics(pair.ref)["f1_macro"], statistics(pair.other)["f1_macro"])}
    return {
        "harmonization_mcnemar": add_adjusted([row], options),
        "harmonization_f1_macro_tests": bootstrap_test_rows(tests, len(pair.ids), options),
    }


ANALYSIS = TASK_ANALYSES.add(
    "harmonization", TaskAnalysis("harmonization", summarize, compare, ("accuracy",))
)
