"""The validation report: verdict, gates, metrics with intervals and baseline deltas, data
checks, drift and slices — as ``text/plain``, self-contained ``text/html`` and JSON.

>>> report = nbdeploy.validate("cancer/2", X_test, y_test, gates=["f1>=0.9"])   # doctest: +SKIP
>>> report.passed, [str(g) for g in report.failed_gates]                       # doctest: +SKIP
(True, [])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nbdeploy.reprs import fit, fmt, signed
from nbdeploy.validation.checks import DataChecks
from nbdeploy.validation.explain import Explanation
from nbdeploy.validation.gates import FAILED, NOT_EVALUATED, PASSED, GateResult
from nbdeploy.validation.metrics import CLASSIFICATION, DATA, OPERATIONAL, PROBABILISTIC, REGRESSION
from nbdeploy.validation.segments import Segment, as_dicts
from nbdeploy.validation.slices import SliceTable

__all__ = ["FORMAT", "ValidationReport", "fmt", "signed"]

FORMAT = "nbdeploy.validation/1"
_ORDER = (*CLASSIFICATION, *PROBABILISTIC, *REGRESSION, *OPERATIONAL, *DATA)


def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become ``None``, tuples lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@dataclass
class ValidationReport:
    """The outcome of :func:`nbdeploy.validate`.

    ``metrics`` holds every measured metric (task, operational, data); ``intervals`` the 95 %
    bootstrap interval of the task metrics; ``baseline_metrics`` the same metrics of the
    baseline version on the same data, and ``delta_intervals`` the paired interval of each
    difference. ``passed`` is the verdict: no gate failed (and, with ``strict``, none was
    left unevaluated).
    """

    model: str
    task: str
    rows: int
    metrics: dict[str, float]
    gates: list[GateResult] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    baseline: str | None = None
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    delta_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    checks: DataChecks | None = None
    slices: list[SliceTable] = field(default_factory=list)
    labels: list[str] | None = None
    confusion: list[list[int]] | None = None
    residuals: dict[str, float] | None = None
    plot: dict[str, Any] = field(default_factory=dict)
    strict: bool = False
    resamples: int = 0
    seed: int = 0
    created: str = ""
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    reliability: list[dict[str, float]] = field(default_factory=list)  # per confidence bin: calibration.py
    explanation: Explanation | None = None
    segments: list[Segment] = field(default_factory=list)  # weak segments found (segments.py)
    segments_searched: int = 0

    @property
    def failed_gates(self) -> list[GateResult]:
        """Gates that failed; with ``strict``, also those that could not be evaluated."""
        bad = {FAILED, NOT_EVALUATED} if self.strict else {FAILED}
        return [g for g in self.gates if g.status in bad]

    @property
    def passed(self) -> bool:
        return not self.failed_gates

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def deltas(self) -> dict[str, float]:
        """``metric - baseline`` for every metric both have."""
        return {
            k: self.metrics[k] - v
            for k, v in self.baseline_metrics.items()
            if k in self.metrics and not (math.isnan(v) or math.isnan(self.metrics[k]))
        }

    def ordered_metrics(self) -> list[str]:
        """Metric names in display order: task metrics, operational, then data."""
        known = [m for m in _ORDER if m in self.metrics]
        return known + sorted(set(self.metrics) - set(known))

    def headline(self) -> list[str]:
        """The task's metrics (those with an interval)."""
        return [m for m in self.ordered_metrics() if m in (*CLASSIFICATION, *PROBABILISTIC, *REGRESSION)]

    def summary(self) -> str:
        """One line: the verdict and the gate count, e.g. ``FAILED (1 of 2 gates failed)``."""
        n = len(self.gates)
        if not n:
            return f"{self.verdict.upper()} (no gates)"
        failed = sum(g.status == FAILED for g in self.gates)
        skipped = sum(g.status == NOT_EVALUATED for g in self.gates)
        parts = [f"{n - failed - skipped} of {n} gates passed" if not failed else f"{failed} of {n} gates failed"]
        if skipped:
            parts.append(f"{skipped} not evaluated" + (" (strict: counted as failed)" if self.strict else ""))
        return f"{self.verdict.upper()} ({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report, JSON-ready (NaN as ``null``); what ``validation.json`` holds."""
        deltas = self.deltas
        metrics = {
            m: {
                "value": self.metrics[m],
                "ci": list(self.intervals[m]) if m in self.intervals else None,
                "baseline": self.baseline_metrics.get(m),
                "delta": deltas.get(m),
                "delta_ci": list(self.delta_intervals[m]) if m in self.delta_intervals else None,
            }
            for m in self.ordered_metrics()
        }
        return _clean(
            {
                "format": FORMAT,
                "model": self.model,
                "task": self.task,
                "rows": self.rows,
                "verdict": self.verdict,
                "passed": self.passed,
                "strict": self.strict,
                "created": self.created,
                "baseline": self.baseline,
                "gates": [g.to_dict() for g in self.gates],
                "metrics": metrics,
                "bootstrap": {"resamples": self.resamples, "seed": self.seed, "level": 0.95},
                "confusion_matrix": {"labels": self.labels, "matrix": self.confusion} if self.confusion else None,
                "residuals": self.residuals,
                "reliability": self.reliability,
                "plot": self.plot,
                "data_checks": self.checks.to_dict() if self.checks else None,
                "slices": [s.to_dict() for s in self.slices],
                "explain": self.explanation.to_dict() if self.explanation else None,
                "weak_segments": {"searched": self.segments_searched, "found": as_dicts(self.segments)},
                "notes": self.notes,
                "run_id": self.run_id,
            }
        )

    def __repr__(self) -> str:
        lines = [f"ValidationReport {self.model}: {self.summary()}"]
        if self.gates:
            lines.append("gates")
            width = max(len(g.gate.text) for g in self.gates)
            for g in self.gates:
                mark = {PASSED: "pass", FAILED: "FAIL"}.get(g.status, "n/e ")
                detail = g.reason if g.status == NOT_EVALUATED else f"{fmt(g.actual)} vs {fmt(g.threshold)}"
                extra = (g.bound_text or g.reason) if g.status != NOT_EVALUATED else ""
                lines.append(f"  {mark}  {g.gate.text:<{width}}  {detail}{f' ({extra})' if extra else ''}")
        head = f"metrics on {self.rows} rows (95% CI, {self.resamples} resamples)"
        if self.baseline:
            head += f"; baseline {self.baseline}, delta"
        lines.append(head)
        deltas = self.deltas
        for m in self.headline():
            lo, hi = self.intervals.get(m, (math.nan, math.nan))
            row = f"  {m:<18} {fmt(self.metrics[m]):>8}  [{fmt(lo)}, {fmt(hi)}]"
            if self.baseline:
                row = f"{row:<48} {fmt(self.baseline_metrics.get(m)):>8}  {signed(deltas.get(m))}"
                if m in self.delta_intervals:
                    d_lo, d_hi = self.delta_intervals[m]
                    row += f" [{signed(d_lo)}, {signed(d_hi)}]"
            lines.append(row.rstrip())
        if self.checks is not None:
            lines.append("data: " + "; ".join(self.checks.summary()))
        for s in self.segments:
            lines.append(f"weak segment: {s.where}: {s.rows} rows, {s.metric} {fmt(s.value)} [{fmt(s.low)}, "
                         f"{fmt(s.high)}] vs {fmt(s.overall)} overall")  # fmt: skip
        from nbdeploy.validation.explain_view import explain_lines

        return fit("\n".join(lines + explain_lines(self.explanation)))

    def _repr_html_(self) -> str:
        from nbdeploy.validation.html import render

        return render(self)
