"""One-screen text of a ``/monitor`` document: the widget's ``text/plain``, ``nbdeploy
monitor`` in a terminal, and CI logs all read the same lines.

>>> print(render_text(doc, "1m"))   # doctest: +SKIP
cancer (cancer/1, version 1)  up 42 s  window 1m
requests 120 (2.0/s)  p50 4.1 ms  p95 6.3 ms  p99 8.0 ms  errors 0.0%
...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbdeploy.reprs import fit

__all__ = ["alert_lines", "render_alerts", "render_text", "resource_line", "variant_distribution_lines"]

_BARS = " ▁▂▃▄▅▆▇█"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def spark(values: list[float | None]) -> str:
    """A sparkline of ``values`` (gaps as spaces)."""
    nums = [v for v in values if v is not None]
    top = max(nums, default=0.0) or 1.0
    return "".join(" " if v is None else _BARS[min(8, round(8 * v / top))] for v in values)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def resource_line(r: Mapping[str, Any]) -> str:
    """CPU, memory and cost of a window's ``resources`` (monitoring/resources.py) on one line."""
    line = (f"CPU {_num(r.get('cpu_pct'), '.1f')}% of a core  RSS {_num(r.get('rss_mb'), '.0f')} MB  "
            f"{_num(r.get('cpu_s_per_1k'), '.3g')} CPU s / 1k predictions")  # fmt: skip
    if r.get("core_hour_price") is not None:
        line += (f"  cost {_num(r.get('cost_per_1m'), '.3g')} / 1M predictions, "
                 f"{_num(r.get('cost_per_day'), '.3g')} / day")  # fmt: skip
    return line


def render_text(doc: Mapping[str, Any], window: str = "1m", status: str = "live") -> str:
    """Render a ``/monitor`` document for one window as a few aligned lines."""
    win = doc.get("windows", {}).get(window)
    up = doc.get("uptime_s") or 0
    head = f"{doc.get('name')} ({doc.get('ref')}, version {doc.get('version')})  up {up:.0f} s"
    lines = [f"{head}  window {window}  [{status}]"]
    if not win:
        return "\n".join([*lines, "no data yet"])
    if not doc.get("total_requests"):
        lines.append(f"no traffic yet: try %deploy predict {doc.get('name')} --data X.head()")
    lat = win["latency_ms"]
    lines.append(
        f"requests {win['requests']} ({win['rps']:.1f}/s)  p50 {_ms(lat['p50'])}  p95 {_ms(lat['p95'])}  "
        f"p99 {_ms(lat['p99'])}  errors {100 * win['error_rate']:.1f}%  total {doc.get('total_requests', 0)}"
    )
    if win.get("resources"):
        lines.append(resource_line(win["resources"]))
    procs = doc.get("processes") or []
    if len(procs) > 1:  # a challenger's process beside the server: each one's share
        lines.append("processes  " + "  ".join(f"{p['role']} (pid {p['pid']}) CPU {_num(p.get('cpu_pct_1m'), '.0f')}% "
                                                f"RSS {_num(p.get('rss_mb'), '.0f')} MB "
                                                f"{_num(p.get('predictions_per_cpu_s'), '.0f')} pred/CPU s"
                                                for p in procs))  # fmt: skip
    series = doc.get("series", {})
    if series:
        lines.append(f"traffic  |{spark(series.get('rps', []))}|")
        lines.append(f"p95      |{spark(series.get('p95_ms', []))}|")
    preds = win.get("predictions", {})
    if preds.get("kind") == "classes" and preds.get("counts"):
        total = sum(preds["counts"].values())
        lines.append("predictions  " + "  ".join(f"{k}: {100 * v / total:.0f}%" for k, v in preds["counts"].items()))
    quality = []
    if win.get("accuracy") is not None:
        quality.append(f"accuracy {win['accuracy']:.3f}")
    if win.get("rmse") is not None:
        quality.append(f"rmse {win['rmse']:.4g}")
    if quality:
        lines.append(f"live ({win.get('labelled', 0)} labelled rows)  " + "  ".join(quality))
    if win.get("est_accuracy") is not None:
        lo, hi = win["est_accuracy_ci"]
        lines.append(f"estimated accuracy {win['est_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {win['est_rows']} rows "
                     "(from the model's probabilities, before labels)")  # fmt: skip
    drifted = win.get("drifted_features", [])
    worst = sorted((d for d in win.get("drift", []) if d.get("psi") is not None), key=lambda d: -d["psi"])[:3]
    if worst:
        top = ", ".join(f"{d['name']} {d['psi']:.2f}" for d in worst)
        lines.append(f"drift: {len(drifted)} feature(s) drifted; highest PSI: {top}")
    for rid, replica in sorted(doc.get("replicas", {}).items()):
        rw = replica.get("windows", {}).get(window) or {}
        lines.append(
            f"replica {rid} (pid {replica.get('pid')}, node {str(replica.get('node', ''))[:12]})  "
            f"requests {rw.get('requests', 0)}  p95 {_ms((rw.get('latency_ms') or {}).get('p95'))}  "
            f"errors {100 * rw.get('error_rate', 0.0):.1f}%"
            + (f"  CPU {_num(rw['resources']['cpu_pct'], '.0f')}%" if rw.get("resources") else "")
        )
    lines += _experiment_lines(doc.get("experiment"))
    lines += alert_lines(doc)
    return fit("\n".join(lines))


def alert_lines(doc: Mapping[str, Any]) -> list[str]:
    """Each rule's state (from its last evaluation, and when that was) and its metric on this
    same snapshot, over the alert window: the figure beside the tables of the same document."""
    alerts = doc.get("alerts", {})
    rules, firing = alerts.get("rules", []), set(alerts.get("firing", []))
    if not rules:
        return ["alerts: no rules"]
    when, now = alerts.get("evaluated_at"), doc.get("now")
    timed = isinstance(when, int | float) and isinstance(now, int | float)
    state = f"states from the evaluation {now - when:.0f} s ago" if timed else "states from the last evaluation"
    lines = [f"alerts ({state}; values on this snapshot, over {alerts.get('window') or '-'}):"]
    for r in rules:
        old = "snapshot_value" not in r  # a server of an earlier nbdeploy: its last evaluation's value
        value = r.get("value") if old else r.get("snapshot_value")
        shown = ("no data" if value is None else f"{value:.4g}") + (" (last evaluation)" if old else "")
        lines.append(f"  {r['rule']:<24} {'FIRING' if r['rule'] in firing else 'ok':<7} {shown}")
    return lines


def _experiment_lines(exp: Mapping[str, Any] | None) -> list[str]:
    """The variants of a running experiment side by side, since it began."""
    if not exp:
        return []
    stats = exp.get("stats") or {}

    def figure(metric: str, variant: str, digits: str) -> str:
        value = ((stats.get(metric) or {}).get("value") or {}).get(variant)
        return "-" if value is None else format(value, digits)

    lines = [f"{exp['kind']} of {exp['challenger']['ref']} ({exp['percent']:g}%), since it began:"]
    for variant, c in exp.get("counts", {}).items():
        answered, failed = c.get("requests", 0) + c.get("shadowed", 0), c.get("errors", 0) + c.get("shadow_errors", 0)
        lines.append(
            f"  {variant:<10} requests {answered}  failures {failed}  "
            f"latency {figure('latency_ms', variant, '.1f')} ms  p95 {figure('p95_ms', variant, '.1f')} ms  "
            f"accuracy {figure('accuracy', variant, '.3f')}"
        )
    agreement = exp.get("agreement") or {}
    if agreement.get("rows"):
        lines.append(f"  agreement {100 * agreement['rate']:.1f}% of {agreement['rows']} rows")
    return lines + variant_distribution_lines(exp)


def shares(predictions: Mapping[str, Any] | None) -> str:
    """A prediction distribution in a few characters: the top classes' shares, or a sparkline."""
    if not predictions or not predictions.get("counts"):
        return "-"
    counts = predictions["counts"]
    if predictions.get("kind") == "classes":
        total = sum(counts.values()) or 1
        top = sorted(counts.items(), key=lambda item: -item[1])[:3]
        return " ".join(f"{name[:12]} {100 * n / total:.0f}%" for name, n in top)
    return f"|{spark(list(counts))}|"


def variant_distribution_lines(exp: Mapping[str, Any]) -> list[str]:
    """Per variant since the experiment began: what it predicted, how far its inputs drifted
    from the champion's training profile, and a challenger's prediction PSI against the champion."""
    lines = []
    for variant, d in (exp.get("distributions") or {}).items():
        psi, vs = d.get("drift_max_psi"), d.get("prediction_psi")
        line = f"  {variant:<10} predictions {shares(d.get('predictions'))}"
        line += f"  input drift PSI {psi:.3f}" if psi is not None else ""
        lines.append(line + (f"  predictions vs champion PSI {vs:.3f}" if vs is not None else ""))
    return lines


def render_alerts(alerts: Mapping[str, Any]) -> str:
    """Rules with their state and value, then the recent events."""
    firing = set(alerts.get("firing", []))
    lines = [
        f"{r['rule']:<24} {'FIRING' if r['rule'] in firing else 'ok':<7} "
        f"value {'no data yet' if r.get('value') is None else format(r['value'], '.4g')}  k={r.get('k')}"
        + (f"  webhook {r['webhook']}" if r.get("webhook") else "")
        for r in alerts.get("rules", [])
    ] or ["no alert rules"]
    lines += [
        f"event: {e['rule']} {e['state']} at {e['ts']:.0f} (value {e.get('value')})"
        for e in alerts.get("events", [])[-10:]
    ]
    return "\n".join(lines)
