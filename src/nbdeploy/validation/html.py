"""The report's ``text/html``: small section functions over :mod:`nbdeploy.reprs`.

Static and self-contained — one stylesheet inline, charts as inline SVG, no script, no
external URL — and well-formed XML, so it reads the same in JupyterLab, VS Code and
GitHub's notebook viewer. Every interpolated value goes through ``esc``.

>>> html = render(report)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nbdeploy.reprs import card, esc, fmt, fold, kv_table, signed
from nbdeploy.validation.gates import FAILED, PASSED
from nbdeploy.validation.metrics import higher_is_better
from nbdeploy.validation.svg import predicted_vs_actual_svg, reliability_svg, roc_svg

if TYPE_CHECKING:
    from nbdeploy.validation.report import ValidationReport

__all__ = ["render"]

#: The drift table shows every feature not "ok" and the others with the highest PSI up to this.
MAX_DRIFT_ROWS = 10


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> str:
    """A table of already-escaped cells, with an optional class per row."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f" class='{esc(classes[i])}'" if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _status(status: str) -> str:
    cls = {PASSED: "nbd-pass", FAILED: "nbd-fail"}.get(status, "nbd-warn")
    mark = {PASSED: "\u2713 pass", FAILED: "\u2717 fail"}.get(status, "\u2013 " + status)
    return f"<span class='{cls}'>{esc(mark)}</span>"


def _delta(metric: str, value: float | None) -> str:
    if value is None or math.isnan(value) or value == 0:
        return esc(signed(value))
    better = (value > 0) == higher_is_better(metric)
    return f"<span class='{'nbd-pass' if better else 'nbd-fail'}'>{esc(signed(value))}</span>"


def _interval(pair: tuple[float, float] | None) -> str:
    if not pair or any(math.isnan(v) for v in pair):
        return "-"
    return esc(f"[{fmt(pair[0])}, {fmt(pair[1])}]")


def _banner(r: ValidationReport) -> str:
    cls = "nbd-pass" if r.passed else "nbd-fail"
    mark = "\u2713" if r.passed else "\u2717"
    return f"<div class='nbd-banner {cls}'>{mark} {esc(r.summary())}</div>"


def _facts(r: ValidationReport) -> str:
    pairs = [
        ("model", f"<code>{esc(r.model)}</code> ({esc(r.task)})"),
        ("data", esc(f"{r.rows} rows")),
        ("baseline", f"<code>{esc(r.baseline)}</code>" if r.baseline else "none"),
        ("intervals", esc(f"95% bootstrap percentile, {r.resamples} resamples, seed {r.seed}")),
        ("validated", esc(r.created)),
    ]
    if r.run_id:
        pairs.append(("MLflow run", f"<code>{esc(r.run_id)}</code>"))
    return kv_table(pairs)


def _gates(r: ValidationReport) -> str:
    if not r.gates:
        return "<h4>Gates</h4><p class='nbd-muted'>No gates were set: the verdict is informative only.</p>"
    rows = [
        [
            f"<code>{esc(g.gate.text)}</code>",
            esc(fmt(g.actual)),
            esc(fmt(g.threshold)),
            _status(g.status)
            + (f" <span class='nbd-muted'>{esc(g.bound_text or g.reason)}</span>" if g.bound_text or g.reason else ""),
        ]
        for g in r.gates
    ]
    return "<h4>Gates</h4>" + _table(["gate", "value", "threshold", "result"], rows)


def _metrics(r: ValidationReport) -> str:
    deltas = r.deltas
    header = ["metric", "value", "95% CI"]
    if r.baseline:
        header += ["baseline", "delta", "delta 95% CI"]
    rows = []
    for m in r.ordered_metrics():
        row = [esc(m), esc(fmt(r.metrics[m])), _interval(r.intervals.get(m))]
        if r.baseline:
            row += [
                esc(fmt(r.baseline_metrics.get(m))),
                _delta(m, deltas.get(m)),
                _interval(r.delta_intervals.get(m)),
            ]
        rows.append(row)
    headline = set(r.headline())  # the task's metrics stay in view; all of them (latency, size...) fold
    shown = [row for m, row in zip(r.ordered_metrics(), rows, strict=True) if m in headline]
    others = [row for m, row in zip(r.ordered_metrics(), rows, strict=True) if m not in headline]
    rest = fold(f"Other metrics ({len(others)})", _table(header, others), len(others), always=True) if others else ""
    return "<h4>Metrics</h4>" + _table(header, shown) + rest


def _confusion(r: ValidationReport) -> str:
    if not r.confusion or not r.labels:
        return ""
    header = ["true \\ predicted", *r.labels]
    rows = [[f"<b>{esc(label)}</b>", *(esc(v) for v in row)] for label, row in zip(r.labels, r.confusion, strict=True)]
    return "<div><h4>Confusion matrix</h4>" + _table(header, rows) + "</div>"


def _residuals(r: ValidationReport) -> str:
    if not r.residuals:
        return ""
    pairs = [(k, esc(fmt(v))) for k, v in r.residuals.items()]
    return "<div><h4>Residuals (actual - predicted)</h4>" + kv_table(pairs) + "</div>"


def _chart(r: ValidationReport) -> str:
    p = r.plot
    if p.get("kind") == "roc" and p.get("curves"):
        curves = [(c["label"], c["fpr"], c["tpr"]) for c in p["curves"]]
        base = [(c["label"], c["fpr"], c["tpr"]) for c in p.get("baseline", [])]
        return "<div><h4>ROC curve</h4>" + roc_svg(curves, base) + "</div>"
    if p.get("kind") == "scatter":
        svg = predicted_vs_actual_svg(p["actual"], p["predicted"])
        return "<div><h4>Predicted vs actual</h4>" + svg + "</div>"
    return ""


def _details(r: ValidationReport) -> str:
    inner = (
        _confusion(r)
        + _residuals(r)
        + _chart(r)
        + (f"<div>{reliability_svg(r.reliability)}</div>" if r.reliability else "")
    )
    return f"<div class='nbd-row'>{inner}</div>" if inner else ""


def _checks(r: ValidationReport) -> str:
    c = r.checks
    if c is None:
        return ""
    out = ["<h4>Data checks</h4><ul>" + "".join(f"<li>{esc(s)}</li>" for s in c.summary()) + "</ul>"]
    odd = [x for x in c.schema if x.status != "ok"]
    if odd:
        rows = [[esc(x.name), esc(x.expected or "-"), esc(x.actual), esc(x.status)] for x in odd]
        out.append(_table(["column", "signature", "data", "status"], rows))
    if c.missing:
        rows = [
            [
                esc(m.name),
                esc(m.count),
                esc(f"{m.fraction:.2%}"),
                esc("-" if m.training is None else f"{m.training:.2%}"),
            ]
            for m in c.missing
        ]
        out.append(_table(["column", "missing", "share", "in training"], rows))
    if c.out_of_range:
        rows = [
            [esc(o.name), esc(o.below), esc(o.above), esc(o.unseen), esc(f"{o.fraction:.2%}")] for o in c.out_of_range
        ]
        table_html = _table(["column", "below min", "above max", "unseen category", "share"], rows)
        out.append(fold(f"Outside the training range ({len(rows)} columns)", table_html, len(rows)))
    return "".join(out)


def _drift(r: ValidationReport) -> str:
    c = r.checks
    if c is None or not c.drift:
        return ""
    flagged = [d for d in c.drift if d.status != "ok"]
    shown = flagged + [d for d in c.drift if d.status == "ok"][: max(MAX_DRIFT_ROWS - len(flagged), 0)]
    rows, classes = [], []
    for d in shown:
        cls = {"drift": "nbd-fail", "watch": "nbd-warn"}.get(d.status, "")
        status = f"<span class='{cls}'>{esc(d.status)}</span>" if cls else esc(d.status)
        rows.append(
            [
                esc(d.name),
                esc(d.kind),
                esc(fmt(d.psi)),
                esc(d.test),
                esc(fmt(d.statistic)),
                esc(fmt(d.p_value)),
                status,
            ]
        )
        classes.append("nbd-worst" if d.status == "drift" else "")
    more = len(c.drift) - len(shown)
    note = f"<p class='nbd-muted'>{esc(f'{more} more features, all ok, are in validation.json.')}</p>" if more else ""
    header = ["feature", "kind", "PSI", "test", "statistic", "p-value", "status"]
    title = f"Drift against the training profile ({len(flagged)} of {len(c.drift)} features flagged)"
    return fold(esc(title), _table(header, rows, classes) + note, len(rows), open_=bool(flagged))


def _slices(r: ValidationReport) -> str:
    out = []
    for t in r.slices:
        names = list(t.slices[0].metrics) if t.slices else []
        header = [t.column, "rows", *names] + ([f"baseline {t.metric}"] if r.baseline else [])
        rows, classes = [], []
        for i, s in enumerate(t.slices):
            label = esc(s.label) + (" <b>(weakest)</b>" if i == t.weakest else "")
            row = [label, esc(s.rows), *(esc(fmt(s.metrics[n])) for n in names)]
            if r.baseline:
                row.append(esc(fmt(s.baseline)))
            rows.append(row)
            classes.append("nbd-worst" if i == t.weakest else "")
        title = f"Slices by {t.column} ({'quantile bins' if t.kind == 'quantile' else 'values'})"
        out.append(fold(esc(title), _table(header, rows, classes), len(rows)))
    return "".join(out)


def _segments(r: ValidationReport) -> str:
    if not r.segments_searched:
        return ""
    head = (f"Weak segments: {r.segments_searched} one- and two-feature segments searched; shown where the model "
            "is markedly worse than on the rest, at a family-wise 5 % level (Bonferroni)")  # fmt: skip
    if not r.segments:
        return f"<h4>Weak segments</h4><p class='nbd-muted'>{esc(head)}: none found.</p>"
    rows = [[esc(s.where), esc(s.rows), esc(fmt(s.value)), _interval((s.low, s.high)), esc(fmt(s.overall))]
            for s in r.segments]  # fmt: skip
    header = ["segment", "rows", r.segments[0].metric, "95% CI", "overall"]
    return f"<h4>Weak segments</h4><p class='nbd-muted'>{esc(head)}.</p>" + _table(header, rows)


def _explain(r: ValidationReport) -> str:
    from nbdeploy.validation.explain_view import explain_html

    return explain_html(r.explanation)


def _notes(r: ValidationReport) -> str:
    if not r.notes:
        return ""
    return "<ul class='nbd-muted'>" + "".join(f"<li>{esc(n)}</li>" for n in r.notes) + "</ul>"


def render(r: ValidationReport) -> str:
    """The whole report as one self-contained HTML block."""
    title = f"Validation of {esc(r.model)}"
    sections = (_banner, _facts, _gates, _metrics, _details, _checks, _drift, _slices, _segments, _explain, _notes)
    return card(title, *(section(r) for section in sections))
