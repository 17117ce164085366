"""Every statistic of analysis.stats against values computed by hand or taken from textbooks."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from analysis.stats import (
    CORRECTIONS,
    PAIRED_SCORE_TESTS,
    BootstrapSpec,
    adjust_p_values,
    bootstrap_interval,
    bootstrap_weights,
    mcnemar_from_table,
    mcnemar_test,
    mean_difference,
    paired_bootstrap_test,
    paired_t_test,
    quadratic_weighted_kappa,
    unpaired_t_test,
    wilcoxon_test,
    wilson_interval,
)
from pipelines.registry import UnknownNameError

# Student's sleep data (R `sleep`): extra hours of sleep under drug 1 and drug 2, same ten patients.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
Z_975 = 1.959963984540054  # standard normal 97.5% quantile


# ---------------------------------------------------------------- McNemar


def test_mcnemar_exact_b10_c2():
    # Exact: two-sided binomial, p = 2 * P(X <= 2 | n = 12, 1/2) = 2 * (1 + 12 + 66) / 2^12.
    result = mcnemar_from_table(50, 10, 2, 8)
    assert result.method == "exact-binomial"
    assert result.statistic == 2
    assert result.p_value == pytest.approx(158 / 4096, abs=1e-12)
    assert result.discordant == 12


def test_mcnemar_chi_square_with_continuity_correction():
    # b = 30, c = 15: chi2 = (|30 - 15| - 1)^2 / 45 = 196 / 45; with 1 df, p = erfc(sqrt(chi2 / 2)).
    result = mcnemar_from_table(100, 30, 15, 5)
    assert result.method == "chi2-continuity"
    assert result.statistic == pytest.approx(196 / 45)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(196 / 45 / 2)), rel=1e-9)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs():
    assert mcnemar_from_table(0, 12, 12, 0).method == "exact-binomial"
    assert mcnemar_from_table(0, 13, 12, 0).method == "chi2-continuity"


@pytest.mark.parametrize(("b", "c"), [(13, 13), (13, 12), (12, 13), (40, 41)])
def test_mcnemar_chi_square_clamps_the_continuity_correction(b, c):
    # |b - c| <= 1: the corrected statistic max(0, |b - c| - 1)^2 / (b + c) is 0 and p is 1.
    # (Unclamped, b = c = 13 gave (0 - 1)^2 / 26 and p = 0.845, below b = 13, c = 12's 1.0.)
    result = mcnemar_from_table(5, b, c, 5)
    assert result.method == "chi2-continuity"
    assert (result.statistic, result.p_value) == (0.0, 1.0)


@pytest.mark.parametrize(("b", "c"), [(0, 1), (3, 9), (7, 7), (0, 24), (11, 2)])
def test_mcnemar_exact_by_enumeration_to_1e12(b, c):
    m = b + c
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2**m
    result = mcnemar_from_table(1, b, c, 1)
    assert result.method == "exact-binomial"
    assert result.p_value == pytest.approx(min(1.0, 2 * tail), abs=1e-12)


@pytest.mark.parametrize(("b", "c"), [(30, 15), (3, 40), (25, 60)])
def test_mcnemar_chi_square_by_hand_to_1e9(b, c):
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    result = mcnemar_from_table(0, b, c, 0)
    assert result.statistic == pytest.approx(chi2, abs=1e-12)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), abs=1e-9)


def test_mcnemar_without_discordant_pairs_is_p_one():
    result = mcnemar_from_table(7, 0, 0, 3)
    assert result.p_value == 1.0


def test_mcnemar_from_vectors_builds_the_paired_table():
    ref = [1, 1, 1, 0, 0, 1]
    other = [1, 0, 0, 1, 0, 1]
    result = mcnemar_test(ref, other)
    assert (result.both_correct, result.ref_only, result.other_only, result.both_wrong) == (2, 2, 1, 1)
    # exact: 2 * P(X <= 1 | n = 3) = 2 * 4 / 8 = 1.0
    assert result.p_value == pytest.approx(1.0)


def test_mcnemar_refuses_unpaired_vectors():
    with pytest.raises(ValueError, match="length"):
        mcnemar_test([1, 0], [1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mcnemar_is_symmetric_and_a_probability(pairs):
    ref, other = zip(*pairs, strict=True)
    forward, backward = mcnemar_test(ref, other), mcnemar_test(other, ref)
    assert forward.p_value == pytest.approx(backward.p_value)
    assert 0.0 <= forward.p_value <= 1.0


# ---------------------------------------------------------------- Wilson interval


def test_wilson_interval_matches_the_closed_form():
    n, k = 30, 27
    p = k / n
    centre = (p + Z_975**2 / (2 * n)) / (1 + Z_975**2 / n)
    half = Z_975 / (1 + Z_975**2 / n) * math.sqrt(p * (1 - p) / n + Z_975**2 / (4 * n * n))
    interval = wilson_interval(k, n)
    assert interval.value == pytest.approx(0.9)
    assert interval.ci_low == pytest.approx(centre - half, rel=1e-9)
    assert interval.ci_high == pytest.approx(centre + half, rel=1e-9)


def test_wilson_interval_of_nothing_is_nan():
    assert math.isnan(wilson_interval(0, 0).value)


# ---------------------------------------------------------------- paired and unpaired tests


def test_paired_t_test_on_the_sleep_data():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = 4.0621 (sign: 2 - 1), df = 9,
    # p = 0.002833, 95% CI 0.7001142 .. 2.4598858, mean difference 1.58.
    result = paired_t_test(SLEEP_1, SLEEP_2)
    assert result.statistic == pytest.approx(4.0621, abs=1e-4)
    assert result.df == 9
    assert result.p_value == pytest.approx(0.002833, abs=1e-6)
    diff = mean_difference(SLEEP_1, SLEEP_2)
    assert diff.mean_diff == pytest.approx(1.58)
    assert (diff.ci_low, diff.ci_high) == (
        pytest.approx(0.7001142, abs=1e-6),
        pytest.approx(2.4598858, abs=1e-6),
    )


def test_paired_t_statistic_by_hand_to_1e9():
    # t = mean(d) / (sd(d) / sqrt(n)) written out; p from the t distribution's survival function.
    diffs = [b - a for a, b in zip(SLEEP_1, SLEEP_2, strict=True)]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    result = paired_t_test(SLEEP_1, SLEEP_2)
    assert result.statistic == pytest.approx(t, abs=1e-9)
    assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(t, n - 1), abs=1e-9)
    assert result.note == ""


ROUNDED = [0.1, 0.2, 0.3, 0.7, 0.9]


@pytest.mark.parametrize(
    ("ref", "other", "reason"),
    [
        ([0.0] * 5, [1.0] * 5, "every difference is 1"),  # t = 1/0: used to give t = inf, p = 0
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "every difference is 0"),  # t = 0/0
        # equal up to float rounding (0.1 + 0.2 != 0.3): used to give p = 3e-47
        (ROUNDED, [x + 0.1 for x in ROUNDED], "every difference is 0.1"),
        ([1000.0, 2000.0, 3000.0], [1000.5, 2000.5, 3000.5], "every difference is 0.5"),  # tolerance scales
        ([1.0], [2.0], "1 pair(s), need 2"),
    ],
)
def test_paired_t_on_constant_differences_is_degenerate_not_p_zero(ref, other, reason):
    result = paired_t_test(ref, other)
    assert math.isnan(result.statistic) and math.isnan(result.p_value)
    assert result.note.startswith("degenerate") and reason in result.note


def test_paired_t_tolerance_is_relative_to_the_scores_scale():
    # The same 1e-9 spread is noise on scores near 1e4 (relative 1e-13) but signal near 1e-6.
    big = paired_t_test([1e4, 2e4, 3e4], [1e4 + 1, 2e4 + 1 + 1e-9, 3e4 + 1 - 1e-9])
    assert math.isnan(big.p_value)
    small = paired_t_test([1e-6, 2e-6, 3e-6], [2e-6, 3e-6 + 1e-9, 4e-6 - 1e-9])
    assert small.note == "" and 0 < small.p_value < 1e-3


def enumerated_wilcoxon(diffs: list[float]) -> tuple[float, float]:
    """(min(W+, W-), two-sided p) by listing every sign assignment of the mid-ranks, in fractions."""
    nonzero = [d for d in diffs if d != 0]
    magnitudes = sorted(abs(d) for d in nonzero)
    # mid-rank of a value: the mean of the 1-based positions it occupies in the sorted magnitudes
    midrank = {
        m: Fraction(sum(i + 1 for i, x in enumerate(magnitudes) if x == m), magnitudes.count(m)) for m in magnitudes
    }
    ranks = [midrank[abs(d)] for d in nonzero]
    w_plus = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    centre = Fraction(len(ranks) * (len(ranks) + 1), 4)
    hits = sum(
        abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - centre) >= abs(w_plus - centre)
        for signs in itertools.product([False, True], repeat=len(ranks))
    )
    return float(min(w_plus, sum(ranks) - w_plus)), hits / 2 ** len(ranks)


def test_wilcoxon_five_equal_differences_is_exact_not_normal():
    # Mid-rank 3 each, W+ = 15: only all-plus and all-minus are as extreme, p = 2 / 2^5.
    result = wilcoxon_test([0.0] * 5, [1.0] * 5)
    assert result.test == "wilcoxon-exact"
    assert result.p_value == pytest.approx(0.0625, abs=1e-12)


@pytest.mark.parametrize(
    "diffs",
    [
        [1, 2, 3, 4, 5, 6],  # no ties, all positive: p = 2 / 64
        [1.2, -0.4, 2.5, 0.3, -1.7, 3.1, 0.9, -2.2, 1.4],  # no ties, mixed signs
        [1, 1, 2, 2, 2, 3, -1, 4, -2, 0, 5],  # ties across signs and a zero (dropped)
        [0.5, 0.5, -0.5, 1.5, 1.5, -1.5, 2.5, 2.5, 2.5, -3.5, 4.0, 4.0],
        [1.0] * 3 + [-2.0] * 4 + [3.0] * 5 + [0.25, -0.25, 7.0, 8.0],  # 16 differences
    ],
)
def test_wilcoxon_exact_matches_enumeration_to_1e9(diffs):
    statistic, p_value = enumerated_wilcoxon(diffs)
    result = wilcoxon_test([0.0] * len(diffs), diffs)
    assert result.test == "wilcoxon-exact"
    assert result.statistic == pytest.approx(statistic, abs=1e-9)
    assert result.p_value == pytest.approx(p_value, abs=1e-9)


def test_wilcoxon_ties_and_zeros_up_to_float_rounding():
    # 0.3 - 0.2 = 0.09999999999999998 and 0.7 - 0.6 = 0.09999999999999998 tie with 0.1 - 0.0 = 0.1 and
    # 0.2 - 0.1 = 0.1, and 0.3 - (0.1 + 0.2) = -5.6e-17 is a zero difference, as on paper.
    ref = [0.2, 0.0, 0.6, 0.2, 0.3, 0.1 + 0.2]
    other = [0.3, 0.1, 0.7, 0.1, 0.5, 0.3]
    statistic, p_value = enumerated_wilcoxon([0.1, 0.1, 0.1, -0.1, 0.2, 0.0])
    result = wilcoxon_test(ref, other)
    assert result.statistic == pytest.approx(statistic, abs=1e-9)
    assert result.p_value == pytest.approx(p_value, abs=1e-9)


def test_wilcoxon_exact_on_the_sleep_differences():
    # Differences 1.2 2.4 1.3 1.3 0 1.0 1.8 0.8 4.6 1.4: a zero (dropped) and a tie, all 9 positive,
    # so only the all-plus and all-minus assignments are as extreme: p = 2 / 2^9. (R's wilcox.test
    # falls back to the normal approximation here and reports p = 0.009091.)
    result = wilcoxon_test(SLEEP_1, SLEEP_2)
    assert result.test == "wilcoxon-exact"
    assert result.p_value == pytest.approx(2 / 512, abs=1e-12)


def test_wilcoxon_exact_without_ties_matches_scipy():
    diffs = [0.31, -1.2, 2.05, 0.77, 1.5, -0.12, 2.9, 0.44, 1.1, -0.6, 3.3, 0.05]
    expected = scipy_stats.wilcoxon(diffs, method="exact")
    result = wilcoxon_test([0.0] * len(diffs), diffs)
    assert result.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, abs=1e-12)


def normal_wilcoxon_by_hand(diffs: list[float]) -> float:
    """Two-sided p of the normal approximation with tie and continuity corrections (clamped)."""
    nonzero = [d for d in diffs if d != 0]
    n = len(nonzero)
    magnitudes = sorted(abs(d) for d in nonzero)
    midrank = {m: (magnitudes.index(m) + 1 + magnitudes.index(m) + magnitudes.count(m)) / 2 for m in magnitudes}
    w_plus = sum(midrank[abs(d)] for d in nonzero if d > 0)
    ties = sum(c**3 - c for c in (magnitudes.count(m) for m in set(magnitudes)))
    sigma = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - ties / 48)
    z = max(0.0, abs(w_plus - n * (n + 1) / 4) - 0.5) / sigma
    return min(1.0, math.erfc(z / math.sqrt(2)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_wilcoxon_normal_above_20_differences_matches_the_formula_and_scipy(seed):
    rng = random.Random(seed)
    diffs = [round(rng.gauss(0.3, 1.0), 1) for _ in range(40)]  # rounded: ties and zeros
    result = wilcoxon_test([0.0] * len(diffs), diffs)
    assert result.test == "wilcoxon-normal-cc"
    assert result.p_value == pytest.approx(normal_wilcoxon_by_hand(diffs), abs=1e-9)
    nonzero = [d for d in diffs if d != 0]
    scipy_p = scipy_stats.wilcoxon(nonzero, method="asymptotic", correction=True).pvalue
    assert result.p_value == pytest.approx(scipy_p, abs=1e-9)  # scipy agrees away from the clamp


def test_wilcoxon_without_differences_is_p_one():
    assert wilcoxon_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0


def test_unpaired_t_test_on_the_sleep_data():
    # R: t.test(extra ~ group, data = sleep, var.equal = TRUE) -> |t| = 1.8608, df = 18, p = 0.07919;
    # Welch: df = 17.776, p = 0.07939.
    student = unpaired_t_test(SLEEP_1, SLEEP_2)
    assert student.statistic == pytest.approx(1.8608, abs=1e-4)
    assert student.df == 18
    assert student.p_value == pytest.approx(0.07919, abs=1e-5)
    welch = unpaired_t_test(SLEEP_1, SLEEP_2, equal_var=False)
    assert welch.df == pytest.approx(17.776, abs=1e-3)
    assert welch.p_value == pytest.approx(0.07939, abs=1e-5)


def test_paired_score_test_registry_lists_both_tests():
    assert PAIRED_SCORE_TESTS.names() == ["paired_t", "wilcoxon"]


# ---------------------------------------------------------------- weighted kappa


def test_quadratic_kappa_by_hand():
    # Weights (i - j)^2. Observed: one (3, 4) disagreement -> sum w*O = 1.
    # Expected: sum_ij a_i b_j (i - j)^2 / n with a = one each of 1..4, b = {1, 2, 4, 4}:
    # rows i=1..4 give 19, 9, 7, 13 -> 48 / 4 = 12. kappa = 1 - 1/12.
    assert quadratic_weighted_kappa([1, 2, 3, 4], [1, 2, 4, 4], range(1, 6)) == pytest.approx(11 / 12, abs=1e-12)


def test_quadratic_kappa_opposite_extremes_is_minus_one():
    # Observed sum w*O = 16 + 16 = 32; expected (0 + 16 + 16 + 0) / 2 = 16 -> 1 - 2.
    assert quadratic_weighted_kappa([1, 5], [5, 1], range(1, 6)) == pytest.approx(-1.0, abs=1e-12)


def test_quadratic_kappa_counts_distance_over_unused_categories():
    # A = {1, 2, 5}, B = {1, 3, 5}, one (2, 3) disagreement -> sum w*O = 1. Expected over the
    # 1..5 scale: rows i = 1, 2, 5 give 20, 11, 20 -> 51 / 3 = 17, kappa = 16/17. Had the scale been
    # only the observed scores {1, 2, 3, 5} (5 adjacent to 3), it would be 1 - 3/29 instead.
    assert quadratic_weighted_kappa([1, 2, 5], [1, 3, 5], range(1, 6)) == pytest.approx(16 / 17, abs=1e-12)


def test_quadratic_kappa_refuses_a_score_outside_the_scale():
    with pytest.raises(ValueError, match=r"\(3, 7\) lies outside"):
        quadratic_weighted_kappa([1, 3], [1, 7], range(1, 6))


def test_quadratic_kappa_total_agreement_on_one_score():
    assert quadratic_weighted_kappa([3, 3, 3], [3, 3, 3], range(1, 6)) == 1.0


# ---------------------------------------------------------------- corrections


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm")
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-12)


def test_benjamini_hochberg_by_hand():
    # p * m / rank = 0.02, 0.02, 0.04, 0.04 for ranks 1..4, then a running min from the top.
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "bh")
    assert adjusted == pytest.approx([0.02, 0.04, 0.04, 0.02], abs=1e-12)


def test_corrections_skip_nan_and_cap_at_one():
    adjusted = adjust_p_values([0.5, math.nan, 0.9], "holm")
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)
    assert math.isnan(adjusted[1])
    assert adjust_p_values([0.2, 0.3], "none") == [0.2, 0.3]


def test_unknown_correction_lists_the_valid_names():
    with pytest.raises(UnknownNameError, match="bh, holm, none"):
        adjust_p_values([0.1], "bonferroni-ish")
    assert CORRECTIONS.names() == ["none", "holm", "bh"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=20), st.sampled_from(["holm", "bh"])
)
def test_adjusted_p_values_never_fall_below_the_raw_ones(p_values, method):
    for raw, adjusted in zip(p_values, adjust_p_values(p_values, method), strict=True):
        assert raw - 1e-12 <= adjusted <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=20), st.sampled_from(["holm", "bh"])
)
def test_corrections_agree_with_statsmodels(p_values, method):
    with patch("gc.collect"):  # multipletests collects garbage on every call: slow, and irrelevant here
        expected = multipletests(p_values, method={"holm": "holm", "bh": "fdr_bh"}[method])[1]
    assert adjust_p_values(p_values, method) == pytest.approx(list(expected), abs=1e-12)


# ---------------------------------------------------------------- bootstrap


def slow_percentile_bootstrap(values, statistic, alpha, spec):
    """Reference loop: the same seeded index draw, one resample at a time, plain Python statistic."""
    indices = np.random.default_rng(spec.seed).integers(0, len(values), size=(spec.resamples, len(values)))
    replicates = [statistic([values[i] for i in row]) for row in indices]
    return np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)]), replicates


def test_bootstrap_interval_matches_a_slow_loop_with_the_same_seed():
    values = [0.3, 1.2, -0.4, 2.2, 0.9, 1.7, -1.1, 0.05, 3.0, 0.6, 1.1]
    spec = BootstrapSpec(1000, 7)
    interval = bootstrap_interval(lambda w: w @ np.array(values) / len(values), len(values), 0.1, spec)
    (low, high), _ = slow_percentile_bootstrap(values, lambda xs: sum(xs) / len(xs), 0.1, spec)
    assert interval.estimate == pytest.approx(sum(values) / len(values), abs=1e-12)
    assert (interval.ci_low, interval.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert interval.resamples == 1000


def test_paired_bootstrap_test_matches_a_slow_loop_with_the_same_seed():
    # A ratio statistic (not additive), as macro-F1 and corpus BLEU are.
    ref = [(1, 2), (0, 1), (2, 2), (1, 3), (0, 2), (1, 1), (2, 4), (1, 2)]
    other = [(2, 2), (1, 1), (2, 2), (2, 3), (1, 2), (1, 1), (3, 4), (1, 2)]

    def ratio(pairs):
        return sum(a for a, _ in pairs) / sum(b for _, b in pairs)

    def weighted(pairs):
        a, b = np.array(pairs, dtype=float).T
        return lambda w: (w @ a) / (w @ b)

    spec = BootstrapSpec(1500, 3)
    result = paired_bootstrap_test(weighted(ref), weighted(other), len(ref), 0.05, spec)
    indices = np.random.default_rng(spec.seed).integers(0, len(ref), size=(spec.resamples, len(ref)))
    deltas = [ratio([other[i] for i in row]) - ratio([ref[i] for i in row]) for row in indices]
    observed = ratio(other) - ratio(ref)
    hits = sum(abs(d - observed) >= abs(observed) * (1 - 1e-9) for d in deltas)
    assert result.diff == pytest.approx(observed, abs=1e-12)
    assert (result.value_ref, result.value_other) == (pytest.approx(ratio(ref)), pytest.approx(ratio(other)))
    assert result.ci_low == pytest.approx(np.percentile(deltas, 2.5), abs=1e-9)
    assert result.ci_high == pytest.approx(np.percentile(deltas, 97.5), abs=1e-9)
    assert result.p_value == pytest.approx((1 + hits) / (1 + spec.resamples), abs=1e-12)
    assert 0 < result.p_value < 1


def test_paired_bootstrap_of_identical_runs_is_p_one():
    stat = lambda w: w @ np.arange(6.0)  # noqa: E731
    result = paired_bootstrap_test(stat, stat, 6)
    assert (result.diff, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_resamples_are_paired_across_runs_and_reproducible():
    spec = BootstrapSpec(1000, 11)
    first = bootstrap_weights(9, spec)
    assert first is bootstrap_weights(9, spec)  # one draw per (n, spec), shared by every run
    assert (first.sum(axis=1) == 9).all() and not first.flags.writeable
    assert not np.array_equal(first, bootstrap_weights(9, BootstrapSpec(1000, 12)))


def test_bootstrap_needs_at_least_1000_resamples():
    with pytest.raises(ValueError, match="at least 1000"):
        BootstrapSpec(999)
