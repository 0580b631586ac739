"""The Explain section as HTML (tables and inline SVG, no script) and as text lines.

>>> html = explain_html(report.explanation)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from nbdeploy.reprs import esc, fmt, signed
from nbdeploy.validation.explain import Dependence, Explanation, Importance
from nbdeploy.validation.svg import BASELINE, PAD, PALETTE, W, _svg

__all__ = ["dependence_svg", "explain_html", "explain_lines", "importance_svg"]

#: Features in the importance table and chart (the rest are in validation.json).
SHOWN = 10
CHART_H = 180


def _scale(lo: float, hi: float, a: float, b: float) -> tuple[float, float]:
    """(offset, factor) mapping [lo, hi] onto [a, b]."""
    span = (hi - lo) or 1.0
    return a - lo * (b - a) / span, (b - a) / span


def importance_svg(items: Sequence[Importance], what: str) -> str:
    """Horizontal bars of the mean worsening with the interval as a whisker; the baseline's
    mean as a grey tick (at the chart's edge when it lies beyond the candidate's scale)."""
    left, right, row = 120, W - 10, 16
    height = 24 + row * len(items)
    values = [v for i in items for v in (i.low, i.high)] + [0.0]  # the baseline's ticks are clipped to this scale
    lo, hi = min(values), max(values)
    off, k = _scale(lo, hi, left, right)
    parts = [f"<title>{esc(f'Permutation importance ({what})')}</title>",
             f"<line x1='{off:.1f}' y1='4' x2='{off:.1f}' y2='{height - 18}' stroke='#d0d7de'/>"]  # fmt: skip
    for n, imp in enumerate(items):
        y = 10 + n * row
        x0, x1 = sorted((off, off + k * imp.mean))
        parts.append(f"<text x='{left - 4}' y='{y + 9}' text-anchor='end'>{esc(imp.feature[:20])}</text>")
        parts.append(f"<rect x='{x0:.1f}' y='{y}' width='{max(x1 - x0, 0.5):.1f}' height='11' fill='{PALETTE[0]}'/>")
        parts.append(f"<line x1='{off + k * imp.low:.1f}' y1='{y + 5.5}' x2='{off + k * imp.high:.1f}' "
                     f"y2='{y + 5.5}' stroke='#24292f'/>")  # fmt: skip
        if imp.baseline is not None:
            bx = off + k * min(max(imp.baseline[0], lo), hi)
            parts.append(f"<line x1='{bx:.1f}' y1='{y - 1}' x2='{bx:.1f}' y2='{y + 12}' stroke='{BASELINE}' "
                         f"stroke-width='2'><title>baseline {esc(fmt(imp.baseline[0]))}</title></line>")  # fmt: skip
    parts.append(f"<text x='{(left + right) / 2:.1f}' y='{height - 4}' text-anchor='middle'>{esc(what)}</text>")
    return _svg("Permutation importance", parts, height)


def dependence_svg(d: Dependence) -> str:
    """ICE lines (thin, grey) and the partial dependence (bold) of one feature."""
    bottom, top = CHART_H - PAD, 10
    xs = list(range(len(d.grid))) if d.kind != "numeric" else [float(v) for v in d.grid]
    ys = [v for line in d.ice for v in line] + d.average
    xo, xk = _scale(min(xs), max(xs), PAD, W - 10)
    yo, yk = _scale(min(ys), max(ys), bottom, top)

    def points(line: Sequence[float]) -> str:
        return " ".join(f"{xo + xk * x:.1f},{yo + yk * v:.1f}" for x, v in zip(xs, line, strict=True))

    box = f"x='{PAD}' y='{top}' width='{W - PAD - 10}' height='{bottom - top}'"
    parts = [f"<title>{esc(f'Partial dependence on {d.feature}')}</title>",
             f"<rect {box} fill='none' stroke='#d0d7de'/>"]  # fmt: skip
    parts += [f"<polyline points='{points(line)}' fill='none' stroke='{BASELINE}' stroke-opacity='0.35'/>"
              for line in d.ice]  # fmt: skip
    parts.append(f"<polyline points='{points(d.average)}' fill='none' stroke='{PALETTE[0]}' stroke-width='2.5'/>")
    for v in (min(ys), max(ys)):
        parts.append(f"<text x='{PAD - 4}' y='{yo + yk * v + 4:.1f}' text-anchor='end'>{esc(f'{v:.3g}')}</text>")
    for i, anchor in ((0, "start"), (len(xs) - 1, "end")):
        label = d.grid[i]
        text = f"{label:.3g}" if isinstance(label, float) else str(label)[:12]
        parts.append(f"<text x='{xo + xk * xs[i]:.1f}' y='{bottom + 12}' text-anchor='{anchor}'>{esc(text)}</text>")
    parts.append(f"<text x='{(PAD + W) / 2:.1f}' y='{CHART_H - 6}' text-anchor='middle'>"
                 f"{esc(d.feature[:30])} \u2192 {esc(d.output)}</text>")  # fmt: skip
    return _svg(f"Partial dependence on {d.feature}", parts, CHART_H)


def _importance_table(e: Explanation) -> str:
    header = ["feature", "importance", "95% interval"] + (["baseline", "change"] if e.baseline else [])
    body = []
    for imp in e.importances[:SHOWN]:
        cells = [esc(imp.feature), esc(fmt(imp.mean)), esc(f"[{fmt(imp.low)}, {fmt(imp.high)}]")]
        if e.baseline:
            b = imp.baseline
            apart = b is not None and (b[2] < imp.low or b[1] > imp.high)  # the intervals do not overlap
            change = esc(signed(imp.mean - b[0])) if b else "-"
            cells += [esc(fmt(b[0])) if b else "-", f"<b>{change}</b>" if apart else change]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _how(e: Explanation) -> str:
    sample = f"a random subsample of {e.rows} of the {e.of_rows} rows" if e.rows < e.of_rows else f"all {e.rows} rows"
    text = (f"Permutation importance: the {e.score} when a feature's values are shuffled, on {sample} "
            f"(seed {e.seed}), {e.repeats} shuffles each; the interval is the mean \u00b1 Student's t over the "
            "shuffles, so it covers the shuffling's noise, not the sampling of the data.")  # fmt: skip
    if e.baseline:
        text += (f" The baseline {e.baseline} is scored on the same rows and shuffles; a change in bold: the two "
                 "intervals do not overlap.")  # fmt: skip
    return text


def _shap(e: Explanation) -> str:
    s = e.shap
    if not s:
        return ""
    rows = "".join(f"<tr><td>{esc(f['feature'])}</td><td>{esc(fmt(f['mean_abs']))}</td></tr>" for f in s["features"])
    what = f"{s['explainer']} on {s['rows']} rows; output: {s['output']}" + (
        f" per class ({', '.join(s['classes'])})" if s.get("classes") else "")  # fmt: skip
    check = "no output of the model matched the values' sum"
    if s["adds_up_to"] != "none":
        check = f"values plus the expected value give its {s['adds_up_to']} to {s['max_error']:.1g} on every row"
    return (f"<h5>SHAP</h5><p class='nbd-muted'>{esc(what)}; {esc(check)}.</p><table><thead><tr><th>feature</th>"
            f"<th>mean |SHAP|</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip


def explain_html(e: Explanation | None) -> str:
    if e is None:
        return ""
    out = ["<h4>Explain</h4>"]
    if e.importances:
        out.append(f"<p class='nbd-muted'>{esc(_how(e))}</p>")
        chart = importance_svg(e.importances[:SHOWN], e.score)
        out.append(f"<div class='nbd-row'><div>{_importance_table(e)}</div><div>{chart}</div></div>")
        if len(e.importances) > SHOWN:
            more = len(e.importances) - SHOWN
            out.append(f"<p class='nbd-muted'>{more} more features are in validation.json.</p>")
    if e.dependence:
        out.append("<h5>Partial dependence (bold) and ICE lines (grey) of the top features</h5>")
        charts = "".join(f"<div>{dependence_svg(d)}</div>" for d in e.dependence)
        out.append(f"<div class='nbd-row'>{charts}</div>")
    out.append(_shap(e))
    out += [f"<p class='nbd-warn'>\u26a0 {esc(w)}</p>" for w in e.warnings]
    return "".join(out)


def explain_lines(e: Explanation | None, top: int = 5) -> list[str]:
    """Two or three lines for the text report."""
    if e is None:
        return []
    lines = []
    if e.importances:
        shown = ", ".join(f"{i.feature} {fmt(i.mean)} [{fmt(i.low)}, {fmt(i.high)}]" for i in e.importances[:top])
        lines.append(f"explain ({e.score} when shuffled, {e.rows} rows): {shown}")
    if e.shap:
        strongest = e.shap["features"][:top]
        lines.append("shap (mean |value|): " + ", ".join(f"{f['feature']} {fmt(f['mean_abs'])}" for f in strongest))
    lines += [f"explain warning: {w}" for w in e.warnings]
    return lines
