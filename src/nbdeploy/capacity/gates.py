"""Gates of a load test: ``p99_ms<=50``, ``rps>=500``, ``error_rate<0.001``, ``cpu_s_per_1k<=2``.

How each is decided (docs/capacity.md says the same):

- latency and error gates (``mean_ms``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms``,
  ``error_rate``) hold at a level when that level's figure meets them; a level that meets
  every one of them together is *within target*. They pass when some level is within
  target (and the report shows their figures there); a latency that timed out is unknown
  and meets no gate.
- ``rps`` is the *capacity*: the highest rate of good answers (2xx) of a level within
  target, so ``--gate "p99_ms<=50" --gate "rps>=500"`` reads "serves 500 requests/s with
  p99 under 50 ms".
- ``cpu_s_per_1k`` is read at that same level; ``peak_rss_mb`` is the highest over the test.

>>> gates = parse_gates(["p99_ms<=50", "rps>=500"])
>>> levels = [{"connections": 1, "rps": 300.0, "p99_ms": 4.0, "error_rate": 0.0},
...           {"connections": 16, "rps": 900.0, "p99_ms": 40.0, "error_rate": 0.0},
...           {"connections": 64, "rps": 950.0, "p99_ms": 120.0, "error_rate": 0.0}]
>>> best, results = decide(gates, levels, peak_rss_mb=150.0)
>>> best["connections"], [(r["gate"], r["value"], r["passed"]) for r in results]
(16, [('p99_ms<=50', 40.0, True), ('rps>=500', 900.0, True)])
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nbdeploy.errors import Docs, InvalidInputError

__all__ = ["LEVEL_METRICS", "Gate", "decide", "parse_gates"]

LEVEL_METRICS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "error_rate")
METRICS = (*LEVEL_METRICS, "rps", "cpu_s_per_1k", "peak_rss_mb")
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                                    "<": operator.lt}  # fmt: skip
_GATE = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    threshold: float

    def holds(self, value: float | None) -> bool:
        return value is not None and _OPS[self.op](value, self.threshold)


def parse_gates(texts: Sequence[str]) -> list[Gate]:
    """Each ``METRIC OP NUMBER``; one sentence for the first that is not."""
    gates = []
    for text in texts:
        match = _GATE.match(text or "")
        if not match:
            raise InvalidInputError(f"Malformed load-test gate {text[:80]!r}: expected METRIC OP NUMBER, e.g. "
                                    "p99_ms<=50 or rps>=500.", docs=Docs.LOADTEST_GATES)  # fmt: skip
        metric, op, number = match.groups()
        if metric not in METRICS:
            raise InvalidInputError(
                f"Unknown load-test metric {metric!r} in {text!r}; metrics: {', '.join(METRICS)}.",
                docs=Docs.LOADTEST_GATES,
            )
        gates.append(Gate(text.replace(" ", ""), metric, op, float(number)))
    return gates


def decide(
    gates: Sequence[Gate], levels: Sequence[dict[str, Any]], peak_rss_mb: float | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The best level (highest throughput within target; ``None`` when no level is) and
    each gate's ``{"gate", "value", "passed"}``."""
    latency = [g for g in gates if g.metric in LEVEL_METRICS]
    within = [lv for lv in levels if all(g.holds(lv.get(g.metric)) for g in latency)]
    best = max(within, key=lambda lv: lv["rps"], default=None)
    results = []
    for gate in gates:
        if gate.metric in LEVEL_METRICS:  # decided where all of them hold together: the best level
            measured = [lv for lv in levels if lv.get(gate.metric) is not None]
            closest = min(measured, key=lambda lv: abs(lv[gate.metric] - gate.threshold), default={})
            shown = best if best is not None else closest  # else the level that came closest
            results.append({"gate": gate.text, "value": shown.get(gate.metric), "passed": best is not None})
        elif gate.metric == "peak_rss_mb":
            results.append({"gate": gate.text, "value": peak_rss_mb, "passed": gate.holds(peak_rss_mb)})
        else:
            value = best.get(gate.metric) if best is not None else None
            results.append({"gate": gate.text, "value": value, "passed": gate.holds(value)})
    return best, results
