"""What a per-task analysis is, and the registry that holds one per task."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from analysis.runs import AlignedPair
from analysis.stats import DEFAULT_ALPHA, adjust_p_values, mcnemar_test
from pipelines.registry import Registry

Records = Mapping[str, dict[str, Any]]  # example id -> one line of predictions/<task>.jsonl
Rows = list[dict[str, Any]]
Tables = dict[str, Rows]  # table name -> tidy rows


@dataclass(frozen=True)
class CompareOptions:
    """Significance level and the correction applied within one comparison's family of tests."""

    alpha: float = DEFAULT_ALPHA
    correction: str = "none"


@dataclass(frozen=True)
class TaskAnalysis:
    """One task's analysis.

    summarize(records, alpha) -> tables about one run; its "<task>_summary" table has exactly one row,
    holding the `headline` columns. compare(pair, options) -> tables of tests of the pair's
    other run against its reference run (differences are other - reference).
    """

    name: str
    summarize: Callable[[Records, float], Tables]
    compare: Callable[[AlignedPair, CompareOptions], Tables]
    headline: tuple[str, ...]


TASK_ANALYSES: Registry[TaskAnalysis] = Registry("task analysis")


def add_adjusted(rows: Rows, options: CompareOptions) -> Rows:
    """Fill p_adjusted and significant in rows that form one family of tests (their p_value column)."""
    adjusted = adjust_p_values([r["p_value"] for r in rows], options.correction, options.alpha)
    for row, p in zip(rows, adjusted, strict=True):
        row["correction"] = options.correction
        row["p_adjusted"] = p
        row["significant"] = bool(p < options.alpha)  # NaN compares False: not significant
    return rows


def f1_from_counts(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1); all three are 1.0 when tp + fp + fn == 0 (nothing to find, none claimed).

    Otherwise an undefined precision or recall (no predicted or no true positives) counts as 0.
    """
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


def parse_fail_rate(records: Records) -> float:
    """Share of examples whose output could not be parsed at all."""
    if not records:
        return float("nan")
    return sum(r.get("parse_status") == "failed" for r in records.values()) / len(records)


def mcnemar_row(ref: Any, other: Any) -> dict[str, Any]:
    """McNemar on two paired 0/1 correctness vectors, as one table row (2x2 cells, test, method)."""
    result = mcnemar_test(ref, other)
    return {
        "n": len(ref),
        "accuracy_ref": float(ref.mean()),
        "accuracy_other": float(other.mean()),
        "both_correct": result.both_correct,
        "ref_only_correct": result.ref_only,
        "other_only_correct": result.other_only,
        "both_wrong": result.both_wrong,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "method": result.method,
    }
