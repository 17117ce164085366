"""The analysis of a task that registers none of its own: built from the task's declared metrics.

Each metric declared with an `example_score` is the mean of that per-example score, so a run's
summary holds its mean with a percentile bootstrap interval, and a comparison holds the paired
bootstrap test of the difference of means (and McNemar where the score is 0/1, e.g. correct).
Metrics that are not means (macro F1) need a task analysis of their own (analysis/tasks/labeling.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.runs import AlignedPair
from analysis.stats import DEFAULT_BOOTSTRAP, BootstrapSpec, WeightedStatistic
from analysis.tasks.base import (
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
from pipelines.tasks.base import Metric, Task


def mean_metrics(task: Task) -> tuple[Metric, ...]:
    """The task's metrics that are means of a per-example score."""
    return tuple(m for m in task.metrics if m.example_score)


def score_vector(task: Task, metric: Metric, records: list[dict[str, Any]]) -> np.ndarray:
    """Each record's `scores[metric.example_score]`, in record order; a missing one names the example."""
    values = []
    for record in records:
        try:
            values.append(float((record.get("scores") or {})[metric.example_score]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{task.name} example {record.get('id')!r} has no numeric "
                             f"scores.{metric.example_score}") from None
    return np.array(values, dtype=float)


def _mean(vector: np.ndarray) -> WeightedStatistic:
    return lambda weights: weights @ vector / max(len(vector), 1)


def generic_analysis(task: Task) -> TaskAnalysis:
    """A TaskAnalysis for `task` from its declared metrics (see the module docstring)."""
    metrics = mean_metrics(task)

    def summarize(records: Records, alpha: float = 0.05, bootstrap: BootstrapSpec = DEFAULT_BOOTSTRAP) -> Tables:
        ordered = sorted_records(records)
        statistics = {m.name: _mean(score_vector(task, m, ordered)) for m in metrics}
        summary = {"n": len(ordered), **bootstrap_columns(statistics, len(ordered), alpha, bootstrap),
                   "parse_fail_rate": parse_fail_rate(records)}
        return {f"{task.name}_summary": [summary]}

    def compare(pair: AlignedPair, options: CompareOptions) -> Tables:
        tests: Rows = []
        mcnemar: Rows = []
        for m in metrics:
            ref, other = score_vector(task, m, pair.ref), score_vector(task, m, pair.other)
            tests += bootstrap_test_rows({m.name: (_mean(ref), _mean(other))}, len(pair.ids), options)
            if np.isin(ref, (0.0, 1.0)).all() and np.isin(other, (0.0, 1.0)).all():
                mcnemar += add_adjusted([{"metric": m.name, **mcnemar_row(ref.astype(bool), other.astype(bool))}],
                                        options)
        tables = {f"{task.name}_tests": tests}
        if mcnemar:
            tables[f"{task.name}_mcnemar"] = mcnemar
        return tables

    headline = tuple(m.name for m in metrics if m.headline) or tuple(m.name for m in metrics)
    return TaskAnalysis(task.name, summarize, compare, headline)
