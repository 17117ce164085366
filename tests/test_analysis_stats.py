"""Every statistic of analysis.stats against values computed by hand or taken from textbooks."""

from __future__ import annotations

import math
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from analysis.stats import (
    CORRECTIONS,
    PAIRED_SCORE_TESTS,
    adjust_p_values,
    mcnemar_from_table,
    mcnemar_test,
    mean_difference,
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


def test_paired_t_test_without_differences_is_p_one():
    assert paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p_value == 1.0


def test_wilcoxon_exact_all_positive_differences():
    # Six positive differences, no ties: W = 0; exact two-sided p = 2 / 2^6.
    result = wilcoxon_test([0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6])
    assert result.statistic == 0
    assert result.p_value == pytest.approx(2 / 64)


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
    assert quadratic_weighted_kappa([1, 2, 3, 4], [1, 2, 4, 4], range(1, 6)) == pytest.approx(11 / 12)


def test_quadratic_kappa_opposite_extremes_is_minus_one():
    # Observed sum w*O = 16 + 16 = 32; expected (0 + 16 + 16 + 0) / 2 = 16 -> 1 - 2.
    assert quadratic_weighted_kappa([1, 5], [5, 1], range(1, 6)) == pytest.approx(-1.0)


def test_quadratic_kappa_counts_distance_over_unused_categories():
    # A = {1, 2, 5}, B = {1, 3, 5}, one (2, 3) disagreement -> sum w*O = 1. Expected over the
    # 1..5 scale: rows i = 1, 2, 5 give 20, 11, 20 -> 51 / 3 = 17, kappa = 16/17. Had the scale been
    # only the observed scores {1, 2, 3, 5} (5 adjacent to 3), it would be 1 - 3/29 instead.
    assert quadratic_weighted_kappa([1, 2, 5], [1, 3, 5], range(1, 6)) == pytest.approx(16 / 17)


def test_quadratic_kappa_total_agreement_on_one_score():
    assert quadratic_weighted_kappa([3, 3, 3], [3, 3, 3], range(1, 6)) == 1.0


# ---------------------------------------------------------------- corrections


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm")
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_benjamini_hochberg_by_hand():
    # p * m / rank = 0.02, 0.02, 0.04, 0.04 for ranks 1..4, then a running min from the top.
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "bh")
    assert adjusted == pytest.approx([0.02, 0.04, 0.04, 0.02])


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
