"""Gates: ``METRIC OP VALUE`` conditions a validation must meet, parsed and never ``eval``-ed.

Grammar (whitespace is free between tokens)::

    gate   := METRIC OP value
    METRIC := [A-Za-z_][A-Za-z0-9_]*
    OP     := ">=" | ">" | "<=" | "<" | "=="
    value  := NUMBER | "baseline" | "baseline" ("+" | "-") NUMBER
    NUMBER := decimal, optional exponent, optional sign (no nan or inf)

>>> g = parse_gate("f1 >= baseline-0.01")
>>> g.metric, g.op, g.offset, g.text
('f1', '>=', -0.01, 'f1 >= baseline-0.01')
>>> g.evaluate({"f1": 0.93}, {"f1": 0.95}).status
'failed'
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbdeploy.errors import InvalidInputError

__all__ = ["Gate", "GateResult", "check_metrics", "parse_gate"]

_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = rf"[+-]?{_UNSIGNED}"
_GATE = re.compile(
    rf"""\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)
        \s*(?P<op>>=|<=|==|>|<)
        \s*(?:(?P<baseline>baseline)(?:\s*(?P<sign>[+-])\s*(?P<offset>{_UNSIGNED}))?|(?P<number>{_NUMBER}))
        \s*""",
    re.VERBOSE,
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
PASSED, FAILED, NOT_EVALUATED = "passed", "failed", "not evaluated"


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

    @property
    def against_baseline(self) -> bool:
        return self.offset is not None

    @property
    def text(self) -> str:
        """Normalized spelling, e.g. ``f1 >= baseline-0.01``."""
        if self.offset is None:
            return f"{self.metric} {self.op} {_num(self.value or 0.0)}"
        if self.offset == 0:
            return f"{self.metric} {self.op} baseline"
        sign = "+" if self.offset > 0 else "-"
        return f"{self.metric} {self.op} baseline{sign}{_num(abs(self.offset))}"

    def threshold(self, baseline: Mapping[str, float] | None) -> float | None:
        """The number the metric is compared with, or ``None`` when it needs a missing baseline."""
        if self.offset is None:
            return self.value
        base = (baseline or {}).get(self.metric)
        if base is None or math.isnan(base):
            return None
        return base + self.offset

    def evaluate(self, metrics: Mapping[str, float], baseline: Mapping[str, float] | None = None) -> GateResult:
        """Compare the metric with the threshold; a missing side makes it "not evaluated"."""
        actual = metrics.get(self.metric)
        limit = self.threshold(baseline)
        if limit is None:
            return GateResult(self, actual, None, NOT_EVALUATED, "no baseline to compare with")
        if actual is None or math.isnan(actual):
            return GateResult(self, None, limit, NOT_EVALUATED, f"{self.metric} was not measured")
        ok = _OPS[self.op](actual, limit)
        return GateResult(self, actual, limit, PASSED if ok else FAILED, "")


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: ``status`` is ``passed``, ``failed`` or ``not evaluated``."""

    gate: Gate
    actual: float | None
    threshold: float | None
    status: str
    reason: str = ""

    def __str__(self) -> str:
        if self.status == NOT_EVALUATED:
            return f"{self.gate.text} (not evaluated: {self.reason})"
        return f"{self.gate.text} ({self.gate.metric} = {self.actual:.4g}, threshold {self.threshold:.4g})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.text,
            "metric": self.gate.metric,
            "op": self.gate.op,
            "actual": self.actual,
            "threshold": self.threshold,
            "status": self.status,
            "reason": self.reason,
        }


def parse_gate(text: str) -> Gate:
    """Parse ``METRIC OP VALUE``; raise :class:`InvalidInputError` with one sentence if malformed."""
    match = _GATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(
            f"Malformed gate {text!r}: expected METRIC OP VALUE with OP one of >= > <= < == "
            "and VALUE a number, baseline, baseline+N or baseline-N, for example 'f1>=0.9'."
        )
    metric, op = match["metric"], match["op"]
    if match["baseline"]:
        offset = float(match["offset"]) if match["offset"] else 0.0
        return Gate(text, metric, op, offset=-offset if match["sign"] == "-" else offset)
    return Gate(text, metric, op, value=float(match["number"]))


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
            raise InvalidInputError(f"Metric {gate.metric!r} in gate {gate.source!r} {why}; {listing}")
        raise InvalidInputError(f"Unknown metric {gate.metric!r} in gate {gate.source!r}; {listing}")
