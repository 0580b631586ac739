"""Always-valid comparison of a challenger with a champion, safe to look at after every request:
the normal-mixture sequential probability ratio test (mSPRT) of Johari, Pekelis, Koomen & Walsh
(2017, "Peeking at A/B tests") as a confidence sequence, an interval that holds at every look at
once (:func:`mixture_radius` derives it; ``docs/experiments.md`` says what it assumes).

>>> champion = ArmStats().add([1] * 800 + [0] * 200)
>>> challenger = ArmStats().add([1] * 900 + [0] * 100)
>>> c = compare(champion, challenger)
>>> round(c.lift, 3), c.ready, c.low > 0
(0.1, True, True)
>>> v = decide("accuracy >= baseline+0.02", champion, challenger)
>>> v.decided, v.holds
(True, True)
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nbdeploy.stats.rules import Rule, parse_rule, quantile_level
from nbdeploy.stats.rules import _short as _short  # one repr-shortener for every message

__all__ = [
    "TAU_SCALE", "ArmStats", "Comparison", "Rule", "Verdict", "compare", "decide", "parse_rule", "quantile_level",
]  # fmt: skip

#: Default mixing scale tau, in standard deviations of one observation of the contrast: the
#: prior N(0, tau^2) expects effects of about a fifth of a standard deviation (Cohen's "small"
#: effect), which makes the interval tightest near 400 observations per arm.
TAU_SCALE = 0.2
Arm = tuple[Any, Any, Any]  # (n, total, total_sq) of one arm: numbers or arrays


def _number(x: Any, kind: Any = numbers.Real) -> float:
    """``x`` as a float if it is a finite number of ``kind`` (not a bool), else NaN."""
    ok = isinstance(x, kind) and not isinstance(x, bool) and abs(x) <= sys.float_info.max
    return float(x) if ok else math.nan


def _as_values(values: Any) -> np.ndarray:
    if values is None or isinstance(values, (str, bytes)):
        raise ValueError(f"ArmStats.add takes numbers, not {_short(values)}.")
    values = list(values) if hasattr(values, "__iter__") and not hasattr(values, "__len__") else values
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"ArmStats.add takes numbers, and {_short(values)} holds something else.") from None
    if bad := int(np.count_nonzero(~np.isfinite(arr))):
        raise ValueError(f"ArmStats.add refuses {bad} NaN or infinite value(s); drop or fix them first.")
    return arr


@dataclass(frozen=True)
class ArmStats:
    """Running sufficient statistics of one arm: count, sum and sum of squares of its values."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def __post_init__(self) -> None:
        n, total, total_sq = _number(self.n, numbers.Integral), _number(self.total), _number(self.total_sq)
        if not n >= 0:
            raise ValueError(f"ArmStats.n must be a whole number >= 0, not {_short(self.n)}.")
        if math.isnan(total + total_sq):
            raise ValueError(f"ArmStats needs finite numbers, not total={self.total!r} and total_sq={self.total_sq!r}.")
        for name, value in (("n", int(n)), ("total", total), ("total_sq", total_sq)):
            object.__setattr__(self, name, value)
        if total_sq < 0 or total * total > n * total_sq * (1 + 1e-9) or (n == 0 and total_sq):
            raise ValueError(f"ArmStats {self.to_dict()} is impossible: sum(x)^2 must be <= n * sum(x^2).")

    def add(self, values: Iterable[float] | np.ndarray | float) -> ArmStats:
        """A new ArmStats with ``values`` added; NaN and infinite values raise ValueError."""
        arr = _as_values(values)
        with np.errstate(over="ignore", invalid="ignore"):
            total, total_sq = self.total + float(arr.sum()), self.total_sq + float(np.dot(arr, arr))
        if not math.isfinite(total + total_sq):
            raise ValueError("ArmStats.add got values so large that their sum of squares overflows.")
        return ArmStats(self.n + arr.size, total, total_sq)

    @property
    def mean(self) -> float:
        """The mean of the values, NaN while the arm is empty."""
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """The unbiased sample variance, 0 while the arm has fewer than 2 values."""
        return float(plugin_variance(self.n, self.total, self.total_sq, floor=False))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    @classmethod
    def from_dict(cls, data: Any) -> ArmStats:
        """The inverse of :meth:`to_dict`; a corrupted dict raises ValueError with one sentence."""
        if not isinstance(data, Mapping):
            raise ValueError(f"ArmStats.from_dict needs a dict with n, total and total_sq, not {_short(data)}.")
        if set(data) != {"n", "total", "total_sq"}:
            raise ValueError(f"ArmStats.from_dict needs the keys n, total and total_sq, not {_short(list(data))}.")
        return cls(data["n"], data["total"], data["total_sq"])


@dataclass(frozen=True)
class Comparison:
    """One look: the lift (challenger minus champion, or minus a rule's threshold) and its
    always-valid (1 - alpha) bounds; ``ready`` once both arms have ``min_samples`` values."""

    lift: float
    low: float
    high: float
    n_champion: int
    n_challenger: int
    ready: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: a lift not defined yet (NaN, an empty arm) or an unbounded side (inf) is None."""
        bounds = {"lift": self.lift, "low": self.low, "high": self.high}
        return {**asdict(self), **{k: v if math.isfinite(v) else None for k, v in bounds.items()}}


@dataclass(frozen=True)
class Verdict:
    """A rule at one look: ``holds`` is True or False once ``decided``, None before. ``comparison``
    is the contrast decided on, challenger minus the rule's threshold (see :func:`decide`)."""

    decided: bool
    holds: bool | None
    comparison: Comparison
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "comparison": self.comparison.to_dict()}


def plugin_variance(n: Any, total: Any, total_sq: Any, floor: bool = True) -> np.ndarray:
    """Unbiased per-observation variance s^2 of arms (numbers or arrays), 0 below 2 values.

    With ``floor``, an arm of 0/1 values (seen as ``total == total_sq``) gets at least p(1 - p),
    its success rate p kept within [1/(n + 2), (n + 1)/(n + 2)]: n zeros count as 1 success in
    n + 2 (Agresti & Caffo's pseudo-counts), not as certain. Only all-0 or all-1 arms change."""
    n, total, total_sq = (np.asarray(a, dtype=np.float64) for a in (n, total, total_sq))
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n >= 2, np.maximum((total_sq - total * total / n) / (n - 1), 0.0), 0.0)
        if not floor:
            return var
        binary = (n >= 1) & (total == total_sq) & (total >= 0) & (total <= n)
        p = np.clip(total / n, 1 / (n + 2), (n + 1) / (n + 2))
        return np.where(binary, np.maximum(var, p * (1 - p)), var)


def mixture_radius(variance: Any, tau2: Any, alpha: float) -> np.ndarray:
    """Half-width of the always-valid interval for a contrast whose estimate has ``variance`` V.

    Derivation. Take the estimate theta^ ~ N(theta, V) (the CLT, V plugged in); for a value
    theta0, mix the likelihood ratio over the effect theta - theta0 = h ~ N(0, tau^2)::

        Lambda = integral N(theta^ - theta0 - h; V) / N(theta^ - theta0; V) dN(h; 0, tau^2)
               = sqrt(V / (V + tau^2)) * exp(tau^2 (theta^ - theta0)^2 / (2 V (V + tau^2)))

    Under theta0, Lambda is a nonnegative martingale, so P(Lambda >= 1/alpha at any look) <= alpha
    (Ville); the theta0 never rejected, {theta0 : Lambda < 1/alpha}, are theta^ -/+ r with::

        r^2 = V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))

    r -> 0 as V -> 0; a zero ``tau2`` (no mixture, nothing to detect) gives an infinite r.
    """
    v, t2 = np.asarray(variance, dtype=np.float64), np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r2 = v * (v + t2) / t2 * (np.log1p(t2 / v) - 2.0 * math.log(alpha))
    return np.where(v <= 0, 0.0, np.where(t2 <= 0, np.inf, np.sqrt(r2)))


def sequence_bounds(
    champion: Arm, challenger: Arm, alpha: float = 0.05, tau: float | None = None, factor: float = 1, offset: float = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate, low and high of ``challenger - factor * champion - offset``, vectorised.

    Each arm is ``(n, total, total_sq)`` of numbers or broadcastable arrays; the estimate's
    variance is V = factor^2 s1^2 / n1 + s2^2 / n2 (plug-in, see :func:`plugin_variance`).
    ``tau`` defaults to ``TAU_SCALE * sqrt((factor^2 s1^2 + s2^2) / 2)``. Bounds are infinite
    while an arm has fewer than 2 values, the estimate NaN while one is empty."""
    n1, t1, n2, t2 = (np.asarray(a, dtype=np.float64) for a in (*champion[:2], *challenger[:2]))
    v1, v2 = plugin_variance(*champion), plugin_variance(*challenger)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = t2 / n2 - factor * t1 / n1 - offset
        variance = factor * factor * v1 / n1 + v2 / n2
    tau2 = TAU_SCALE**2 * (factor * factor * v1 + v2) / 2 if tau is None else np.float64(tau) ** 2
    radius = mixture_radius(variance, tau2, alpha)
    defined = (n1 >= 2) & (n2 >= 2)
    return estimate, np.where(defined, estimate - radius, -np.inf), np.where(defined, estimate + radius, np.inf)


def _look(champion: ArmStats, challenger: ArmStats, alpha: float, tau: Any, min_samples: int, rule: Rule) -> Comparison:
    if not (isinstance(champion, ArmStats) and isinstance(challenger, ArmStats)):
        raise ValueError("The champion and the challenger must both be ArmStats.")
    if not 0 < _number(alpha) < 1:
        raise ValueError(f"alpha must be a number between 0 and 1, not {_short(alpha)}.")
    if tau is not None and not _number(tau) > 0:
        raise ValueError(f"tau must be None or a finite number above 0, not {_short(tau)}.")
    if not _number(min_samples, numbers.Integral) >= 2:
        raise ValueError(f"min_samples must be a whole number of at least 2, not {_short(min_samples)}.")
    arms = (champion.n, champion.total, champion.total_sq), (challenger.n, challenger.total, challenger.total_sq)
    est, low, high = sequence_bounds(*arms, alpha, tau, rule.factor, rule.offset)
    ready = min(champion.n, challenger.n) >= min_samples
    return Comparison(float(est), float(low), float(high), champion.n, challenger.n, ready)


def compare(
    champion: ArmStats, challenger: ArmStats, alpha: float = 0.05, tau: float | None = None, min_samples: int = 30
) -> Comparison:
    """The lift, challenger mean minus champion mean, with its always-valid (1 - alpha) bounds at
    this look (:func:`sequence_bounds`); ``tau`` None uses ``TAU_SCALE`` standard deviations."""
    return _look(champion, challenger, alpha, tau, min_samples, Rule("lift", ">"))


def decide(
    rule: str,
    champion: ArmStats,
    challenger: ArmStats,
    alpha: float = 0.05,
    tau: float | None = None,
    min_samples: int = 30,
) -> Verdict:
    """Decide ``challenger OP f(baseline)``: it holds once the whole confidence sequence of
    challenger - f(baseline) lies on the OP side of 0, fails once it lies on the other side,
    and is undecided until then or while an arm has fewer than ``min_samples`` values."""
    parsed = parse_rule(rule)
    if quantile_level(parsed.metric) is not None:
        raise ValueError(f"Rule {rule!r} is on a quantile: decide it with nbdeploy.stats.quantiles.decide_quantile.")
    return verdict_of(parsed, _look(champion, challenger, alpha, tau, min_samples, parsed), alpha, min_samples)


def verdict_of(parsed: Rule, c: Comparison, alpha: float, min_samples: int) -> Verdict:
    """The verdict of ``parsed`` at the look ``c`` (of challenger minus the rule's threshold)."""
    text = f"{parsed.metric}{parsed.op}{parsed.threshold}"
    counts = f"after {c.n_champion} champion and {c.n_challenger} challenger observations"
    if not c.ready:
        reason = f"{text} is undecided: each arm needs {min_samples} observations to decide, {counts}."
        return Verdict(False, None, c, text, reason)
    holds, fails = (bool(x) for x in parsed.outcome(c.low, c.high))
    reason = (
        f"{text} {'holds' if holds else 'fails' if fails else 'is undecided'}: the challenger's margin over "
        f"{parsed.threshold} is {c.lift:+.4g}, between {c.low:+.4g} and {c.high:+.4g} with {100 * (1 - alpha):g}% "
        f"confidence valid at every look, {counts}."
    )
    return Verdict(holds or fails, True if holds else False if fails else None, c, text, reason)
