"""Always-valid bounds on a quantile of latency, for rules such as ``p95_ms>baseline*1.5``:
a mean-based interval (:mod:`.sequential`) says nothing about a tail, so a quantile rule is
decided on each variant's latency histogram instead.

The bound on one quantile. For the true p-quantile q of a continuous distribution, the
indicators ``1{X_i <= q}`` are Bernoulli(p); centred, they are sub-Gaussian with variance
proxy ``(1 - 2p) / (2 log((1 - p) / p))`` (Kearns & Saul 1998; the smallest such proxy, and
at p = 0.95 about 3.2 times the variance p(1 - p), but exact at every sample size: no central
limit is assumed). Robbins' normal mixture over the sub-Gaussian supermartingale gives a
boundary that the centred count ``#{X_i <= q} - n p`` stays inside at every n at once with
probability 1 - alpha (:func:`count_radius`), so the order statistics it brackets are a
confidence sequence for q, as in Howard & Ramdas (2022), "Sequential estimation of quantiles".

Values are kept in geometric bins 1 % wide, so memory is fixed; a bound is widened to the
outer edge of its order statistic's bin, which keeps it valid. The comparison of two variants
takes each arm's sequence at alpha / 2 (a union bound).

>>> fast, slow = LatencyHistogram(), LatencyHistogram()
>>> fast.add_many([1.0 + i / 1000 for i in range(4000)]); slow.add_many([4.0 + i / 1000 for i in range(4000)])
>>> decide_quantile("p95_ms>baseline*1.5", fast, slow).holds
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from nbdeploy.stats.sequential import Comparison, Verdict, parse_rule, quantile_level, verdict_of

__all__ = ["LatencyHistogram", "compare_quantiles", "count_radius", "decide_quantile", "quantile_bounds"]

LOW_MS, RATIO, BINS = 1e-3, 1.01, 2316  # 1 us to about 1e7 ms (2.8 h) in 1 % steps; a bin below and one above
_LOG_RATIO = math.log(RATIO)
_EDGES = np.concatenate([[0.0], LOW_MS * RATIO ** np.arange(BINS + 1), [math.inf]])  # bin i is [e[i], e[i + 1])
_TOP = float(_EDGES[-2])
N_OPT = 1000  # the mixture is tuned to be tightest near this many observations (any choice stays valid)


class LatencyHistogram:
    """Counts of latencies (ms) in fixed geometric bins; adding one costs about a microsecond."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = [0] * (BINS + 2)
        self.n = 0

    def add(self, ms: float) -> None:
        """Count one latency; a NaN or negative value is not a latency and is not counted."""
        if not ms >= 0:
            return
        if ms < LOW_MS:
            i = 0
        else:  # an infinite latency (a request that never ended) is counted in the bin above all
            i = BINS + 1 if ms >= _TOP else min(BINS + 1, 1 + int(math.log(ms / LOW_MS) / _LOG_RATIO))
        self.counts[i] += 1
        self.n += 1

    def add_many(self, values: Iterable[float]) -> None:
        for ms in values:
            self.add(ms)

    def copy(self) -> LatencyHistogram:
        other = LatencyHistogram()
        other.counts, other.n = list(self.counts), self.n
        return other

    def order_statistic(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bin edges (below, above) that hold the k-th smallest value, for each k in 1..n."""
        cumulative = np.cumsum(self.counts)
        bins = np.searchsorted(cumulative, ks, side="left")
        return _EDGES[bins], _EDGES[bins + 1]


def sub_gaussian_proxy(p: float) -> float:
    """The smallest variance proxy of a centred Bernoulli(p) (Kearns & Saul)."""
    return 0.25 if p == 0.5 else (1 - 2 * p) / (2 * math.log((1 - p) / p))


def count_radius(n: int, p: float, alpha: float) -> float:
    """r with P(|#{X_i <= q} - n p| >= r for some n) <= alpha, q the true p-quantile.

    With v = sigma^2 n, mixing exp(lambda S - lambda^2 v / 2) over lambda ~ N(0, 1 / rho) gives
    the supermartingale sqrt(rho / (v + rho)) exp(S^2 / (2 (v + rho))); by Ville's inequality it
    reaches 1 / alpha with probability at most alpha, that is S^2 >= (v + rho) (2 log(1 / alpha)
    + log((v + rho) / rho)). rho is Howard et al.'s (2021) choice for :data:`N_OPT` values."""
    log_a, sigma2 = math.log(1 / alpha), sub_gaussian_proxy(p)
    rho = sigma2 * N_OPT / (2 * log_a + math.log(1 + 2 * log_a))
    v = sigma2 * n
    return math.sqrt((v + rho) * (2 * log_a + math.log((v + rho) / rho)))


def quantile_bounds(hist: LatencyHistogram, p: float, alpha: float) -> tuple[float, float, float]:
    """(estimate, low, high) of the p-quantile: low and high hold at every look at once with
    probability 1 - alpha; low is 0 and high infinite while too few values bracket it."""
    n = hist.n
    if n == 0:
        return math.nan, 0.0, math.inf
    r = count_radius(n, p, alpha)
    k_low, k_high = math.floor(n * p - r) + 1, math.ceil(n * p + r)  # #{X_i <= q} is in (np - r, np + r)
    ks = np.array([min(max(k_low, 1), n), min(max(k_high, 1), n), max(math.ceil(n * p), 1)])
    below, above = hist.order_statistic(ks)
    low = float(below[0]) if k_low >= 1 else 0.0
    high = float(above[1]) if k_high <= n else math.inf
    estimate = math.sqrt(below[2] * above[2]) if 0 < below[2] and math.isfinite(above[2]) else float(below[2])
    return estimate, low, high


def decide_quantile(
    rule: str, champion: LatencyHistogram, challenger: LatencyHistogram, alpha: float = 0.05, min_samples: int = 30
) -> Verdict:
    """Decide ``pNN_ms OP f(baseline)`` like :func:`~.sequential.decide` decides a mean: on
    challenger - factor * champion - offset, whose bounds combine each arm's at alpha / 2."""
    parsed = parse_rule(rule)
    p = quantile_level(parsed.metric)
    if p is None:
        raise ValueError(f"Rule {rule!r} is not on a quantile of latency such as p95_ms.")
    c, _ = compare_quantiles(champion, challenger, p, alpha, min_samples, parsed.factor, parsed.offset)
    return verdict_of(parsed, c, alpha, min_samples)


def compare_quantiles(
    champion: LatencyHistogram, challenger: LatencyHistogram, p: float, alpha: float = 0.05,
    min_samples: int = 30, factor: float = 1.0, offset: float = 0.0,
) -> tuple[Comparison, tuple[float, float]]:
    """challenger - factor * champion - offset of the p-quantiles, with bounds combining each
    arm's at alpha / 2; and the two quantiles' estimates (champion, challenger)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number between 0 and 1, not {alpha!r}.")
    (e1, l1, h1), (e2, l2, h2) = (quantile_bounds(h, p, alpha / 2) for h in (champion, challenger))
    with np.errstate(invalid="ignore"):
        lift, low, high = e2 - factor * e1 - offset, l2 - factor * h1 - offset, h2 - factor * l1 - offset
    ready = min(champion.n, challenger.n) >= min_samples
    c = Comparison(lift, low if not math.isnan(low) else -math.inf, high, champion.n, challenger.n, ready)
    return c, (e1, e2)
