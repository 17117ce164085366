"""The statistics of the analysis jobs, each a thin, checked wrapper over statsmodels / scipy / sklearn.

Conventions: two-sided tests; significance level `alpha` (0.05 unless told otherwise); differences
are always ``other - reference``. Two registries make the swappable parts named:
``CORRECTIONS`` (multiple-comparison adjustments) and ``PAIRED_SCORE_TESTS`` (tests on paired
per-example scores, every one of which is run by the impression comparison).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from pipelines.registry import Registry

DEFAULT_ALPHA = 0.05
# Below this many discordant pairs the chi-square approximation is poor: use the exact binomial test.
EXACT_MCNEMAR_BELOW = 25


# ---------------------------------------------------------------- McNemar on paired correctness


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on a paired 2x2 table of correctness (reference rows, other columns).

    both_correct / ref_only (b) / other_only (c) / both_wrong are the four cells; the test uses
    only the discordant cells b and c. `method` records which version was used.
    """

    both_correct: int
    ref_only: int
    other_only: int
    both_wrong: int
    statistic: float
    p_value: float
    method: str  # "exact-binomial" or "chi2-continuity"

    @property
    def discordant(self) -> int:
        return self.ref_only + self.other_only


def mcnemar_test(ref_correct: Sequence[bool], other_correct: Sequence[bool]) -> McNemarResult:
    """McNemar's test on two aligned 0/1 correctness vectors.

    Exact binomial when b + c < 25 (statistic = min(b, c)); otherwise chi-square with continuity
    correction, (|b - c| - 1)^2 / (b + c), one degree of freedom.
    """
    ref = np.asarray(ref_correct, dtype=bool)
    other = np.asarray(other_correct, dtype=bool)
    if ref.shape != other.shape:
        raise ValueError(f"paired vectors differ in length: {ref.size} vs {other.size}")
    a = int(np.sum(ref & other))
    b = int(np.sum(ref & ~other))
    c = int(np.sum(~ref & other))
    d = int(np.sum(~ref & ~other))
    return mcnemar_from_table(a, b, c, d)


def mcnemar_from_table(both_correct: int, ref_only: int, other_only: int, both_wrong: int) -> McNemarResult:
    """McNemar's test from the four cells of the paired table (see `mcnemar_test`)."""
    table = [[both_correct, ref_only], [other_only, both_wrong]]
    exact = ref_only + other_only < EXACT_MCNEMAR_BELOW
    result = mcnemar(table, exact=exact, correction=True)
    return McNemarResult(
        both_correct,
        ref_only,
        other_only,
        both_wrong,
        statistic=float(result.statistic),
        p_value=min(1.0, float(result.pvalue)),
        method="exact-binomial" if exact else "chi2-continuity",
    )


# ---------------------------------------------------------------- proportions


@dataclass(frozen=True)
class Proportion:
    """A proportion with its Wilson score confidence interval at level 1 - alpha."""

    successes: int
    n: int
    value: float
    ci_low: float
    ci_high: float


def wilson_interval(successes: int, n: int, alpha: float = DEFAULT_ALPHA) -> Proportion:
    """Proportion successes / n with the Wilson score interval (NaN everywhere when n == 0)."""
    if n == 0:
        return Proportion(0, 0, math.nan, math.nan, math.nan)
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return Proportion(int(successes), int(n), successes / n, float(low), float(high))


# ---------------------------------------------------------------- paired and unpaired scores


@dataclass(frozen=True)
class ScoreTest:
    """One test comparing two score samples: statistic, two-sided p-value, and how it was computed."""

    test: str
    statistic: float
    p_value: float
    df: float = math.nan


def paired_t_test(ref: Sequence[float], other: Sequence[float]) -> ScoreTest:
    """Student's paired t-test on other - ref. All-zero differences give t = 0, p = 1."""
    diff = _paired_differences(ref, other)
    if diff.size < 2:
        return ScoreTest("paired-t", math.nan, math.nan, math.nan)
    if np.all(diff == 0):
        return ScoreTest("paired-t", 0.0, 1.0, float(diff.size - 1))
    result = sps.ttest_rel(other, ref)
    return ScoreTest("paired-t", float(result.statistic), float(result.pvalue), float(result.df))


def wilcoxon_test(ref: Sequence[float], other: Sequence[float]) -> ScoreTest:
    """Wilcoxon signed-rank test on other - ref, zero differences dropped.

    Exact null distribution when at most 50 non-zero differences without ties; otherwise the normal
    approximation (as R's wilcox.test does; scipy's permutation fallback takes about a second per
    call, too slow for hundreds of runs). `test` records which. All-zero differences give p = 1.
    """
    diff = _paired_differences(ref, other)
    nonzero = diff[diff != 0]
    if diff.size == 0:
        return ScoreTest("wilcoxon", math.nan, math.nan)
    if nonzero.size == 0:
        return ScoreTest("wilcoxon", 0.0, 1.0)
    exact = nonzero.size <= 50 and np.unique(np.abs(nonzero)).size == nonzero.size
    method = "exact" if exact else "asymptotic"
    result = sps.wilcoxon(nonzero, zero_method="wilcox", method=method)
    return ScoreTest(
        f"wilcoxon-{'exact' if exact else 'normal'}", float(result.statistic), float(result.pvalue)
    )


PAIRED_SCORE_TESTS: Registry[Callable[[Sequence[float], Sequence[float]], ScoreTest]] = Registry(
    "paired score test"
)
PAIRED_SCORE_TESTS.add("paired_t", paired_t_test)
PAIRED_SCORE_TESTS.add("wilcoxon", wilcoxon_test)


@dataclass(frozen=True)
class MeanDifference:
    """Mean of other - ref over paired examples with a t-based confidence interval at level 1 - alpha."""

    n: int
    mean_ref: float
    mean_other: float
    mean_diff: float
    ci_low: float
    ci_high: float


def mean_difference(
    ref: Sequence[float], other: Sequence[float], alpha: float = DEFAULT_ALPHA
) -> MeanDifference:
    """Mean paired difference other - ref with its (1 - alpha) confidence interval (t distribution)."""
    diff = _paired_differences(ref, other)
    n = int(diff.size)
    if n == 0:
        return MeanDifference(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(diff.mean())
    if n < 2:
        low = high = math.nan
    else:
        half = sps.t.ppf(1 - alpha / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n)
        low, high = mean - half, mean + half
    return MeanDifference(n, float(np.mean(ref)), float(np.mean(other)), mean, float(low), float(high))


def unpaired_t_test(a: Sequence[float], b: Sequence[float], equal_var: bool = True) -> ScoreTest:
    """Independent two-sample two-tailed t-test of b against a (Student's; Welch's when equal_var=False)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return ScoreTest("unpaired-t", math.nan, math.nan)
    if np.ptp(np.concatenate([x, y])) == 0:
        return ScoreTest("unpaired-t", 0.0, 1.0, float(x.size + y.size - 2))
    result = sps.ttest_ind(y, x, equal_var=equal_var)
    name = "unpaired-t" if equal_var else "welch-t"
    return ScoreTest(name, float(result.statistic), float(result.pvalue), float(result.df))


def _paired_differences(ref: Sequence[float], other: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(ref, dtype=float), np.asarray(other, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    return y - x


# ---------------------------------------------------------------- agreement


def quadratic_weighted_kappa(
    rater_a: Sequence[int], rater_b: Sequence[int], categories: Sequence[int]
) -> float:
    """Cohen's kappa with quadratic weights over the ordered `categories` (e.g. Likert 1..5).

    The categories are passed explicitly so that an unused score still counts in the distance
    (scores 2 and 4 are two steps apart even when nobody gave a 3).
    """
    if len(rater_a) != len(rater_b):
        raise ValueError(f"raters scored different numbers of items: {len(rater_a)} vs {len(rater_b)}")
    if len(set(rater_a) | set(rater_b)) < 2:
        return 1.0  # perfect agreement on a single category: kappa is 0/0, agreement is total
    return float(cohen_kappa_score(rater_a, rater_b, labels=list(categories), weights="quadratic"))


# ---------------------------------------------------------------- multiple comparisons


# Holm and Benjamini-Hochberg are written out here rather than called from statsmodels'
# multipletests, which runs gc.collect() on every call (about 0.1 s in a process holding pandas and
# mlflow: minutes over hundreds of runs); the tests check both against multipletests.


def _no_correction(p_values: np.ndarray, alpha: float) -> np.ndarray:
    return p_values


def holm(p_values: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Holm step-down: the i-th smallest p (1-based) times m - i + 1, made non-decreasing, capped at 1."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    scaled = np.maximum.accumulate((m - np.arange(m)) * p_values[order])
    out = np.empty(m)
    out[order] = np.minimum(scaled, 1.0)
    return out


def benjamini_hochberg(p_values: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Benjamini-Hochberg step-up: the i-th smallest p times m / i, made non-decreasing from the top."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    scaled = np.minimum.accumulate((m / np.arange(m, 0, -1)) * p_values[order][::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(scaled, 1.0)
    return out


CORRECTIONS: Registry[Callable[[np.ndarray, float], np.ndarray]] = Registry("p-value correction")
CORRECTIONS.add("none", _no_correction)
CORRECTIONS.add("holm", holm)
CORRECTIONS.add("bh", benjamini_hochberg)


def adjust_p_values(
    p_values: Sequence[float], method: str = "none", alpha: float = DEFAULT_ALPHA
) -> list[float]:
    """Adjust a family of p-values with a registered correction; NaN entries stay NaN and do not count."""
    adjust = CORRECTIONS.get(method)
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = ~np.isnan(p)
    if finite.any():
        out[finite] = np.minimum(adjust(p[finite], alpha), 1.0)
    return out.tolist()
