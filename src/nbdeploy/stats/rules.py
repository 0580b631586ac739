"""The grammar of an experiment's rules, ``METRIC OP baseline[+D|-D|*F]`` (``accuracy>=baseline``,
``error_rate>baseline+0.01``, ``p95_ms>baseline*1.5``), where ``baseline`` is the champion's
live figure. A mean is decided by :mod:`.sequential`, a percentile of latency by :mod:`.quantiles`.

>>> parse_rule("latency_ms>baseline*1.5")
Rule(metric='latency_ms', op='>', factor=1.5, offset=0.0)
>>> quantile_level("p95_ms")
0.95
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_RULE_LENGTH", "Rule", "parse_rule", "quantile_level"]

MAX_RULE_LENGTH = 200
_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RULE = re.compile(
    rf"\s*(?P<metric>[A-Za-z_]\w*)\s*(?P<op>>=|<=|>|<)\s*baseline(?:\s*(?P<kind>[-+*])\s*(?P<number>{_UNSIGNED}))?\s*",
    re.ASCII,
)
_QUANTILE = re.compile(r"[pP]\d")
_QUANTILE_METRIC = re.compile(r"p([1-9]\d?)_ms", re.ASCII)  # p50_ms, p95_ms, p99_ms: a percentile of latency


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


@dataclass(frozen=True)
class Rule:
    """``METRIC OP baseline[+D|-D|*F]``: holds when challenger - factor * champion - offset OP 0."""

    metric: str
    op: str
    factor: float = 1.0
    offset: float = 0.0

    @property
    def threshold(self) -> str:
        """``baseline``, ``baseline+D``, ``baseline-D`` or ``baseline*F``."""
        if self.factor != 1:
            return f"baseline*{self.factor:.15g}"
        return f"baseline{self.offset:+.15g}" if self.offset else "baseline"

    def outcome(self, low: Any, high: Any) -> tuple[Any, Any]:
        """(holds, fails): whether all, or no, values in [low, high] satisfy ``value OP 0`` (arrays too)."""
        sides = {">=": (low >= 0, high < 0), ">": (low > 0, high <= 0), "<=": (high <= 0, low > 0)}
        return sides[self.op] if self.op in sides else (high < 0, low >= 0)


def parse_rule(text: str) -> Rule:
    """Parse ``METRIC OP baseline``, ``+D``, ``-D`` or ``*F``; raise ValueError with one sentence."""
    if not isinstance(text, str):
        raise ValueError(f"A rule must be a string such as 'accuracy>=baseline', not {_short(text)}.")
    if len(text) > MAX_RULE_LENGTH:
        raise ValueError(f"A rule of {len(text)} characters is too long; rules have at most {MAX_RULE_LENGTH}.")
    if (match := _RULE.fullmatch(text)) is None:
        raise ValueError(
            f"Malformed rule {text!r}: expected METRIC OP baseline, baseline+D, baseline-D or baseline*F "
            "with OP one of >= > <= <, for example 'accuracy>=baseline' or 'latency_ms>baseline*1.5'."
        )
    metric, op, kind = match["metric"], match["op"], match["kind"]
    if _QUANTILE.match(metric) and quantile_level(metric) is None:
        raise ValueError(f"Rule {text!r} names a quantile as {metric}: write a percentile of latency as p95_ms.")
    number = float(match["number"]) if kind else 0.0
    if not math.isfinite(number) or (kind == "*" and number <= 0):
        raise ValueError(f"Rule {text!r} needs a finite number{' above 0' if kind == '*' else ''} after {kind}.")
    factor, offset = (number, 0.0) if kind == "*" else (1.0, -number if kind == "-" else number)
    return Rule(metric, op, factor, offset)


def quantile_level(metric: str) -> float | None:
    """0.95 for ``p95_ms`` (a rule on a quantile, :mod:`.quantiles` decides it), else None."""
    match = _QUANTILE_METRIC.fullmatch(metric)
    return int(match[1]) / 100 if match else None
