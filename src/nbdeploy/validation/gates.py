"""Gates: ``METRIC OP VALUE`` conditions a validation must meet, parsed and never ``eval``-ed.

Grammar (whitespace is free between tokens)::

    gate       := METRIC OP value [confidence]
    METRIC     := [A-Za-z_][A-Za-z0-9_]*
    OP         := ">=" | ">" | "<=" | "<" | "=="
    value      := NUMBER | "baseline" | "baseline" ("+" | "-") NUMBER
    confidence := "@" NUMBER ["%"]          (0.95 or 95%: a level between 50 % and 100 %)
    NUMBER     := decimal, optional exponent, optional sign (no nan or inf)

Without a confidence a gate is decided on the point estimates. With one (``@95%``, or
``validate(confidence=0.95)`` for every gate) it is decided on the bootstrap: an absolute
gate ``f1>=0.9`` passes when the one-sided 95 % lower bound of f1 is at least 0.9, and a
baseline gate ``f1>=baseline-0.01`` when the one-sided 95 % lower bound of the paired
difference (candidate minus baseline, on the same resamples) is at least -0.01 — a
non-inferiority test at level 5 %. ``<`` and ``<=`` use the upper bound.

>>> g = parse_gate("f1 >= baseline-0.01")
>>> g.metric, g.op, g.offset, g.text
('f1', '>=', -0.01, 'f1 >= baseline-0.01')
>>> g.evaluate({"f1": 0.93}, {"f1": 0.95}).status
'failed'
>>> parse_gate("f1>=0.9 @95%").text
'f1 >= 0.9 @95%'
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nbdeploy.errors import Docs, InvalidInputError

__all__ = ["Bound", "Gate", "GateResult", "check_confidence", "check_metrics", "parse_gate"]

_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = rf"[+-]?{_UNSIGNED}"
_GATE = re.compile(
    rf"""\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)
        \s*(?P<op>>=|<=|==|>|<)
        \s*(?:(?P<baseline>baseline)(?:\s*(?P<sign>[+-])\s*(?P<offset>{_UNSIGNED}))?|(?P<number>{_NUMBER}))
        \s*(?:@\s*(?P<level>{_UNSIGNED})\s*(?P<percent>%)?\s*)?""",
    re.VERBOSE | re.ASCII,
)
MAX_GATE_LENGTH = 200
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
PASSED, FAILED, NOT_EVALUATED = "passed", "failed", "not evaluated"

# (metric, quantile, paired) -> that quantile of the metric's bootstrap replicates (paired: of
# its difference to the baseline); None when the metric has none (latency, size, drift)
Bound = Callable[[str, float, bool], "float | None"]


def _num(x: float) -> str:
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


@dataclass(frozen=True)
class Gate:
    """A parsed gate: ``metric op value`` or ``metric op baseline+offset``."""

    source: str
    metric: str
    op: str
    value: float | None = None
    offset: float | None = None
    confidence: float | None = None  # decided on the bootstrap bound at this level, else on the values

    @property
    def against_baseline(self) -> bool:
        return self.offset is not None

    @property
    def text(self) -> str:
        """Normalized spelling, e.g. ``f1 >= baseline-0.01`` or ``f1 >= 0.9 @95%``."""
        level = f" @{_num(self.confidence * 100)}%" if self.confidence is not None else ""
        if self.offset is None:
            return f"{self.metric} {self.op} {_num(self.value or 0.0)}{level}"
        if self.offset == 0:
            return f"{self.metric} {self.op} baseline{level}"
        sign = "+" if self.offset > 0 else "-"
        return f"{self.metric} {self.op} baseline{sign}{_num(abs(self.offset))}{level}"

    def with_confidence(self, level: float | None) -> Gate:
        """This gate decided at ``level`` unless it names a level of its own."""
        return self if level is None or self.confidence is not None else replace(self, confidence=level)

    def threshold(self, baseline: Mapping[str, float] | None) -> float | None:
        """The number the metric is compared with, or ``None`` when it needs a missing baseline."""
        if self.offset is None:
            return self.value
        base = (baseline or {}).get(self.metric)
        if base is None or math.isnan(base):
            return None
        return base + self.offset

    def evaluate(
        self, metrics: Mapping[str, float], baseline: Mapping[str, float] | None = None, bound: Bound | None = None
    ) -> GateResult:
        """Compare the metric with the threshold; a missing side makes it "not evaluated".
        With a confidence, the bootstrap bound given by ``bound`` is compared instead."""
        actual = metrics.get(self.metric)
        limit = self.threshold(baseline)
        if limit is None:
            return GateResult(self, actual, None, NOT_EVALUATED, "no baseline to compare with")
        if actual is None or math.isnan(actual):
            return GateResult(self, None, limit, NOT_EVALUATED, f"{self.metric} was not measured")
        if self.confidence is None:
            return self._on_value(actual, limit, "")
        return self._evaluate_bound(actual, limit, bound)

    def _on_value(self, actual: float, limit: float, why: str) -> GateResult:
        return GateResult(self, actual, limit, PASSED if _OPS[self.op](actual, limit) else FAILED, why)

    def _evaluate_bound(self, actual: float, limit: float, bound: Bound | None) -> GateResult:
        level = self.confidence or 0.0
        if self.op == "==":
            return self._on_value(actual, limit, "an equality is decided on the value")
        lower = self.op in (">=", ">")  # the side a passing metric must clear with confidence
        b = bound(self.metric, 1 - level if lower else level, self.against_baseline) if bound else None
        if b is None:
            return self._on_value(actual, limit, f"{self.metric} has no bootstrap interval: decided on its value")
        if math.isnan(b):  # what cannot be shown at the level fails: a level never makes a gate easier
            why = f"the bootstrap bound of {self.metric} is undefined on these rows (most resamples leave it undefined)"
            return GateResult(self, actual, limit, FAILED, why)
        ok = _OPS[self.op](b, self.offset if self.offset is not None else limit)  # a delta's bound: vs the offset
        return GateResult(self, actual, limit, PASSED if ok else FAILED, bound=b)


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: ``status`` is ``passed``, ``failed`` or ``not evaluated``."""

    gate: Gate
    actual: float | None
    threshold: float | None
    status: str
    reason: str = ""
    bound: float | None = None  # the bootstrap bound compared (of the difference, for a baseline gate)

    @property
    def bound_text(self) -> str:
        """What a gate with a confidence compared, e.g. ``delta >= -0.018 at 95%``; else empty."""
        g = self.gate
        if self.bound is None or g.confidence is None:
            return ""
        side = ">=" if g.op in (">=", ">") else "<="
        what = "delta" if g.against_baseline else g.metric
        return f"{what} {side} {self.bound:.4g} at {_num(g.confidence * 100)}%"

    def __str__(self) -> str:
        if self.status == NOT_EVALUATED:
            return f"{self.gate.text} (not evaluated: {self.reason})"
        shown = f"{self.gate.metric} = {self.actual:.4g}, threshold {self.threshold:.4g}"
        extra = self.bound_text or self.reason
        return f"{self.gate.text} ({shown}{'; ' + extra if extra else ''})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.text,
            "metric": self.gate.metric,
            "op": self.gate.op,
            "actual": self.actual,
            "threshold": self.threshold,
            "status": self.status,
            "reason": self.reason,
            "confidence": self.gate.confidence,
            "bound": self.bound,
        }


def parse_gate(text: str) -> Gate:
    """Parse ``METRIC OP VALUE``; raise :class:`InvalidInputError` with one sentence if malformed."""
    if isinstance(text, str) and len(text) > MAX_GATE_LENGTH:
        raise InvalidInputError(
            f"A gate is at most {MAX_GATE_LENGTH} characters; this one has {len(text)}."
        )
    match = _GATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(
            f"Malformed gate {text!r}: expected METRIC OP VALUE with OP one of >= > <= < == "
            "and VALUE a number, baseline, baseline+N or baseline-N, for example 'f1>=0.9'.",
            docs=Docs.GATES,
        )
    metric, op = match["metric"], match["op"]
    level = None
    if match["level"]:
        level = float(match["level"]) / (100 if match["percent"] else 1)
        check_confidence(level, f"in gate {text!r}")
    if match["baseline"]:
        offset = float(match["offset"]) if match["offset"] else 0.0
        return Gate(text, metric, op, offset=-offset if match["sign"] == "-" else offset, confidence=level)
    return Gate(text, metric, op, value=float(match["number"]), confidence=level)


def check_confidence(level: Any, where: str = "") -> float:
    """``level`` (0.95, or "95%") as a float strictly between 0.5 and 1, else one sentence."""
    try:
        text = level.strip() if isinstance(level, str) else None
        value = float(text[:-1]) / 100 if text and text.endswith("%") else float(level)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if not 0.5 < value < 1:
        raise InvalidInputError(
            f"The confidence {level!r}{' ' + where if where else ''} must be a level above 50 % and below 100 %, "
            "for example 0.95 or @95%.",
            docs=Docs.CONFIDENCE,
        )
    return value


def check_metrics(
    gates: Iterable[Gate],
    available: Iterable[str],
    task: str,
    unavailable: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`InvalidInputError` for the first gate on a metric this model does not have.

    ``unavailable`` maps metrics of the task that this model cannot give to the reason why.
    """
    names = list(available)
    for gate in gates:
        if gate.metric in names:
            continue
        listing = f"metrics for {task}: {', '.join(names)}."
        why = (unavailable or {}).get(gate.metric)
        if why:
            raise InvalidInputError(
                f"Metric {gate.metric!r} in gate {gate.source!r} {why}; {listing}", docs=Docs.METRICS
            )
        raise InvalidInputError(f"Unknown metric {gate.metric!r} in gate {gate.source!r}; {listing}", docs=Docs.METRICS)
