"""Task 1, report labeling: per-label F1 / precision / recall / support, both macro-F1 variants with
bootstrap intervals, McNemar per label and the paired bootstrap test of the macro-F1 difference.

A predicted key that is missing, or not "Yes"/"No", counts as the opposite of the reference
(wrong), so a failed parse is wrong on all 14 labels. Positive class: "Yes". The F1 definitions are
pipelines.tasks.metrics', the same the runs log.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np

from analysis.runs import AlignedPair
from analysis.stats import DEFAULT_BOOTSTRAP, BootstrapSpec, WeightedStatistic
from analysis.tasks.base import (
    TASK_ANALYSES,
    CompareOptions,
    Records,
    Rows,
    Tables,
    TaskAnalysis,
    add_adjusted,
    bootstrap_columns,
    bootstrap_test_rows,
    mcnemar_row,
    parse_fail_rate,
    sorted_records,
)
from pipelines.tasks.metrics import macro_f1, precision_recall_f1
from pipelines.vocabulary import LABEL_KEYS, NO, YES

# summary column -> macro average (pipelines.tasks.metrics.MACRO_AVERAGES)
MACRO_COLUMNS: dict[str, str] = {"f1_macro": "all", "f1_macro_supported": "supported"}


def yes_matrices(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted): n x 14 boolean matrices, True where the label is "Yes", columns LABEL_KEYS.

    A missing or invalid predicted value is the opposite of the reference (wrong). Built with
    whole-array comparisons: this runs for every run and pair (hundreds of thousands of cells).
    """
    shape = (len(records), len(LABEL_KEYS))
    true_values = np.array([_values(r.get("reference")) for r in records], dtype=object).reshape(shape)
    guesses = np.array([_values(r.get("parsed")) for r in records], dtype=object).reshape(shape)
    truth = true_values == YES
    invalid = ~(truth | (true_values == NO))
    if invalid.any():
        row, col = np.argwhere(invalid)[0]
        raise ValueError(
            f"labeling example {records[row].get('id')!r}: reference for {LABEL_KEYS[col]!r} "
            f"is {true_values[row, col]!r}, not Yes/No"
        )
    guessed_yes = guesses == YES
    valid_guess = guessed_yes | (guesses == NO)
    return truth, np.where(valid_guess, guessed_yes, ~truth)


_ALL_KEYS = itemgetter(*LABEL_KEYS)


def _values(labels: Any) -> tuple[Any, ...]:
    """The 14 values of a label dict in LABEL_KEYS order; None for absent keys or a non-dict."""
    if not isinstance(labels, dict):
        return (None,) * len(LABEL_KEYS)
    try:
        return _ALL_KEYS(labels)  # one C call: the common, complete case
    except KeyError:
        return tuple(labels.get(k) for k in LABEL_KEYS)


def correctness(records: list[dict[str, Any]]) -> np.ndarray:
    """n x 14 boolean matrix: was each label of each report predicted right."""
    truth, predicted = yes_matrices(records)
    return truth == predicted


def per_label_rows(truth: np.ndarray, predicted: np.ndarray) -> Rows:
    """One row per label: tp, fp, fn, tn, support (reference "Yes" count), precision, recall, F1."""
    counts = {
        "tp": (truth & predicted).sum(axis=0),
        "fp": (~truth & predicted).sum(axis=0),
        "fn": (truth & ~predicted).sum(axis=0),
        "tn": (~truth & ~predicted).sum(axis=0),
    }
    precision, recall, f1 = precision_recall_f1(counts["tp"], counts["fp"], counts["fn"])
    rows = []
    for j, key in enumerate(LABEL_KEYS):
        cell = {name: int(values[j]) for name, values in counts.items()}
        rows.append(
            {
                "label": key,
                **cell,
                "support": cell["tp"] + cell["fn"],
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
            }
        )
    return rows


def macro_statistics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, WeightedStatistic]:
    """Each macro-F1 column as a function of (resamples x n) example weights."""
    tp, fp, fn = (m.astype(float) for m in (truth & predicted, ~truth & predicted, truth & ~predicted))

    def statistic(average: str) -> WeightedStatistic:
        return lambda weights: macro_f1(weights @ tp, weights @ fp, weights @ fn, average)

    return {column: statistic(average) for column, average in MACRO_COLUMNS.items()}


def summarize(records: Records, alpha: float = 0.05, bootstrap: BootstrapSpec = DEFAULT_BOOTSTRAP) -> Tables:
    """labeling_per_label (14 rows) and labeling_summary: both macro-F1 variants with percentile
    bootstrap intervals, micro F1, exact match, parse failures."""
    truth, predicted = yes_matrices(sorted_records(records))
    rows = per_label_rows(truth, predicted)
    tp, fp, fn = (sum(r[c] for r in rows) for c in ("tp", "fp", "fn"))
    exact = np.all(truth == predicted, axis=1)
    summary = {
        "n": len(records),
        # f1_macro is the paper's headline (mean of the 14 F1s, absent labels 1.0)
        **bootstrap_columns(macro_statistics(truth, predicted), len(records), alpha, bootstrap),
        "labels_supported": sum(r["support"] > 0 for r in rows),
        "f1_micro": float(precision_recall_f1(tp, fp, fn)[2]),
        "exact_match": float(exact.mean()) if exact.size else float("nan"),
        "parse_fail_rate": parse_fail_rate(records),
    }
    return {"labeling_per_label": rows, "labeling_summary": [summary]}


def compare(pair: AlignedPair, options: CompareOptions) -> Tables:
    """McNemar per label on paired per-report correctness (correction across the 14 labels), and
    the paired bootstrap test of each macro-F1 difference."""
    (truth, ref_guess), (_, other_guess) = yes_matrices(pair.ref), yes_matrices(pair.other)
    ref, other = truth == ref_guess, truth == other_guess
    rows = [{"label": key, **mcnemar_row(ref[:, j], other[:, j])} for j, key in enumerate(LABEL_KEYS)]
    ref_stats, other_stats = macro_statistics(truth, ref_guess), macro_statistics(truth, other_guess)
    tests = {column: (ref_stats[column], other_stats[column]) for column in MACRO_COLUMNS}
    return {
        "labeling_mcnemar": add_adjusted(rows, options),
        "labeling_f1_macro_tests": bootstrap_test_rows(tests, len(pair.ids), options),
    }


ANALYSIS = TASK_ANALYSES.add(
    "labeling", TaskAnalysis("labeling", summarize, compare, ("f1_macro", "f1_macro_supported"))
)
