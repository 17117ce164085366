"""The statistics of the analysis jobs, each a thin, checked wrapper over scipy / statsmodels.

Conventions: two-sided tests; significance level `alpha` (0.05 unless told otherwise); differences
are always ``other - reference``. Two registries make the swappable parts named:
``CORRECTIONS`` (multiple-comparison adjustments) and ``PAIRED_SCORE_TESTS`` (tests on paired
per-example scores, every one of which is run by the impression comparison). docs/statistics.md
says what each statistic is and which choices were made where the paper is silent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps
from scipy.special import ndtr
from statsmodels.stats.inter_rater import cohens_kappa
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
    correction, max(0, |b - c| - 1)^2 / (b + c), one degree of freedom.
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
    """McNemar's test from the four cells of the paired table (see `mcnemar_test`).

    Exact: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). Chi-square: the continuity
    correction is clamped at zero, max(0, |b - c| - 1)^2 / (b + c), so |b - c| <= 1 gives p = 1.
    """
    b, c = int(ref_only), int(other_only)
    if b + c < EXACT_MCNEMAR_BELOW:
        statistic = float(min(b, c))
        p_value = min(1.0, 2 * float(sps.binom.cdf(min(b, c), b + c, 0.5))) if b + c else 1.0
        method = "exact-binomial"
    else:
        statistic = max(0, abs(b - c) - 1) ** 2 / (b + c)
        p_value, method = float(sps.chi2.sf(statistic, 1)), "chi2-continuity"
    return McNemarResult(int(both_correct), b, c, int(both_wrong), statistic, p_value, method)


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
    """One test comparing two score samples: statistic, two-sided p-value, and how it was computed.

    `note` says why a test is degenerate (statistic and p-value NaN) and is empty otherwise.
    """

    test: str
    statistic: float
    p_value: float
    df: float = math.nan
    note: str = ""


# Differences whose standard deviation is below this share of the scores' scale count as constant:
# float rounding leaves about 1e-16 of the scale, real score differences are far above 1e-10.
CONSTANT_RTOL = 1e-10
# Up to this many non-zero differences the Wilcoxon p-value is exact (2^20 sign assignments).
EXACT_WILCOXON_MAX = 20


def paired_t_test(ref: Sequence[float], other: Sequence[float]) -> ScoreTest:
    """Student's paired t-test on other - ref.

    Degenerate (NaN, with a note) below two pairs, or when the differences are constant: a standard
    deviation at most CONSTANT_RTOL times the largest absolute score, where t would be 0/0 or c/0.
    """
    diff = _paired_differences(ref, other)
    if diff.size < 2:
        return ScoreTest("paired-t", math.nan, math.nan, math.nan, f"degenerate: {diff.size} pair(s), need 2")
    scale = max(float(np.max(np.abs(ref))), float(np.max(np.abs(other))))
    if float(np.std(diff, ddof=1)) <= CONSTANT_RTOL * scale:
        return ScoreTest(
            "paired-t",
            math.nan,
            math.nan,
            float(diff.size - 1),
            f"degenerate: every difference is {float(np.mean(diff)):.6g} (no variance, t undefined)",
        )
    result = sps.ttest_rel(other, ref)
    return ScoreTest("paired-t", float(result.statistic), float(result.pvalue), float(result.df))


def wilcoxon_test(ref: Sequence[float], other: Sequence[float]) -> ScoreTest:
    """Wilcoxon signed-rank test on other - ref, zero differences dropped, ties given mid-ranks.

    Up to EXACT_WILCOXON_MAX non-zero differences, with or without ties: the exact conditional null
    distribution of W+ over all 2^n sign assignments of the mid-ranks, and
    p = P(|W+ - n(n+1)/4| >= |w+ - n(n+1)/4|). Above that, the normal approximation with the tie
    correction of the variance and a continuity correction of 1/2. Differences equal up to float
    rounding (CONSTANT_RTOL of the scores' scale) tie, or are zero. `statistic` is min(W+, W-);
    `test` records the method. All-zero differences give p = 1.
    """
    diff = _paired_differences(ref, other)
    if diff.size == 0:
        return ScoreTest("wilcoxon-exact", math.nan, math.nan, note="degenerate: no pairs")
    # Differences are compared on a grid of CONSTANT_RTOL x the scores' scale, so that float
    # rounding neither makes a zero difference non-zero nor splits a tie.
    unit = CONSTANT_RTOL * max(float(np.max(np.abs(ref))), float(np.max(np.abs(other))))
    gridded = np.round(diff / unit) if unit > 0 else np.zeros_like(diff)
    nonzero = gridded[gridded != 0]
    n = nonzero.size
    if n == 0:
        return ScoreTest("wilcoxon-exact", 0.0, 1.0, note="every difference is 0")
    # Mid-ranks are multiples of 1/2: doubled, every sum below is an exact integer.
    doubled = np.rint(2 * sps.rankdata(np.abs(nonzero))).astype(np.int64)
    w_plus2 = int(doubled[nonzero > 0].sum())
    statistic = min(w_plus2, int(doubled.sum()) - w_plus2) / 2
    centre2 = n * (n + 1) // 2  # 2 * E[W+]
    if n <= EXACT_WILCOXON_MAX:
        counts = _signed_rank_counts(tuple(doubled.tolist()))
        extreme = np.abs(np.arange(counts.size) - centre2) >= abs(w_plus2 - centre2)
        return ScoreTest("wilcoxon-exact", statistic, float(counts[extreme].sum() / 2.0**n))
    _, ties = np.unique(np.abs(nonzero), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(ties**3 - ties)) / 48
    z = max(0.0, abs(w_plus2 - centre2) / 2 - 0.5) / math.sqrt(variance)
    return ScoreTest("wilcoxon-normal-cc", statistic, min(1.0, 2 * float(ndtr(-z))))


@lru_cache(maxsize=64)
def _signed_rank_counts(doubled_ranks: tuple[int, ...]) -> np.ndarray:
    """How many of the 2^n sign assignments give each value of 2 W+ (index = value).

    A convolution, one rank at a time: the same distribution as listing all 2^n assignments.
    """
    counts = np.zeros(sum(doubled_ranks) + 1, dtype=np.int64)
    counts[0] = 1
    for rank in doubled_ranks:
        counts[rank:] = counts[rank:] + counts[: counts.size - rank].copy()
    return counts


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


# ---------------------------------------------------------------- bootstrap over test examples

# A statistic for the bootstrap: (resamples x n) example weights -> one value per resample. Weights
# count how often each test example was drawn; a row of ones is the observed test set.
WeightedStatistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BootstrapSpec:
    """How many resamples of the test examples, and the seed that draws them."""

    resamples: int = 2000
    seed: int = 20251206

    def __post_init__(self) -> None:
        if self.resamples < 1000:
            raise ValueError(f"bootstrap resamples must be at least 1000 (percentile intervals), got {self.resamples}")


DEFAULT_BOOTSTRAP = BootstrapSpec()


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic on the observed test set with its percentile bootstrap interval at level 1 - alpha."""

    estimate: float
    ci_low: float
    ci_high: float
    resamples: int  # resamples with a finite value (e.g. macro-F1 over no supported label is NaN)


@dataclass(frozen=True)
class BootstrapDifference:
    """Paired bootstrap of other - ref: the observed values, the interval of the difference, the p-value."""

    value_ref: float
    value_other: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    resamples: int
    test: str = "paired-bootstrap"


def bootstrap_indices(n: int, spec: BootstrapSpec = DEFAULT_BOOTSTRAP) -> np.ndarray:
    """(resamples, n) example indices drawn with replacement by numpy's default_rng(seed).

    Only n and the spec decide the draw, so every run scored on one test set (examples in id
    order) is resampled alike: intervals of different runs, and their differences, are paired.
    """
    return np.random.default_rng(spec.seed).integers(0, n, size=(spec.resamples, n))


@lru_cache(maxsize=8)
def bootstrap_weights(n: int, spec: BootstrapSpec = DEFAULT_BOOTSTRAP) -> np.ndarray:
    """(resamples, n) counts: how often each example is drawn in each resample (read-only)."""
    indices = bootstrap_indices(n, spec)
    offsets = indices + n * np.arange(spec.resamples)[:, None]
    weights = np.bincount(offsets.ravel(), minlength=spec.resamples * n).reshape(spec.resamples, n)
    weights = weights.astype(float)
    weights.flags.writeable = False
    return weights


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float, int]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan, 0
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high), int(finite.size)


def bootstrap_interval(
    statistic: WeightedStatistic, n: int, alpha: float = DEFAULT_ALPHA, spec: BootstrapSpec = DEFAULT_BOOTSTRAP
) -> BootstrapInterval:
    """The statistic on the test set and its percentile interval over the resamples (NaN when n == 0)."""
    if n == 0:
        return BootstrapInterval(math.nan, math.nan, math.nan, 0)
    estimate = float(statistic(np.ones((1, n)))[0])
    low, high, used = _percentiles(np.asarray(statistic(bootstrap_weights(n, spec)), dtype=float), alpha)
    return BootstrapInterval(estimate, low, high, used)


def paired_bootstrap_test(
    ref: WeightedStatistic,
    other: WeightedStatistic,
    n: int,
    alpha: float = DEFAULT_ALPHA,
    spec: BootstrapSpec = DEFAULT_BOOTSTRAP,
) -> BootstrapDifference:
    """Paired bootstrap of the difference other - ref of a corpus statistic (e.g. macro-F1).

    Both runs are scored on the same resamples. Interval: percentiles of the resampled differences.
    p-value: the share of resampled differences at least as far from the observed one as the
    observed one is from 0 (the bootstrap distribution shifted to the null), counted as
    (1 + hits) / (1 + resamples) so that it is never 0.
    """
    if n == 0:
        return BootstrapDifference(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    ones, weights = np.ones((1, n)), bootstrap_weights(n, spec)
    value_ref, value_other = float(ref(ones)[0]), float(other(ones)[0])
    diff = value_other - value_ref
    deltas = np.asarray(other(weights), dtype=float) - np.asarray(ref(weights), dtype=float)
    low, high, used = _percentiles(deltas, alpha)
    if not math.isfinite(diff) or used == 0:
        return BootstrapDifference(value_ref, value_other, diff, low, high, math.nan, used)
    finite = deltas[np.isfinite(deltas)]
    # 1e-9 relative slack: a resample that equals the boundary up to float rounding counts as a hit.
    hits = int(np.sum(np.abs(finite - diff) >= abs(diff) * (1 - 1e-9)))
    return BootstrapDifference(value_ref, value_other, diff, low, high, (1 + hits) / (1 + used), used)


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
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(index), len(index)))
    for a, b in zip(rater_a, rater_b, strict=True):
        if a not in index or b not in index:
            raise ValueError(f"score pair ({a!r}, {b!r}) lies outside the categories {list(categories)}")
        table[index[a], index[b]] += 1
    return float(cohens_kappa(table, wt="quadratic", return_results=False))


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
