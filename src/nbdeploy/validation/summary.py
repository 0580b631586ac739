"""The few lines of a validation that go into the model version's description in the
registry, where reviewers look first (MLflow's UI shows it on the version's page, as
Markdown): the verdict, the headline metric with its interval, the gates, and where the
full report is.

>>> summary(report, "runs:/abc/validation/validation.html").splitlines()[0]   # doctest: +SKIP
'**nbdeploy validation: PASSED** (2 of 2 gates passed) on 143 rows, 2026-11-30 17:10:00 UTC'
"""

from __future__ import annotations

import math

from nbdeploy.reprs import fmt, signed
from nbdeploy.validation.gates import FAILED, PASSED
from nbdeploy.validation.report import ValidationReport

__all__ = ["summary"]

MAX_GATES = 10  # listed in the description (MLflow keeps at most 5,000 characters of it)


def summary(report: ValidationReport, report_uri: str, card_uri: str | None = None) -> str:
    """Markdown: verdict, headline metric with its 95 % interval (and the baseline's), gates,
    the report, and the model card when one was logged."""
    lines = [f"**nbdeploy validation: {report.summary()}** on {report.rows} rows, {report.created}"]
    headline = report.headline()[:1]
    for m in headline:
        lo, hi = report.intervals.get(m, (math.nan, math.nan))
        line = f"- {m} {fmt(report.metrics[m])} (95% CI {fmt(lo)} to {fmt(hi)})"
        if report.baseline and m in report.baseline_metrics:
            base, delta = fmt(report.baseline_metrics[m]), signed(report.deltas.get(m))
            line += f"; baseline {report.baseline} {base}, delta {delta}"
        lines.append(line)
    marks = {PASSED: "pass", FAILED: "FAIL"}
    lines += [f"- gate `{g.gate.text}`: {marks.get(g.status, g.status)}" for g in report.gates[:MAX_GATES]]
    if len(report.gates) > MAX_GATES:
        lines.append(f"- and {len(report.gates) - MAX_GATES} more gates, in the report")
    lines.append(f"- report: {report_uri}")
    if card_uri:
        lines.append(f"- Model card: `{card_uri}`")
    return "\n".join(lines)
