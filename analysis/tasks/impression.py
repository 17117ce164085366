"""Task 3, impression generation: BLEU and ROUGE per example and per corpus, paired tests.

Per-example scores are the producer's (``scores`` in predictions). Corpus BLEU is recomputed
with sacrebleu over the parsed impressions (an unparsed output is the empty string), with a
percentile bootstrap interval over the reports; corpus ROUGE-1/2/L are the means of the
per-example F-measures, as rouge-score has no corpus mode.
"""

from __future__ import annotations

from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU

from analysis.runs import AlignedPair
from analysis.stats import DEFAULT_BOOTSTRAP, PAIRED_SCORE_TESTS, BootstrapSpec, WeightedStatistic, mean_difference
from analysis.tasks.base import (
    TASK_ANALYSES,
    CompareOptions,
    Records,
    Rows,
    Tables,
    TaskAnalysis,
    add_adjusted,
    bootstrap_columns,
    parse_fail_rate,
    sorted_records,
)

METRICS: tuple[str, ...] = ("bleu", "rouge1", "rouge2", "rougeL")  # BLEU 0-100, ROUGE 0-1


def score_vectors(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-example scores by metric, in record order; a missing score is an error naming the example."""
    rows = []
    for record in records:
        scores = record.get("scores") or {}
        try:
            rows.append(_METRIC_VALUES(scores))
        except KeyError as missing:
            raise ValueError(
                f"impression example {record.get('id')!r} has no scores.{missing.args[0]}"
            ) from None
    matrix = np.array(rows, dtype=float).reshape(len(records), len(METRICS))
    if np.isnan(matrix).any():
        raise ValueError(f"impression scores hold null values (first example: {records[0].get('id')!r})")
    return {m: matrix[:, j] for j, m in enumerate(METRICS)}


_METRIC_VALUES = itemgetter(*METRICS)


def corpus_bleu(records: list[dict[str, Any]]) -> float:
    """sacrebleu corpus BLEU (0-100) of the parsed impressions against the references."""
    if not records:
        return float("nan")
    return float(bleu_statistic(records)(np.ones((1, len(records))))[0])


def bleu_statistic(records: list[dict[str, Any]]) -> WeightedStatistic:
    """Corpus BLEU as a function of (resamples x n) example weights.

    BLEU is a function of n-gram counts summed over the corpus, so a resample's score comes from
    weighted sums of each report's counts (sacrebleu's own route for its significance tests).
    """
    hypotheses = [r["parsed"] if isinstance(r.get("parsed"), str) else "" for r in records]
    scorer = _bleu_for(tuple(str(r.get("reference", "")) for r in records))
    counts = np.array(scorer._extract_corpus_statistics(hypotheses, None), dtype=float)

    def statistic(weights: np.ndarray) -> np.ndarray:
        return np.array([scorer._compute_score_from_stats(list(row)).score for row in weights @ counts])

    return statistic


@lru_cache(maxsize=8)
def _bleu_for(references: tuple[str, ...]) -> BLEU:
    # Every run of a study shares the test set: tokenizing its references once, not once per run,
    # halves the time corpus BLEU takes over hundreds of runs.
    return BLEU(references=[list(references)])


def summarize(records: Records, alpha: float = 0.05, bootstrap: BootstrapSpec = DEFAULT_BOOTSTRAP) -> Tables:
    """impression_summary (corpus BLEU with a bootstrap interval, mean ROUGE, mean per-example BLEU)
    and per-example scores."""
    ordered = list(records.values())
    vectors = score_vectors(ordered)
    per_example = [
        {
            "example_id": r["id"],
            "parse_status": r.get("parse_status"),
            **dict(zip(METRICS, values, strict=True)),
        }
        for r, values in zip(ordered, zip(*(vectors[m].tolist() for m in METRICS), strict=True), strict=True)
    ]
    by_id = sorted_records(records)
    bleu = {"bleu": bleu_statistic(by_id)} if by_id else {}
    summary = {
        "n": len(ordered),
        "bleu": float("nan"),
        **bootstrap_columns(bleu, len(by_id), alpha, bootstrap),
        **{m: float(vectors[m].mean()) if ordered else float("nan") for m in METRICS[1:]},
        "bleu_example_mean": float(vectors["bleu"].mean()) if ordered else float("nan"),
        "parse_fail_rate": parse_fail_rate(records),
    }
    return {"impression_summary": [summary], "impression_per_example": per_example}


def compare(pair: AlignedPair, options: CompareOptions) -> Tables:
    """Every registered paired test (paired t, Wilcoxon) on each per-example metric.

    Each test's four p-values (one per metric) form the family that the correction adjusts.
    """
    ref, other = score_vectors(pair.ref), score_vectors(pair.other)
    rows: Rows = []
    for test_name in PAIRED_SCORE_TESTS.names():
        family = []
        for metric in METRICS:
            diff = mean_difference(ref[metric], other[metric], options.alpha)
            result = PAIRED_SCORE_TESTS.get(test_name)(ref[metric], other[metric])
            family.append(
                {
                    "metric": metric,
                    "test": test_name,
                    "n": diff.n,
                    "mean_ref": diff.mean_ref,
                    "mean_other": diff.mean_other,
                    "mean_diff": diff.mean_diff,
                    "ci_low": diff.ci_low,
                    "ci_high": diff.ci_high,
                    "ci_level": 1 - options.alpha,
                    "statistic": result.statistic,
                    "df": result.df,
                    "p_value": result.p_value,
                    "method": result.test,
                    "note": result.note,
                }
            )
        rows += add_adjusted(family, options)
    return {"impression_paired_tests": rows}


ANALYSIS = TASK_ANALYSES.add("impression", TaskAnalysis("impression", summarize, compare, ("bleu", "rougeL")))
