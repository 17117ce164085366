"""What a per-task analysis is, and the registry that holds one per task."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis.runs import AlignedPair
from analysis.stats import (
    DEFAULT_ALPHA,
    BootstrapSpec,
    WeightedStatistic,
    adjust_p_values,
    bootstrap_interval,
    mcnemar_test,
    paired_bootstrap_test,
)
from pipelines.registry import Registry

Records = Mapping[str, dict[str, Any]]  # example id -> one line of predictions/<task>.jsonl
Rows = list[dict[str, Any]]
Tables = dict[str, Rows]  # table name -> tidy rows


@dataclass(frozen=True)
class CompareOptions:
    """Significance level, the correction applied within one comparison's family of tests, and the
    bootstrap (resamples, seed) behind the intervals and the paired macro-F1 tests."""

    alpha: float = DEFAULT_ALPHA
    correction: str = "none"
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)


@dataclass(frozen=True)
class TaskAnalysis:
    """One task's analysis.

    summarize(records, alpha, bootstrap) -> tables about one run; its "<task>_summary" table has
    exactly one row, holding the `headline` columns. compare(pair, options) -> tables of tests of
    the pair's other run against its reference run (differences are other - reference).
    """

    name: str
    summarize: Callable[[Records, float, BootstrapSpec], Tables]
    compare: Callable[[AlignedPair, CompareOptions], Tables]
    headline: tuple[str, ...]


TASK_ANALYSES: Registry[TaskAnalysis] = Registry("task analysis")


def add_adjusted(rows: Rows, options: CompareOptions) -> Rows:
    """Fill the adjusted p-values and significance of rows that form one family of tests.

    p_adjusted / significant follow the chosen correction (the default "none" is the paper's);
    p_holm, significant_unadjusted and significant_holm are always there, so the report can show
    unadjusted and Holm-adjusted significance side by side. NaN p-values are never significant.
    """
    p_values = [r["p_value"] for r in rows]
    adjusted = adjust_p_values(p_values, options.correction, options.alpha)
    holm = adjust_p_values(p_values, "holm", options.alpha)
    for row, p, p_holm in zip(rows, adjusted, holm, strict=True):
        row["correction"] = options.correction
        row["p_adjusted"] = p
        row["significant"] = bool(p < options.alpha)  # NaN compares False: not significant
        row["p_holm"] = p_holm
        row["significant_unadjusted"] = bool(row["p_value"] < options.alpha)
        row["significant_holm"] = bool(p_holm < options.alpha)
    return rows


def sorted_records(records: Records) -> list[dict[str, Any]]:
    """Records in example-id order: the order every bootstrap resamples (as AlignedPair's)."""
    return [records[key] for key in sorted(records)]


def bootstrap_columns(statistics: Mapping[str, WeightedStatistic], n: int, alpha: float, spec: BootstrapSpec) -> dict:
    """<metric>, <metric>_boot_low, <metric>_boot_high per statistic, plus the bootstrap's settings."""
    columns: dict[str, Any] = {}
    for metric, statistic in statistics.items():
        interval = bootstrap_interval(statistic, n, alpha, spec)
        columns[metric] = interval.estimate
        columns[f"{metric}_boot_low"], columns[f"{metric}_boot_high"] = interval.ci_low, interval.ci_high
    return columns | {"boot_level": 1 - alpha, "boot_resamples": spec.resamples, "boot_seed": spec.seed}


def bootstrap_test_rows(
    statistics: Mapping[str, tuple[WeightedStatistic, WeightedStatistic]], n: int, options: CompareOptions
) -> Rows:
    """One paired-bootstrap row per metric: (reference, other) statistics on the same resamples.

    Each metric is its own headline test, so each row is its own family for the correction.
    """
    rows = []
    for metric, (ref, other) in statistics.items():
        result = paired_bootstrap_test(ref, other, n, options.alpha, options.bootstrap)
        row = {
            "metric": metric,
            "n": n,
            "value_ref": result.value_ref,
            "value_other": result.value_other,
            "diff": result.diff,
            "ci_low": result.ci_low,
            "ci_high": result.ci_high,
            "ci_level": 1 - options.alpha,
            "p_value": result.p_value,
            "method": result.test,
            "resamples": result.resamples,
            "boot_seed": options.bootstrap.seed,  # not "seed": that column is the run's own (describe())
        }
        rows += add_adjusted([row], options)
    return rows


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
