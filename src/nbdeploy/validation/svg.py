"""Small inline SVG charts for the report: a ROC curve, a reliability curve and predicted-vs-actual.

Static, no script, no external reference (not even an ``xmlns`` URL: HTML5 does not need
one inline), well-formed XML, every text escaped.

>>> svg = roc_svg([("1", [0.0, 0.2, 1.0], [0.0, 0.9, 1.0])])
>>> svg.startswith("<svg") and "http" not in svg
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nbdeploy.reprs import esc

__all__ = ["predicted_vs_actual_svg", "reliability_svg", "roc_svg"]

W, H, PAD = 300, 240, 36
PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#bf3989", "#57606a")
BASELINE = "#8c959f"


def _x(u: float) -> float:
    return PAD + u * (W - PAD - 10)


def _y(v: float) -> float:
    return H - PAD - v * (H - PAD - 10)


def _frame(title: str, x_label: str, y_label: str, lo: float, hi: float) -> list[str]:
    parts = [
        f"<title>{esc(title)}</title>",
        f"<rect x='{PAD}' y='10' width='{W - PAD - 10}' height='{H - PAD - 10}' fill='none' stroke='#d0d7de'/>",
    ]
    for t in (0.0, 0.5, 1.0):
        value = lo + t * (hi - lo)
        parts.append(f"<text x='{_x(t):.1f}' y='{H - PAD + 14}' text-anchor='middle'>{esc(f'{value:.3g}')}</text>")
        parts.append(f"<text x='{PAD - 4}' y='{_y(t) + 4:.1f}' text-anchor='end'>{esc(f'{value:.3g}')}</text>")
    parts.append(f"<text x='{_x(0.5):.1f}' y='{H - 4}' text-anchor='middle'>{esc(x_label)}</text>")
    parts.append(
        f"<text x='12' y='{_y(0.5):.1f}' text-anchor='middle' transform='rotate(-90 12 {_y(0.5):.1f})'>"
        f"{esc(y_label)}</text>"
    )
    return parts


def _svg(title: str, parts: list[str], height: int = H) -> str:
    return (
        f"<svg class='nbd-chart' width='{W}' height='{height}' viewBox='0 0 {W} {height}' role='img' "
        f"aria-label='{esc(title)}' font-size='10' font-family='sans-serif'>{''.join(parts)}</svg>"
    )


def _polyline(xs: Sequence[float], ys: Sequence[float], color: str, dashed: bool = False) -> str:
    points = " ".join(f"{_x(float(a)):.1f},{_y(float(b)):.1f}" for a, b in zip(xs, ys, strict=True))
    dash = " stroke-dasharray='4 3'" if dashed else ""
    return f"<polyline points='{points}' fill='none' stroke='{color}' stroke-width='1.5'{dash}/>"


def roc_svg(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    baseline: Sequence[tuple[str, Sequence[float], Sequence[float]]] = (),
) -> str:
    """ROC curves (one per class for one-vs-rest), the baseline's dashed in grey."""
    parts = _frame("ROC curve", "false positive rate", "true positive rate", 0.0, 1.0)
    parts.append(_polyline([0, 1], [0, 1], "#d0d7de", dashed=True))
    for _, fpr, tpr in baseline:
        parts.append(_polyline(fpr, tpr, BASELINE, dashed=True))
    legend = []
    for i, (label, fpr, tpr) in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        parts.append(_polyline(fpr, tpr, color))
        legend.append((f"class {label}" if len(curves) > 1 else "model", color, False))
    if baseline:
        legend.append(("baseline", BASELINE, True))
    for i, (text, color, dashed) in enumerate(legend[:8]):
        y = _y(0.05) - 12 * (len(legend[:8]) - 1 - i)
        dash = " stroke-dasharray='4 3'" if dashed else ""
        parts.append(
            f"<line x1='{_x(0.55):.1f}' y1='{y:.1f}' x2='{_x(0.62):.1f}' y2='{y:.1f}' "
            f"stroke='{color}' stroke-width='1.5'{dash}/>"
        )
        parts.append(f"<text x='{_x(0.64):.1f}' y='{y + 3:.1f}'>{esc(text)}</text>")
    return _svg("ROC curve", parts)


def predicted_vs_actual_svg(y: np.ndarray, pred: np.ndarray, max_points: int = 400, seed: int = 0) -> str:
    """A scatter of predictions against true values (a seeded sample), with the diagonal."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    if y.size > max_points:
        keep = np.random.default_rng(seed).choice(y.size, max_points, replace=False)
        y, pred = y[keep], pred[keep]
    lo = float(min(y.min(), pred.min())) if y.size else 0.0
    hi = float(max(y.max(), pred.max())) if y.size else 1.0
    span = (hi - lo) or 1.0
    parts = _frame("Predicted vs actual", "actual", "predicted", lo, lo + span)
    parts.append(_polyline([0, 1], [0, 1], "#d0d7de", dashed=True))
    for a, b in zip((y - lo) / span, (pred - lo) / span, strict=True):
        parts.append(f"<circle cx='{_x(a):.1f}' cy='{_y(b):.1f}' r='2' fill='{PALETTE[0]}' fill-opacity='0.5'/>")
    return _svg("Predicted vs actual", parts)


def reliability_svg(curve: Sequence[dict[str, float]]) -> str:
    """Accuracy against mean confidence per confidence bin (a dot's area: its rows), with the
    diagonal a calibrated model follows."""
    parts = _frame("Reliability curve", "confidence (top class)", "accuracy", 0.0, 1.0)
    parts.append(_polyline([0, 1], [0, 1], "#d0d7de", dashed=True))
    if curve:
        parts.append(_polyline([c["confidence"] for c in curve], [c["accuracy"] for c in curve], PALETTE[0]))
    most = max((c["rows"] for c in curve), default=1)
    for c in curve:
        r = 2 + 4 * (c["rows"] / most) ** 0.5
        parts.append(f"<circle cx='{_x(c['confidence']):.1f}' cy='{_y(c['accuracy']):.1f}' r='{r:.1f}' "
                     f"fill='{PALETTE[0]}'><title>{int(c['rows'])} rows"
                     "</title></circle>")  # fmt: skip
    return _svg("Reliability curve", parts)
