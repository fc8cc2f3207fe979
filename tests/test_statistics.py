"""The statistics of samples and comparisons (docs/statistics.md), in process, against values
computed by hand. Each expected number is written out with its arithmetic; the exact ones were
also checked with fractions.Fraction and math.comb, and the Wilson and McNemar ones against
scipy.stats (binomtest(...).proportion_ci(method="wilson"), binomtest(...).pvalue)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

import run_batch as rb

Z95 = 1.959963984540054  # the 97.5 % point of the standard normal: statistics.NormalDist().inv_cdf(0.975)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """1 - C(n-c, k)/C(n, k) in exact arithmetic (math.comb(a, k) is 0 when k > a)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def exact_pass_hat_k(n: int, c: int, k: int) -> Fraction:
    """C(c, k)/C(n, k) in exact arithmetic."""
    return Fraction(math.comb(c, k), math.comb(n, k))


def exact_mcnemar(b: int, c: int) -> Fraction:
    """min(1, 2 * P(X <= min(b, c))) for X ~ Bin(b + c, 1/2), in exact arithmetic."""
    n = b + c
    if n == 0:
        return Fraction(1)
    tail = Fraction(sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2**n)
    return min(Fraction(1), 2 * tail)


# --- pass@k ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, Fraction(7, 10)),  # 1 - C(3,2)/C(5,2) = 1 - 3/10 = 7/10
        (10, 3, 1, Fraction(3, 10)),  # 1 - C(7,1)/C(10,1) = 1 - 7/10 = 3/10
        (10, 3, 5, Fraction(11, 12)),  # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 1 - 1/12 = 11/12
        (4, 1, 2, Fraction(1, 2)),  # 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2
        (3, 1, 2, Fraction(2, 3)),  # 1 - C(2,2)/C(3,2) = 1 - 1/3 = 2/3
    ],
)
def test_pass_at_k_middle_values(n: int, c: int, k: int, expected: Fraction) -> None:
    assert expected == exact_pass_at_k(n, c, k)
    assert rb.pass_at_k(n, c, k) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "expected"),
    [
        (5, 2, 1.0),  # 1 - C(3,5)/C(5,5) = 1 - 0/1 = 1: with 5 draws out of 5 the 2 passes are always drawn
        (5, 0, 0.0),  # 1 - C(5,5)/C(5,5) = 1 - 1 = 0
        (5, 5, 1.0),  # 1 - C(0,5)/C(5,5) = 1 - 0 = 1
        (1, 1, 1.0),  # 1 - C(0,1)/C(1,1) = 1
        (1, 0, 0.0),  # 1 - C(1,1)/C(1,1) = 0
        (3, 1, 1.0),  # 1 - C(2,3)/C(3,3) = 1 - 0 = 1
    ],
)
def test_pass_at_k_with_k_equal_to_n_is_whether_any_sample_passed(n: int, c: int, expected: float) -> None:
    assert rb.pass_at_k(n, c, n) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (5, 1), (5, 3), (5, 5), (10, 4)])
def test_pass_at_k_without_a_pass_is_zero_and_with_only_passes_is_one(n: int, k: int) -> None:
    # c = 0: 1 - C(n,k)/C(n,k) = 0.   c = n: 1 - C(0,k)/C(n,k) = 1 - 0 = 1 (k >= 1).
    assert rb.pass_at_k(n, 0, k) == pytest.approx(0.0, abs=1e-12)
    assert rb.pass_at_k(n, n, k) == pytest.approx(1.0, abs=1e-12)


def test_pass_at_1_is_the_share_of_samples_that_passed() -> None:
    # 1 - C(n-c,1)/C(n,1) = 1 - (n-c)/n = c/n
    for n in range(1, 9):
        for c in range(n + 1):
            assert rb.pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12), (n, c)


def test_pass_at_k_matches_the_exact_fraction_for_every_small_case() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            previous = -1.0
            for k in range(1, n + 1):
                got = rb.pass_at_k(n, c, k)
                assert got == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)
                assert got >= previous - 1e-12, (n, c, k)  # more draws never lower the chance of a pass
                previous = got


def test_pass_at_k_is_stable_for_many_samples() -> None:
    # n=200, c=13, k=100: 1 - C(187,100)/C(200,100) = 8670143107/8670841134 = 0.99991949719880...
    expected = Fraction(8670143107, 8670841134)
    assert exact_pass_at_k(200, 13, 100) == expected
    assert rb.pass_at_k(200, 13, 100) == pytest.approx(float(expected), abs=1e-12)
    # n=2000, c=1, k=1000: C(1999,1000)/C(2000,1000) = (2000-1000)/2000 = 1/2, so 1 - 1/2 = 0.5.
    # C(2000,1000) is about 2e600: past what a float holds, so it must not be turned into one.
    assert rb.pass_at_k(2000, 1, 1000) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [
        (5, 2, 6),  # k > n
        (1, 0, 2),  # k > n
        (5, 2, 0),  # k < 1
        (5, 2, -1),  # k < 1
        (5, 6, 2),  # c > n
    ],
)
def test_pass_at_k_rejects_impossible_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        rb.pass_at_k(n, c, k)


# --- pass^k ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, Fraction(1, 10)),  # C(2,2)/C(5,2) = 1/10
        (5, 3, 2, Fraction(3, 10)),  # C(3,2)/C(5,2) = 3/10
        (10, 7, 3, Fraction(7, 24)),  # C(7,3)/C(10,3) = 35/120 = 7/24
        (3, 2, 2, Fraction(1, 3)),  # C(2,2)/C(3,2) = 1/3
        (4, 3, 2, Fraction(1, 2)),  # C(3,2)/C(4,2) = 3/6 = 1/2
    ],
)
def test_pass_hat_k_middle_values(n: int, c: int, k: int, expected: Fraction) -> None:
    assert expected == exact_pass_hat_k(n, c, k)
    assert rb.pass_hat_k(n, c, k) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "expected"),
    [
        (5, 5, 1.0),  # C(5,5)/C(5,5) = 1: every sample passed
        (5, 4, 0.0),  # C(4,5)/C(5,5) = 0/1 = 0: one failure, so not all of 5 draws out of 5 pass
        (5, 0, 0.0),  # C(0,5)/C(5,5) = 0
        (1, 1, 1.0),  # C(1,1)/C(1,1) = 1
    ],
)
def test_pass_hat_k_with_k_equal_to_n_is_whether_every_sample_passed(n: int, c: int, expected: float) -> None:
    assert rb.pass_hat_k(n, c, n) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [
        (5, 1, 2),  # C(1,2) = 0
        (10, 2, 3),  # C(2,3) = 0
        (5, 0, 1),  # C(0,1) = 0
        (3, 0, 3),  # C(0,3) = 0
    ],
)
def test_pass_hat_k_with_fewer_passes_than_k_is_zero(n: int, c: int, k: int) -> None:
    assert rb.pass_hat_k(n, c, k) == pytest.approx(0.0, abs=1e-12)


def test_pass_hat_k_with_only_passes_is_one_and_at_1_is_the_pass_share() -> None:
    for n in range(1, 9):
        for k in range(1, n + 1):
            assert rb.pass_hat_k(n, n, k) == pytest.approx(1.0, abs=1e-12), (n, k)  # C(n,k)/C(n,k)
        for c in range(n + 1):
            assert rb.pass_hat_k(n, c, 1) == pytest.approx(c / n, abs=1e-12), (n, c)  # C(c,1)/C(n,1) = c/n


def test_pass_hat_k_is_pass_at_k_of_the_failures_turned_round() -> None:
    # C(c,k)/C(n,k) = 1 - (1 - C(n-(n-c),k)/C(n,k)) = 1 - pass@k(n, n-c, k): "all k pass" is "no failure drawn".
    # And pass^k <= pass@1 = c/n <= pass@k.
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                hat = rb.pass_hat_k(n, c, k)
                assert hat == pytest.approx(float(exact_pass_hat_k(n, c, k)), abs=1e-12), (n, c, k)
                assert hat == pytest.approx(1 - rb.pass_at_k(n, n - c, k), abs=1e-12), (n, c, k)
                assert hat <= c / n + 1e-12 and c / n <= rb.pass_at_k(n, c, k) + 1e-12, (n, c, k)


def test_pass_hat_k_is_stable_for_many_samples() -> None:
    # n=200, c=190, k=100: C(190,100)/C(200,100) = 4456963/5780560756 = 0.000771026062717...
    expected = Fraction(4456963, 5780560756)
    assert exact_pass_hat_k(200, 190, 100) == expected
    assert rb.pass_hat_k(200, 190, 100) == pytest.approx(float(expected), abs=1e-12)
    # n=2000, c=1999, k=1000: C(1999,1000)/C(2000,1000) = 1000/2000 = 0.5 (C(2000,1000) ~ 2e600)
    assert rb.pass_hat_k(2000, 1999, 1000) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 6), (5, 2, 0), (5, 2, -1), (5, 6, 2)])
def test_pass_hat_k_rejects_impossible_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        rb.pass_hat_k(n, c, k)


# --- Wilson score interval ------------------------------------------------------------------------
# (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), p = passes/n, z = 1.959964, z² = 3.841459.


@pytest.mark.parametrize(
    ("passes", "n", "low", "high"),
    [
        # p = 0: z²/n = 0.384146, denominator 1.384146, centre (0 + 0.192073)/1.384146 = 0.138766,
        # half-width 1.959964·sqrt(0 + 0.00960365)/1.384146 = 1.959964·0.097998/1.384146 = 0.138766
        (0, 10, 0.000000, 0.277533),
        # p = 1: the mirror image of 0/10: (1 - 0.277533, 1 - 0) = (0.722467, 1)
        (10, 10, 0.722467, 1.000000),
        # p = 0.5: centre (0.5 + 0.192073)/1.384146 = 0.5, half-width 1.959964·sqrt(0.025 + 0.00960365)/1.384146
        #   = 1.959964·0.186021/1.384146 = 0.364594/1.384146 = 0.263407
        (5, 10, 0.236593, 0.763407),
        # p = 0.5, n = 54: z²/n = 0.071138, denominator 1.071138, centre 0.5, half-width
        #   1.959964·sqrt(0.25/54 + 3.841459/11664)/1.071138 = 1.959964·sqrt(0.00462963 + 0.00032934)/1.071138
        #   = 1.959964·0.070420/1.071138 = 0.138021/1.071138 = 0.128854: the "±13 points" of 54 tasks
        (27, 54, 0.371146, 0.628854),
        # p = 0, n = 54: centre 0.035569/1.071138 = 0.033207, half-width the same: (0, 0.066414)
        (0, 54, 0.000000, 0.066414),
    ],
)
def test_wilson_interval_hand_computed(passes: int, n: int, low: float, high: float) -> None:
    got_low, got_high = rb.wilson_interval(passes, n)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_of_nothing_is_everything() -> None:
    assert rb.wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_with_another_z() -> None:
    # z = 1, 5/10: denominator 1 + 1/10 = 1.1, centre (0.5 + 0.05)/1.1 = 0.5,
    # half-width sqrt(0.025 + 1/400)/1.1 = sqrt(0.0275)/1.1 = 0.165831/1.1 = 0.150756
    low, high = rb.wilson_interval(5, 10, z=1.0)
    assert low == pytest.approx(0.349244, abs=1e-4)
    assert high == pytest.approx(0.650756, abs=1e-4)
    default_low, default_high = rb.wilson_interval(5, 10)
    assert default_low < low and high < default_high


def test_wilson_interval_stays_in_0_1_holds_the_rate_and_mirrors() -> None:
    for n in (1, 2, 5, 10, 54, 500):
        for passes in range(n + 1):
            low, high = rb.wilson_interval(passes, n)
            assert low >= 0.0 and high <= 1.0, (passes, n, low, high)  # never outside [0, 1], not even by rounding
            assert low - 1e-12 <= passes / n <= high + 1e-12, (passes, n, low, high)
            mirror_low, mirror_high = rb.wilson_interval(n - passes, n)
            assert low == pytest.approx(1 - mirror_high, abs=1e-12), (passes, n)
            assert high == pytest.approx(1 - mirror_low, abs=1e-12), (passes, n)


# --- exact McNemar test ---------------------------------------------------------------------------
# p = min(1, 2·P(X <= min(b, c))), X ~ Bin(b + c, 1/2).


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, Fraction(1)),  # no discordant pair: nothing to test
        (0, 5, Fraction(2, 32)),  # 2·C(5,0)/2^5 = 2/32 = 0.0625
        (5, 0, Fraction(2, 32)),  # the same, the other way round
        (1, 5, Fraction(14, 64)),  # 2·(C(6,0) + C(6,1))/2^6 = 2·(1 + 6)/64 = 0.21875
        (5, 1, Fraction(14, 64)),
        (3, 3, Fraction(1)),  # 2·(1 + 6 + 15 + 20)/64 = 84/64 > 1, so 1
        (0, 10, Fraction(2, 1024)),  # 2·1/2^10 = 0.001953125
        (2, 8, Fraction(112, 1024)),  # 2·(1 + 10 + 45)/1024 = 0.109375
        (10, 2, Fraction(158, 4096)),  # 2·(1 + 12 + 66)/4096 = 0.03857421875
    ],
)
def test_mcnemar_exact_p_hand_computed(b: int, c: int, expected: Fraction) -> None:
    assert exact_mcnemar(b, c) == expected
    assert rb.mcnemar_exact_p(b, c) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize(
    ("b", "c", "approximately"),
    [
        (200, 250, 0.0207918),  # b + c = 450: 2^450 is about 3e135
        (1000, 1100, 0.0307207),  # b + c = 2100: 0.5^2100 underflows a float to 0, C(2100, 1000) ~ 1e630 overflows it
    ],
)
def test_mcnemar_exact_p_with_many_discordant_pairs(b: int, c: int, approximately: float) -> None:
    expected = float(exact_mcnemar(b, c))
    assert expected == pytest.approx(approximately, abs=1e-7)
    assert rb.mcnemar_exact_p(b, c) == pytest.approx(expected, abs=1e-9)
    assert rb.mcnemar_exact_p(c, b) == pytest.approx(expected, abs=1e-9)


def test_mcnemar_exact_p_is_symmetric_and_a_probability() -> None:
    for b in range(13):
        for c in range(13):
            p = rb.mcnemar_exact_p(b, c)
            assert 0.0 < p <= 1.0, (b, c, p)
            assert p == pytest.approx(rb.mcnemar_exact_p(c, b), abs=1e-12), (b, c)
            assert p == pytest.approx(float(exact_mcnemar(b, c)), abs=1e-12), (b, c)


# --- percentile bootstrap over tasks --------------------------------------------------------------

VALUE_SETS = [
    [0.0, 1.0] * 5,
    [0.0] * 9 + [1.0],
    [1.0] * 50 + [0.0] * 4,
    [0.0, 1 / 3, 2 / 3, 1.0] * 3,  # pass rates of tasks with three samples each
    [0.2, 0.4, 0.4, 0.6, 1.0, 0.0, 0.8],
]


def test_bootstrap_interval_is_the_same_for_the_same_seed() -> None:
    values = [0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 2 / 3, 1 / 3]
    assert rb.bootstrap_interval(values) == rb.bootstrap_interval(values)
    assert rb.bootstrap_interval(values, seed=7) == rb.bootstrap_interval(values, seed=7)
    assert rb.bootstrap_interval(values) == rb.bootstrap_interval(list(values), resamples=10000, seed=0, level=0.95)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_bootstrap_interval_holds_the_mean_within_the_values(values: list[float]) -> None:
    before = list(values)
    low, high = rb.bootstrap_interval(values)
    mean = sum(values) / len(values)
    assert min(values) - 1e-12 <= low <= mean + 1e-12
    assert mean - 1e-12 <= high <= max(values) + 1e-12
    assert values == before  # the caller's list is left as it was


@pytest.mark.parametrize("values", [[0.5] * 10, [1.0] * 54, [0.0] * 3, [0.25]])
def test_bootstrap_interval_of_equal_values_has_no_width(values: list[float]) -> None:
    low, high = rb.bootstrap_interval(values)
    assert low == pytest.approx(values[0], abs=1e-12)
    assert high == pytest.approx(values[0], abs=1e-12)


def test_bootstrap_interval_narrows_with_more_tasks() -> None:
    few_low, few_high = rb.bootstrap_interval([0.0, 1.0] * 5)  # 10 tasks, half passed
    many_low, many_high = rb.bootstrap_interval([0.0, 1.0] * 50)  # 100 tasks, half passed
    assert many_high - many_low < few_high - few_low
    assert many_low > few_low and many_high < few_high


def test_bootstrap_interval_is_a_95_percent_percentile_interval() -> None:
    # 100 tasks, 50 passed: a resample's mean is Bin(100, 1/2)/100. P(X <= 39) = 0.0176, P(X <= 40) = 0.0284,
    # so the 2.5 % point is 40/100 = 0.40 and, by symmetry, the 97.5 % point is 0.60 (10,000 resamples
    # land within a step of 0.01 of them).
    low, high = rb.bootstrap_interval([0.0, 1.0] * 50)
    assert low == pytest.approx(0.40, abs=0.02)
    assert high == pytest.approx(0.60, abs=0.02)


def test_bootstrap_interval_at_a_lower_level_is_inside() -> None:
    values = [0.0, 1.0] * 20
    low95, high95 = rb.bootstrap_interval(values)
    low50, high50 = rb.bootstrap_interval(values, level=0.5)
    assert low95 <= low50 <= 0.5 <= high50 <= high95
    assert high50 - low50 < high95 - low95


# --- paired bootstrap over tasks ------------------------------------------------------------------


def test_paired_bootstrap_without_differences() -> None:
    # Every resampled mean is 0: P(d* <= 0) = P(d* >= 0) = 1, p = min(1, 2·1) = 1.
    low, high, p = rb.paired_bootstrap([0.0] * 20)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.0, abs=1e-12)
    assert p == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("diffs", [[0.5, 1.0, 0.25, 0.75] * 5, [1.0] * 20, [1.0, 2 / 3, 1 / 3] * 18])
def test_paired_bootstrap_with_only_gains(diffs: list[float]) -> None:
    # No resample can have a mean <= 0: P(d* <= 0) = 0, so p = 0 (or 1/(B+1)-sized where it is counted that way).
    low, high, p = rb.paired_bootstrap(diffs)
    assert 0.0 < low <= sum(diffs) / len(diffs) <= high
    assert 0.0 <= p < 0.01


def test_paired_bootstrap_with_only_losses() -> None:
    diffs = [-0.5, -1.0, -0.25, -0.75] * 5
    low, high, p = rb.paired_bootstrap(diffs)
    assert low <= -0.625 <= high < 0.0  # mean (-0.5 - 1 - 0.25 - 0.75)/4 = -0.625
    assert 0.0 <= p < 0.01


def test_paired_bootstrap_with_balanced_flips() -> None:
    # 10 tasks gained, 10 lost: the mean is 0, P(d* <= 0) = P(d* >= 0) ≈ P(Bin(20, 1/2) <= 10) = 0.588,
    # p = min(1, 2·0.588) = 1 (counting ties on both sides; above 0.5 however ties are counted).
    low, high, p = rb.paired_bootstrap([1.0, -1.0] * 10)
    assert low < 0.0 < high
    assert 0.5 < p <= 1.0


def test_paired_bootstrap_with_a_clear_but_small_gain() -> None:
    # 54 tasks: 10 flipped fail -> pass (+1), 2 pass -> fail (-1), 42 unchanged: mean 8/54 = 0.148,
    # standard error sqrt((12/54 - 0.148²)/54) = sqrt(0.2003/54) = 0.0609, so z ≈ 2.43 and p ≈ 0.015-0.02.
    diffs = [1.0] * 10 + [-1.0] * 2 + [0.0] * 42
    low, high, p = rb.paired_bootstrap(diffs)
    assert 0.0 < low <= 8 / 54 <= high
    assert 0.001 < p < 0.1


def test_paired_bootstrap_is_the_same_for_the_same_seed() -> None:
    diffs = [1.0, 0.0, -1.0, 0.5, 0.0, 1.0, -1 / 3, 2 / 3]
    assert rb.paired_bootstrap(diffs) == rb.paired_bootstrap(diffs)
    assert rb.paired_bootstrap(diffs, seed=3) == rb.paired_bootstrap(diffs, seed=3)
    low, high, p = rb.paired_bootstrap(diffs)
    assert low <= high and 0.0 <= p <= 1.0
