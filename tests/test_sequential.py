"""Always-valid challenger-vs-champion statistics (nbdeploy.stats.sequential).

The simulations look at the data continuously, as the server will: they run thousands of
experiments at once with numpy through ``sequence_bounds`` and ``Rule.outcome``, the same code
``compare`` and ``decide`` call, and check on a few experiments that ``decide`` agrees look by
look. Seeds are fixed, so every figure below is deterministic.
"""

from __future__ import annotations

import doctest
import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from nbdeploy.stats import sequential
from nbdeploy.stats.sequential import (
    ArmStats,
    Comparison,
    Rule,
    compare,
    decide,
    mixture_radius,
    parse_rule,
    plugin_variance,
    sequence_bounds,
)

ALPHA, MIN_SAMPLES = 0.05, 30
Cumulative = tuple[np.ndarray, np.ndarray, np.ndarray]  # (n, total, total_sq) of one arm, at each look
Draw = Callable[[np.ndarray], np.ndarray]


def one_sentence(message: str) -> bool:
    return message.endswith(".") and "\n" not in message and re.search(r"[.!?]\s+[A-Z]", message) is None


class Experiments:
    """``runs`` experiments of ``per_arm`` values per arm arriving in a random interleaved order,
    looked at after every ``every`` arrivals; ``draw(is_challenger)`` makes the values."""

    def __init__(self, rng: np.random.Generator, runs: int, per_arm: int, every: int, draw: Draw) -> None:
        self.is_challenger = rng.permuted(np.tile(np.repeat([False, True], per_arm), (runs, 1)), axis=1)
        self.values, self.every = draw(self.is_challenger), every
        self.champion, self.challenger = self._running(~self.is_challenger), self._running(self.is_challenger)

    def _running(self, mask: np.ndarray) -> Cumulative:
        """The arm's (n, total, total_sq) at each look."""
        looks = slice(self.every - 1, None, self.every)
        n, total, total_sq = (
            np.cumsum(v, axis=1)[:, looks] for v in (mask * 1.0, self.values * mask, self.values**2 * mask)
        )
        return n, total, total_sq

    def new_values(self, run: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """What each arm of one experiment receives between two looks."""
        values, mask, k = self.values[run], self.is_challenger[run], self.every
        return [
            (values[i : i + k][~mask[i : i + k]], values[i : i + k][mask[i : i + k]]) for i in range(0, len(values), k)
        ]


def bernoulli(rng: np.random.Generator, p_champion: float, p_challenger: float) -> Draw:
    return lambda challenger: (rng.random(challenger.shape) < np.where(challenger, p_challenger, p_champion)) * 1.0


def outcomes(rule: str, champion: Cumulative, challenger: Cumulative) -> tuple[np.ndarray, np.ndarray]:
    """(holds, fails) of ``decide(rule, ...)`` at every look, vectorised: False before min_samples."""
    parsed = parse_rule(rule)
    _, low, high = sequence_bounds(champion, challenger, ALPHA, None, parsed.factor, parsed.offset)
    ready = np.minimum(champion[0], challenger[0]) >= MIN_SAMPLES
    holds, fails = parsed.outcome(low, high)
    return holds & ready, fails & ready


def naive_z_alarms(champion: Cumulative, challenger: Cumulative) -> np.ndarray:
    """A fixed-horizon two-sided z-test at 5 %, (mis)used at every look: |lift| > 1.96 SE."""
    (n1, t1, q1), (n2, t2, q2) = champion, challenger
    with np.errstate(divide="ignore", invalid="ignore"):  # before the first value of an arm
        se = np.sqrt(plugin_variance(n1, t1, q1) / n1 + plugin_variance(n2, t2, q2) / n2)
        lift = t2 / n2 - t1 / n1
    return (np.abs(lift) > stats.norm.ppf(1 - ALPHA / 2) * se) & (np.minimum(n1, n2) >= MIN_SAMPLES)


def assert_decide_agrees(rule: str, values: list[tuple[np.ndarray, np.ndarray]], holds: Any, fails: Any) -> None:
    """Feed one experiment to ArmStats look by look (``values``: the new values of each arm at
    each look) and check that ``decide`` gives the vectorised holds/fails at every look."""
    champion = challenger = ArmStats()
    for look, (new_champion, new_challenger) in enumerate(values):
        champion, challenger = champion.add(new_champion), challenger.add(new_challenger)
        verdict = decide(rule, champion, challenger)
        assert (verdict.holds is True, verdict.holds is False) == (holds[look], fails[look]), look
        assert verdict.decided == (holds[look] or fails[look]) and one_sentence(verdict.reason)


# --- the figures of issue #11 ------------------------------------------------------------------


def test_aa_false_alarms_stay_under_alpha_while_a_peeking_z_test_does_not() -> None:
    """1,000 A/A experiments: Bernoulli(0.8) arms, 2,000 labels each in random interleaved order,
    looked at after every 10 labels (400 looks). Measured: 2.4 % of experiments ever declare a
    difference (decided, i.e. the interval excludes 0), against 42.9 % for a peeking z-test."""
    rng = np.random.default_rng(20170)
    decided = naive = 0
    for chunk in range(4):
        ex = Experiments(rng, 250, 2000, 10, bernoulli(rng, 0.8, 0.8))
        holds, fails = outcomes("accuracy>baseline", ex.champion, ex.challenger)
        _, low, high = sequence_bounds(ex.champion, ex.challenger, ALPHA)
        excludes_zero = ((low > 0) | (high < 0)) & (np.minimum(ex.champion[0], ex.challenger[0]) >= MIN_SAMPLES)
        assert np.array_equal(holds | fails, excludes_zero)
        decided += int((holds | fails).any(axis=1).sum())
        naive += int(naive_z_alarms(ex.champion, ex.challenger).any(axis=1).sum())
        if chunk == 0:  # decide itself, fed label by label, agrees at every look
            alarmed = int(np.argmax((holds | fails).any(axis=1)))  # an experiment with a false alarm, if any
            for run in {0, 1, alarmed}:
                assert_decide_agrees("accuracy>baseline", ex.new_values(run), holds[run], fails[run])
    print(f"\nA/A false alarms: always-valid {decided / 10:.1f} %, peeking z-test {naive / 10:.1f} % (1,000 runs)")
    assert decided / 1000 <= ALPHA, decided
    assert naive / 1000 > 2 * ALPHA, naive  # peeking matters: the test above can fail, and this one does


def test_power_to_see_080_vs_085_with_2000_labels_per_arm() -> None:
    """True accuracies 0.80 (champion) and 0.85 (challenger), 2,000 labels per arm, looks every
    10 labels: "challenger better" in 91.1 % of 1,000 experiments, "worse" in none."""
    rng = np.random.default_rng(20171)
    better = worse = 0
    for chunk in range(4):
        ex = Experiments(rng, 250, 2000, 10, bernoulli(rng, 0.80, 0.85))
        holds, fails = outcomes("accuracy>baseline", ex.champion, ex.challenger)
        better, worse = better + int(holds.any(axis=1).sum()), worse + int(fails.any(axis=1).sum())
        if chunk == 0:
            assert_decide_agrees("accuracy>baseline", ex.new_values(0), holds[0], fails[0])
    print(f"\npower 0.80 vs 0.85: better {better / 10:.1f} %, worse {worse / 10:.1f} % (1,000 runs)")
    assert better / 1000 >= 0.80 and worse == 0, (better, worse)


def test_an_erroring_canary_is_caught_within_500_requests() -> None:
    """Champion errors 0 %, challenger 5 %, rule error_rate>baseline+0.01. A canary gets each
    request with probability 0.1 (the champion the rest); the rule is looked at after every
    challenger request. Measured: it holds within 500 in 95.3 % of 20,000 runs (median 267
    requests) and never fails. 95 % is near the ceiling for alpha = 0.05 (at n = 500 the margin
    of 0.04 is 4.1 standard errors, the narrowest always-valid radius about 3), hence 20,000
    runs: the estimate's standard error (0.15 %) is small against its margin over 95 %."""
    rng = np.random.default_rng(20172)
    runs, caught, first = 20_000, 0, list[int]()
    for chunk in range(runs // 1000):
        gaps = rng.geometric(0.1, size=(1000, 500)) - 1  # champion requests before each challenger request
        is_error = (rng.random((1000, 500)) < 0.05) * 1.0
        zeros, errors = np.zeros((1000, 500)), np.cumsum(is_error, axis=1)
        champion, challenger = (np.cumsum(gaps, axis=1), zeros, zeros), (np.arange(1, 501) + zeros, errors, errors)
        holds, fails = outcomes("error_rate>baseline+0.01", champion, challenger)
        caught, first = caught + int(holds.any(axis=1).sum()), [*first, *(holds.argmax(axis=1) + 1)[holds.any(axis=1)]]
        assert not fails.any()
        if chunk == 0:
            new_values = [(np.zeros(gap), is_error[0, k : k + 1]) for k, gap in enumerate(gaps[0])]
            assert_decide_agrees("error_rate>baseline+0.01", new_values, holds[0], fails[0])
    print(f"\nerroring canary: caught within 500 in {100 * caught / runs:.2f} %, median {np.median(first):g} requests")
    assert caught / runs >= 0.95, (caught, np.median(first))


@pytest.mark.parametrize(
    ("rule", "mean", "truth"), [("latency_ms>baseline", 120, 20), ("latency_ms>baseline*1.5", 120, -30)]
)
def test_the_sequence_covers_the_true_lift_of_exponential_latencies_at_every_look(
    rule: str, mean: float, truth: float
) -> None:
    """Exponential latencies (skewed, so the CLT is doing work): champion mean 100 ms, 2,000
    values per arm, looks every 10 values; the interval for the rule's contrast covers its true
    value at all 400 looks in 97.6 % (lift) and 97.3 % (challenger - 1.5 * champion) of 1,000 runs."""
    rng = np.random.default_rng(20173)
    parsed, covered = parse_rule(rule), 0
    for _ in range(4):
        ex = Experiments(rng, 250, 2000, 10, lambda challenger: rng.exponential(np.where(challenger, mean, 100.0)))
        _, low, high = sequence_bounds(ex.champion, ex.challenger, ALPHA, None, parsed.factor, parsed.offset)
        ready = np.minimum(ex.champion[0], ex.challenger[0]) >= MIN_SAMPLES
        covered += int((((low <= truth) & (truth <= high)) | ~ready).all(axis=1).sum())
    print(f"\ncoverage at every look, {rule}: {covered / 10:.1f} % (1,000 runs)")
    assert covered / 1000 >= 1 - ALPHA, covered


# --- the formula --------------------------------------------------------------------------------


@pytest.mark.parametrize(("variance", "tau2", "alpha"), [(1e-4, 1e-3, 0.05), (2.0, 0.5, 0.01), (3e-6, 3e-2, 0.2)])
def test_the_radius_is_where_the_mixture_likelihood_ratio_reaches_one_over_alpha(
    variance: float, tau2: float, alpha: float
) -> None:
    """The closed form of mixture_radius against the mixture integral it was derived from."""

    def mixture(gap: float) -> float:  # the likelihood ratio of N(gap + h, V) to N(gap, V), h ~ N(0, tau^2)
        ratio = lambda h: math.exp((2 * gap * h - h * h) / (2 * variance)) * stats.norm.pdf(h, scale=tau2**0.5)  # noqa: E731
        return integrate.quad(ratio, -12 * tau2**0.5, 12 * tau2**0.5, points=[0, gap], limit=200)[0]

    radius = float(mixture_radius(variance, tau2, alpha))
    assert mixture(radius) == pytest.approx(1 / alpha, rel=1e-6)
    assert mixture(0.99 * radius) < 1 / alpha < mixture(1.01 * radius)


def test_compare_matches_the_formula_by_hand() -> None:
    champion, challenger = ArmStats().add([1.0] * 800 + [0.0] * 200), ArmStats().add([1.0] * 850 + [0.0] * 150)
    v = champion.variance / 1000 + challenger.variance / 1000
    tau2 = 0.2**2 * (champion.variance + challenger.variance) / 2
    radius = math.sqrt(v * (v + tau2) / tau2 * math.log((v + tau2) / (v * ALPHA**2)))
    c = compare(champion, challenger)
    assert (c.lift, c.low, c.high) == pytest.approx((0.05, 0.05 - radius, 0.05 + radius))
    assert (c.n_champion, c.n_challenger, c.ready) == (1000, 1000, True) and isinstance(c, Comparison)
    wide = compare(champion, challenger, alpha=0.01)
    assert wide.low < c.low and wide.high > c.high
    tight = compare(champion, challenger, tau=0.05)
    assert tight.high - tight.low == pytest.approx(2 * float(mixture_radius(v, 0.05**2, ALPHA)))


def test_doctests_of_the_module_pass() -> None:
    assert doctest.testmod(sequential).failed == 0


# --- rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "factor", "offset"),
    [
        ("accuracy>=baseline", "accuracy", ">=", 1.0, 0.0),
        (" error_rate > baseline + 0.01 ", "error_rate", ">", 1.0, 0.01),
        ("f1<=baseline-0.02", "f1", "<=", 1.0, -0.02),
        ("latency_ms<baseline*1.5", "latency_ms", "<", 1.5, 0.0),
        ("latency_ms>baseline*2e0", "latency_ms", ">", 2.0, 0.0),
        ("_x1>=baseline+.5", "_x1", ">=", 1.0, 0.5),
    ],
)
def test_rules_parse(text: str, metric: str, op: str, factor: float, offset: float) -> None:
    assert parse_rule(text) == Rule(metric, op, factor, offset)


@pytest.mark.parametrize(
    "text",
    [
        "accuracy>>baseline",
        "accuracy>=baseline+",
        "foo",
        "",
        "accuracy==baseline",
        "accuracy>=0.9",
        "accuracy>=baseline*0",
        "accuracy>=baseline*-1",
        "accuracy>=baseline+-0.1",
        "accuracy>=baseline+nan",
        "accuracy>=baseline+1e999",
        "accuracy>=baseline+\u0661",  # an Arabic-Indic digit, which float() would accept
        "pr\u00e9cision>=baseline",
        "accuracy>=baseline; import os",
        "x" * 100_000,
        "accuracy>=baseline" + " " * 1000,
        None,
        42,
        b"accuracy>=baseline",
    ],
)
def test_malformed_rules_are_one_sentence(text: Any) -> None:
    arm = ArmStats().add([0.0, 1.0] * 50)
    with pytest.raises(ValueError) as err:
        decide(text, arm, arm)
    assert one_sentence(str(err.value)) and len(str(err.value)) < 300, str(err.value)


def test_each_operator_holds_fails_or_waits_where_it_should() -> None:
    champion = ArmStats(10_000, 5_000, 5_000)  # 0.5, tight: the intervals are about +/- 0.025
    challenger = ArmStats(10_000, 6_000, 6_000)  # 0.6
    expected = {
        "accuracy>baseline": True,
        "accuracy>=baseline": True,
        "accuracy<baseline": False,
        "accuracy<=baseline": False,
        "accuracy>baseline+0.2": False,
        "accuracy<baseline+0.2": True,
        "accuracy>=baseline-0.1": True,  # 0.6 - (0.5 - 0.1) = 0.2
        "accuracy>baseline*1.1": True,  # 0.6 - 0.55
        "accuracy>baseline*1.3": False,  # 0.6 - 0.65
        "accuracy<=baseline+0.1": None,  # a margin of 0: the interval straddles it
    }
    for rule, holds in expected.items():
        verdict = decide(rule, champion, challenger)
        assert (verdict.holds, verdict.decided) == (holds, holds is not None), verdict.reason
        assert verdict.rule == rule.replace(" ", "") and one_sentence(verdict.reason)
        assert (
            verdict.reason.startswith(rule)
            and ("holds" if holds else "fails" if holds is False else "undecided") in verdict.reason
        )


def test_interval_ends_on_zero_follow_the_operator() -> None:
    assert Rule("m", ">=").outcome(0.0, 1.0) == (True, False)
    assert Rule("m", ">").outcome(0.0, 1.0) == (False, False)
    assert Rule("m", ">").outcome(-1.0, 0.0) == (False, True)
    assert Rule("m", ">=").outcome(-1.0, 0.0) == (False, False)
    assert Rule("m", "<=").outcome(-1.0, 0.0) == (True, False)
    assert Rule("m", "<").outcome(0.0, 1.0) == (False, True)
    assert Rule("m", "<").outcome(-2.0, -1.0) == (True, False)


# --- hostile and edge inputs ---------------------------------------------------------------------


def test_empty_and_one_sided_arms_are_undecided_not_errors() -> None:
    empty, some = ArmStats(), ArmStats().add([0.0, 1.0] * 50)
    for champion, challenger in [(empty, empty), (empty, some), (some, empty), (some, ArmStats().add([1.0]))]:
        c = compare(champion, challenger)
        assert (c.low, c.high, c.ready) == (-math.inf, math.inf, False)
        assert json.loads(json.dumps(c.to_dict(), allow_nan=False))["low"] is None
        verdict = decide("accuracy>=baseline", champion, challenger)
        assert (verdict.decided, verdict.holds) == (False, None) and one_sentence(verdict.reason)
        assert "needs 30 observations" in verdict.reason
    assert math.isnan(compare(empty, some).lift) and compare(empty, some).to_dict()["lift"] is None
    assert empty.mean != empty.mean and empty.variance == 0.0 and ArmStats().add([3.0]).variance == 0.0


def test_min_samples_gates_the_decision() -> None:
    zeros, ones = ArmStats().add(np.zeros(29)), ArmStats().add(np.ones(29))
    assert not decide("accuracy>baseline", zeros, ones).decided  # a huge lift, but 29 < 30
    assert decide("accuracy>baseline", zeros.add([0.0]), ones.add([1.0])).holds is True
    assert decide("accuracy>baseline", zeros, ones, min_samples=29).holds is True


def test_all_zero_arms_are_not_certain() -> None:
    """The pseudo-count floor: n zeros have variance as if 1 in n + 2 were a one, not 0."""
    for n in (30, 1000, 100_000):
        zeros = ArmStats().add(np.zeros(n))
        assert zeros.variance == 0.0
        assert float(plugin_variance(n, 0.0, 0.0)) == pytest.approx((n + 1) / (n + 2) ** 2)
        assert float(plugin_variance(n, n, n)) == pytest.approx((n + 1) / (n + 2) ** 2)
        c = compare(zeros, zeros)
        assert c.lift == 0.0 and c.low < 0 < c.high
        assert decide("error_rate<=baseline", zeros, zeros).decided is False
    # an arm that is not all 0 or all 1 keeps its own variance
    assert float(plugin_variance(10, 3.0, 3.0)) == pytest.approx(0.3 * 0.7 * 10 / 9)
    assert float(plugin_variance(3, 6.0, 14.0)) == pytest.approx(np.var([1.0, 2.0, 3.0], ddof=1))


def test_constant_latencies_give_a_zero_width_interval() -> None:
    """A mean metric has no floor: identical values in both arms pin the lift exactly (documented)."""
    champion, challenger = ArmStats().add([100.0] * 50), ArmStats().add([120.0] * 50)
    c = compare(champion, challenger)
    assert (c.lift, c.low, c.high) == (20.0, 20.0, 20.0)
    assert decide("latency_ms>=baseline*1.2", champion, challenger).holds is True  # exactly on the line: >= holds
    assert decide("latency_ms>baseline*1.2", champion, challenger).holds is False  # and > fails


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ([1.0, float("nan")], "NaN or infinite"),
        ([float("inf"), 1.0, float("-inf")], "2 NaN or infinite"),
        (np.array([0.0, np.nan]), "NaN or infinite"),
        ("0,1,1", "not '0,1,1'"),
        ([1.0, "x"], "holds something else"),
        ([[1.0, 2.0], [3.0]], "holds something else"),
        ({"a": 1.0}, "holds something else"),
        (None, "not None"),
        ([1e200, 1e200], "overflows"),
    ],
)
def test_bad_values_are_refused_with_one_sentence(values: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words) as err:
        ArmStats().add(values)
    assert one_sentence(str(err.value))


def test_values_come_in_any_shape_and_add_is_pure() -> None:
    rng = np.random.default_rng(3)
    values = rng.exponential(100.0, 1000)
    start = ArmStats().add(values[:10])
    grown = start.add(values[10:500]).add(iter(values[500:])).add([]).add(np.float64(1.0)).add(True)
    assert start.n == 10 and grown.n == 1002
    assert grown.mean == pytest.approx(np.r_[values, 1.0, 1.0].mean())
    assert grown.variance == pytest.approx(np.var(np.r_[values, 1.0, 1.0], ddof=1))
    with pytest.raises(AttributeError):
        grown.n = 3  # type: ignore[misc]


def test_stats_round_trip_through_json_and_resume() -> None:
    rng = np.random.default_rng(4)
    first, second = rng.exponential(50.0, 300), rng.exponential(50.0, 200)
    saved = json.dumps(ArmStats().add(first).to_dict(), allow_nan=False)
    resumed = ArmStats.from_dict(json.loads(saved)).add(second)
    once = ArmStats().add(np.r_[first, second])
    assert (
        resumed.n == once.n
        and resumed.mean == pytest.approx(once.mean)
        and resumed.variance == pytest.approx(once.variance)
    )
    assert ArmStats.from_dict(resumed.to_dict()) == resumed
    assert ArmStats.from_dict({"n": np.int64(3), "total": 3, "total_sq": 3}) == ArmStats(3, 3.0, 3.0)
    verdict = decide("latency_ms<=baseline*1.1", once, resumed)
    assert json.loads(json.dumps(verdict.to_dict(), allow_nan=False))["comparison"]["n_challenger"] == 500


@pytest.mark.parametrize(
    "data",
    [
        {"n": 3, "total": 1.0},
        {},
        {"n": 3, "total": 1.0, "total_sq": 1.0, "extra": 1},
        {"n": -1, "total": 0.0, "total_sq": 0.0},
        {"n": "3", "total": 1.0, "total_sq": 1.0},
        {"n": 3.0, "total": 1.0, "total_sq": 1.0},
        {"n": True, "total": 1.0, "total_sq": 1.0},
        {"n": 10**400, "total": 1.0, "total_sq": 1.0},
        {"n": 3, "total": "1", "total_sq": 1.0},
        {"n": 3, "total": 1.0, "total_sq": None},
        {"n": 3, "total": float("nan"), "total_sq": 1.0},
        {"n": 3, "total": 1.0, "total_sq": float("inf")},
        {"n": 3, "total": 1.0, "total_sq": -1.0},
        {"n": 2, "total": 10.0, "total_sq": 1.0},  # impossible: sum^2 > n * sum of squares
        {"n": 0, "total": 0.0, "total_sq": 4.0},
        [3, 1.0, 1.0],
        None,
        "n=3",
    ],
)
def test_corrupted_dicts_are_refused_with_one_sentence(data: Any) -> None:
    with pytest.raises(ValueError) as err:
        ArmStats.from_dict(data)
    assert one_sentence(str(err.value)) and len(str(err.value)) < 200, str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": "0.05"}, "alpha"),
        ({"tau": 0.0}, "tau"),
        ({"tau": -1.0}, "tau"),
        ({"tau": float("inf")}, "tau"),
        ({"min_samples": 1}, "min_samples"),
        ({"min_samples": 30.5}, "min_samples"),
    ],
)
def test_bad_settings_are_refused_with_one_sentence(kwargs: dict[str, Any], words: str) -> None:
    arm = ArmStats().add([0.0, 1.0] * 50)
    for call in (lambda: compare(arm, arm, **kwargs), lambda: decide("accuracy>=baseline", arm, arm, **kwargs)):
        with pytest.raises(ValueError, match=words) as err:
            call()
        assert one_sentence(str(err.value))
    with pytest.raises(ValueError, match="ArmStats"):
        compare({"n": 3, "total": 1.0, "total_sq": 1.0}, arm)  # type: ignore[arg-type]
