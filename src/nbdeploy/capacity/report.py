"""The result of a load test: a table of levels, the throughput/latency curve as inline SVG,
the capacity within the gates, and a text form that fits 100 columns.

>>> r = LoadTestReport(name="cancer", ref="cancer/1", target="local", seconds=10.0, rows_per_request=1,
...     bodies=1, peak_rss_mb=150.0, best=None, gates=[], when=0.0,
...     levels=[{"connections": 1, "rps": 500.0, "p50_ms": 1.8, "p99_ms": 3.0, "error_rate": 0.0,
...              "cpu_s_per_1k": 0.9, "requests": 5000, "errors": 0}])
>>> print(r.text().splitlines()[0])
load test of cancer (cancer/1): 1 level of 10 s, 1 row per request
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nbdeploy.reprs import card, esc, fit, fmt, page, table

__all__ = ["LoadTestReport", "curve_svg"]

_W, _H, _PAD = 420, 220, 44


def curve_svg(levels: list[dict[str, Any]]) -> str:
    """Throughput (bars, left axis) and p99 latency (line, right axis) per connection count."""
    if not levels:
        return ""
    n = len(levels)
    top_rps = max(lv["rps"] for lv in levels) or 1.0
    top_ms = max(lv["p99_ms"] for lv in levels) or 1.0
    step = (_W - 2 * _PAD) / n
    parts = [f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#8c959f"/>']
    points = []
    for i, lv in enumerate(levels):
        x = _PAD + step * (i + 0.5)
        h = (_H - 2 * _PAD) * lv["rps"] / top_rps
        parts.append(f'<rect x="{x - step * 0.3:.1f}" y="{_H - _PAD - h:.1f}" width="{step * 0.6:.1f}" '
                     f'height="{h:.1f}" fill="#0969da" opacity="0.7"><title>{lv["rps"]:.0f} req/s</title></rect>')
        parts.append(f'<text x="{x:.1f}" y="{_H - _PAD + 14}" font-size="10" text-anchor="middle">'
                     f'{lv["connections"]}</text>')
        points.append(f"{x:.1f},{_H - _PAD - (_H - 2 * _PAD) * lv['p99_ms'] / top_ms:.1f}")
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#cf222e" stroke-width="2"/>')
    parts += [
        f'<text x="{_PAD}" y="14" font-size="11" fill="#0969da">req/s (bars, top {top_rps:.0f})</text>',
        f'<text x="{_W - _PAD}" y="14" font-size="11" fill="#cf222e" text-anchor="end">'
        f"p99 ms (line, top {top_ms:.3g})</text>",
        f'<text x="{_W / 2}" y="{_H - 8}" font-size="10" text-anchor="middle">connections</text>',
    ]  # fmt: skip
    return (f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
            f'aria-label="throughput and p99 latency per connection count">{"".join(parts)}</svg>')  # fmt: skip


@dataclass
class LoadTestReport:
    """What a load test measured (one entry of ``levels`` per connection count)."""

    name: str
    ref: str
    target: str
    levels: list[dict[str, Any]]
    seconds: float
    rows_per_request: int
    bodies: int
    peak_rss_mb: float | None
    best: dict[str, Any] | None
    gates: list[dict[str, Any]]
    when: float
    run_id: str | None = field(default=None)
    replicas: int = 1  # the servers measured together (a Ray deployment's replicas): figures are their sum
    idle_cpu_pct: float | None = None  # their CPU with no traffic, before the first level (% of a core)

    @property
    def passed(self) -> bool | None:
        """``None`` without gates; else whether every gate passed."""
        return all(g["passed"] for g in self.gates) if self.gates else None

    @property
    def failed(self) -> list[str]:
        return [g["gate"] for g in self.gates if not g["passed"]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def _verdict(self) -> str:
        if self.passed is None:
            return "no gates"
        return "PASSED" if self.passed else "FAILED on " + ", ".join(self.failed)

    def text(self) -> str:
        n = len(self.levels)
        rows = "row" if self.rows_per_request == 1 else "rows"
        lines = [f"load test of {self.name} ({self.ref}): {n} level{'s' * (n != 1)} of {self.seconds:g} s, "
                 f"{self.rows_per_request} {rows} per request"]  # fmt: skip
        lines.append(f"{'connections':>11}  {'req/s':>9}  {'p50 ms':>8}  {'p99 ms':>8}  {'errors':>7}  "
                     f"{'CPU s/1k pred':>13}")  # fmt: skip
        for lv in self.levels:
            lines.append(f"{lv['connections']:>11}  {lv['rps']:>9.1f}  {fmt(lv.get('p50_ms')):>8}  "
                         f"{fmt(lv.get('p99_ms')):>8}  {100 * lv['error_rate']:>6.2f}%  "
                         f"{fmt(lv.get('cpu_s_per_1k')):>13}")  # fmt: skip
        if self.best is not None:
            within = "within the gates" if self.gates else "highest throughput"
            lines.append(f"capacity ({within}): {self.best['rps']:.1f} req/s at {self.best['connections']} "
                         f"connections, p99 {fmt(self.best.get('p99_ms'))} ms")  # fmt: skip
        elif self.gates:
            lines.append("capacity within the gates: none of the levels meets them")
        lines.append(f"peak server memory: {fmt(self.peak_rss_mb)} MB; CPU with no traffic: {fmt(self.idle_cpu_pct)} %")
        for g in self.gates:
            lines.append(f"  {'pass' if g['passed'] else 'FAIL'}  {g['gate']}  (measured {fmt(g['value'])})")
        lines.append(f"verdict: {self._verdict()}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return fit(self.text())

    def _body(self) -> str:
        rows = [(lv["connections"], f"{lv['rps']:.1f}", fmt(lv.get("p50_ms")), fmt(lv.get("p99_ms")),
                 f"{100 * lv['error_rate']:.2f}%", fmt(lv.get("cpu_s_per_1k"))) for lv in self.levels]  # fmt: skip
        levels = table(("connections", "req/s", "p50 ms", "p99 ms", "errors", "CPU s / 1k predictions"), rows)
        verdicts = [(g["gate"], fmt(g["value"]), "pass" if g["passed"] else "FAIL") for g in self.gates]
        gates = table(("gate", "measured", "result"), verdicts)
        best = (f"<p>Capacity: <b>{self.best['rps']:.1f} req/s</b> at {esc(self.best['connections'])} connections"
                f"{' within the gates' if self.gates else ''}.</p>") if self.best else ""  # fmt: skip
        memory = (f"<p>Peak server memory: {esc(fmt(self.peak_rss_mb))} MB. CPU with no traffic: "
                  f"{esc(fmt(self.idle_cpu_pct))} % of a core.</p>")
        return curve_svg(self.levels) + levels + best + memory + (gates if self.gates else "")

    def _repr_html_(self) -> str:
        title = f"Load test of {esc(self.name)} ({esc(self.ref)}): {esc(self._verdict())}"
        return card(title, self._body())

    def html_page(self) -> str:
        return page(f"Load test of {self.ref}", self._repr_html_())
