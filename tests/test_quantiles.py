"""Always-valid bounds on a percentile of latency (nbdeploy.stats.quantiles), for experiment
rules such as ``p95_ms>baseline*1.5``.

The simulations look after every few values, as the server's decision loop does, and count how
often a bound is ever wrong; seeds are fixed, so every figure is deterministic.
"""

from __future__ import annotations

import doctest
import math
import re

import numpy as np
import pytest

from nbdeploy.serving.arms import Arms
from nbdeploy.stats import quantiles, rules
from nbdeploy.stats.quantiles import LatencyHistogram, count_radius, decide_quantile, quantile_bounds
from nbdeploy.stats.rules import parse_rule, quantile_level
from nbdeploy.stats.sequential import ArmStats, decide

ALPHA = 0.05


def one_sentence(message: str) -> bool:
    return message.endswith(".") and "\n" not in message and re.search(r"[.!?]\s+[A-Z]", message) is None


def test_doctests() -> None:
    for module in (quantiles, rules):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("p", [0.5, 0.95, 0.99])
def test_the_count_stays_inside_its_radius_at_every_look(p: float) -> None:
    """The core of the bound: #{X_i <= q} - n p, watched after every single value up to 10,000,
    leaves the radius in at most alpha of 1,000 runs; a fixed-n 95 % interval watched the same
    way leaves it far more often (why a sequential radius is needed at all)."""
    rng = np.random.default_rng(7)
    runs, steps = 1000, 10_000
    n = np.arange(1, steps + 1)
    radius = np.array([count_radius(int(k), p, ALPHA) for k in n])
    naive = 1.96 * np.sqrt(n * p * (1 - p))
    crossed = crossed_naive = 0
    for _ in range(10):  # 100 runs at a time keeps memory near 8 MB
        deviation = np.abs(np.cumsum(rng.random((runs // 10, steps)) < p, axis=1) - n * p)
        crossed += int(np.any(deviation >= radius, axis=1).sum())
        crossed_naive += int(np.any(deviation >= naive, axis=1).sum())
    print(f"p={p}: the count left its radius in {crossed / runs:.1%} of runs, a fixed-n one {crossed_naive / runs:.1%}")
    assert crossed / runs <= ALPHA, crossed
    assert crossed_naive / runs > 3 * ALPHA, crossed_naive


def test_the_bins_bracket_every_order_statistic() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(1, 2, 3000), [0.0, 1e-7, 1e-3, 5e-4, 1e9, 1e12], rng.random(500)])
    hist = LatencyHistogram()
    hist.add_many(values.tolist())
    ordered = np.sort(values)
    ks = np.arange(1, values.size + 1)
    below, above = hist.order_statistic(ks)
    assert np.all(below <= ordered) and np.all(ordered < above)
    finite = np.isfinite(above) & (below > 0)
    assert np.all(above[finite] / below[finite] <= 1.0101)  # 1 % bins: the price of fixed memory


def test_the_quantile_sequence_covers_the_true_quantile_at_every_look() -> None:
    """300 streams of exponential latencies (true p95 = 10 ln 20 ms), looked at every 25 values
    up to 3,000: the interval ever misses the truth in at most alpha of them."""
    rng = np.random.default_rng(11)
    truth = 10 * math.log(20)
    missed, widths = 0, []
    for _ in range(300):
        hist, values = LatencyHistogram(), rng.exponential(10, 3000)
        miss = False
        for start in range(0, 3000, 25):
            hist.add_many(values[start : start + 25].tolist())
            _, low, high = quantile_bounds(hist, 0.95, ALPHA)
            miss = miss or not low <= truth <= high
        missed += miss
        widths.append(high - low)
    print(f"p95 of exponential latencies: missed at some look in {missed / 300:.1%} of runs, "
          f"median width at 3,000 values {np.median(widths):.1f} ms around {truth:.1f} ms")  # fmt: skip
    assert missed / 300 <= ALPHA, missed
    assert np.median(widths) < 0.5 * truth  # not trivially wide after 3,000 values


def test_identical_variants_are_rarely_called_different() -> None:
    """200 A/A experiments (the same latency distribution, a 10 % canary), looked at every 250
    requests up to 25,000: neither p95_ms>baseline nor p95_ms<baseline holds in more than alpha."""
    rng = np.random.default_rng(5)
    alarms = 0
    for _ in range(200):
        champion, challenger = LatencyHistogram(), LatencyHistogram()
        values, to_challenger = rng.lognormal(1.5, 0.4, 25_000), rng.random(25_000) < 0.1
        alarm = False
        for start in range(0, 25_000, 250):
            part, which = values[start : start + 250], to_challenger[start : start + 250]
            champion.add_many(part[~which].tolist())
            challenger.add_many(part[which].tolist())
            verdicts = (decide_quantile(r, champion, challenger) for r in ("p95_ms>baseline", "p95_ms<baseline"))
            alarm = alarm or any(v.holds for v in verdicts)
        alarms += alarm
    print(f"A/A on p95: a difference declared at some look in {alarms / 200:.1%} of runs")
    assert alarms / 200 <= ALPHA, alarms


def test_a_twice_slower_challenger_is_caught_within_a_few_hundred_requests() -> None:
    """A 10 % canary twice as slow as its champion: p95_ms>baseline*1.5 holds in >= 80 % of 100
    runs before the challenger has answered 600 requests."""
    rng = np.random.default_rng(2)
    caught_at = []
    for _ in range(100):
        champion, challenger = LatencyHistogram(), LatencyHistogram()
        a, b = rng.lognormal(1.5, 0.4, 5400), 2 * rng.lognormal(1.5, 0.4, 600)
        at = None
        for look in range(24):
            champion.add_many(a[look * 225 : (look + 1) * 225].tolist())
            challenger.add_many(b[look * 25 : (look + 1) * 25].tolist())
            if decide_quantile("p95_ms>baseline*1.5", champion, challenger).holds:
                at = challenger.n
                break
        caught_at.append(at)
    caught = [at for at in caught_at if at is not None]
    print(f"twice slower: caught in {len(caught)} of 100 runs, median {np.median(caught):.0f} challenger requests")
    assert len(caught) >= 80, caught_at


def test_each_operator_and_threshold_decides_as_its_sign_says() -> None:
    fast, slow = LatencyHistogram(), LatencyHistogram()
    fast.add_many([10.0 + i / 100 for i in range(5000)])  # p95 about 57.5 ms
    slow.add_many([30.0 + i / 100 for i in range(5000)])  # p95 about 77.5 ms
    expected = {
        "p95_ms>baseline": True, "p95_ms>=baseline+10": True, "p95_ms<baseline": False,
        "p95_ms>baseline*1.2": True, "p95_ms>baseline*1.5": False, "p95_ms<=baseline+20": None,
        "p50_ms>baseline*1.4": True,  # about 55 ms against 35 ms
    }  # fmt: skip
    for rule, holds in expected.items():
        verdict = decide_quantile(rule, fast, slow)
        assert verdict.holds is holds, verdict.reason
        assert verdict.decided is (holds is not None) and one_sentence(verdict.reason)


def test_too_few_values_decide_nothing() -> None:
    empty, some = LatencyHistogram(), LatencyHistogram()
    some.add_many([1.0] * 20)
    for champion, challenger in ((empty, empty), (empty, some), (some, some)):
        verdict = decide_quantile("p95_ms>baseline", champion, challenger)
        assert not verdict.decided and "undecided" in verdict.reason
    assert quantile_bounds(empty, 0.95, ALPHA)[1:] == (0.0, math.inf)


def test_what_is_not_a_latency_is_not_counted() -> None:
    hist = LatencyHistogram()
    hist.add_many([math.nan, -1.0, -math.inf, 0.0, math.inf, 1e300, 2.5])
    assert hist.n == 4  # 0, inf (a request that never ended counts as slower than all), 1e300, 2.5
    assert quantile_bounds(hist, 0.5, ALPHA)[0] >= 2.5


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("p99>baseline", "write a percentile of latency as p95_ms"),
        ("P50_latency>baseline", "write a percentile of latency as p95_ms"),
        ("p0_ms>baseline", "write a percentile of latency as p95_ms"),
        ("p100_ms>baseline", "write a percentile of latency as p95_ms"),
        ("p95_s>baseline", "write a percentile of latency as p95_ms"),
        ("p95_ms>baseline*0", "needs a finite number above 0"),
        ("p95_ms>>baseline", "Malformed rule"),
    ],
)
def test_malformed_quantile_rules_are_one_sentence(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)) as err:
        parse_rule(text)
    assert one_sentence(str(err.value))


def test_each_rule_goes_to_the_test_made_for_it() -> None:
    assert quantile_level("p95_ms") == 0.95 and quantile_level("latency_ms") is None
    assert parse_rule("precision>=baseline").metric == "precision"  # a p, but not a p and digits
    arm, hist = ArmStats().add([1.0, 2.0] * 50), LatencyHistogram()
    with pytest.raises(ValueError, match="decide_quantile") as err:
        decide("p95_ms>baseline", arm, arm)
    assert one_sentence(str(err.value))
    with pytest.raises(ValueError, match="not on a quantile of latency") as err:
        decide_quantile("latency_ms>baseline", hist, hist)
    assert one_sentence(str(err.value))
    with pytest.raises(ValueError, match="alpha must be"):
        decide_quantile("p95_ms>baseline", hist, hist, alpha=1.5)


def test_an_experiment_decides_a_percentile_rule_on_its_variants_latencies() -> None:
    rng = np.random.default_rng(4)
    arms = Arms("classification", ["champion", "3"])
    for i, ms in enumerate(rng.lognormal(1.5, 0.4, 3000)):
        arms.request("champion", f"a{i}", failed=False, latency_ms=float(ms), predictions=None)
        if i % 5 == 0:
            arms.request("3", f"b{i}", failed=False, latency_ms=float(3 * ms), predictions=None)
    verdict = arms.decide("p95_ms>baseline*1.5", min_labels=500)
    assert verdict.holds and "600 challenger observations" in verdict.reason
    p95 = arms.summary()["p95_ms"]
    assert p95["n"] == {"champion": 3000, "3": 600} and p95["ready"] and p95["low"] > 0
    assert 2.5 < p95["value"]["3"] / p95["value"]["champion"] < 3.5
