"""Alert rules over monitoring windows, with hysteresis and webhooks.

A rule is ``METRIC OP NUMBER`` (``p95_ms>50``, ``error_rate>0.01``, ``psi>0.25``,
``accuracy<0.9``). Each evaluation reads the metric from one window; after ``k``
consecutive breaches the rule fires, after ``k`` consecutive clean evaluations it resolves.
A window without data for the metric (no labels yet, no traffic) changes nothing. Fired and
resolved events are appended to a JSON-lines file; a rule's optional webhook gets each
event as a JSON POST from a background thread, retried with backoff, never blocking serving.

>>> rule = Rule.parse("p95_ms>50", k=2)
>>> [rule.observe(v) for v in (60, 70, 10, 10)]
[None, 'fired', None, 'resolved']
"""

from __future__ import annotations

import json
import operator
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nbdeploy._files import append_private
from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.spec import DEFAULT_ALERT_K

__all__ = ["METRICS", "PRICED", "AlertBook", "Rule", "RuleError", "attach_alerts", "redact_url", "rule_specs",
           "with_alert_window"]  # fmt: skip


class RuleError(InvalidInputError):
    """An alert rule that does not parse (an :class:`~nbdeploy.errors.InvalidInputError`)."""

    docs = Docs.ALERTS


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_RULE = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$")


def _metric(window: Mapping[str, Any], key: str) -> float | None:
    value = window.get(key)
    return None if value is None else float(value)


def _resource(window: Mapping[str, Any], key: str) -> float | None:
    return _metric(window.get("resources") or {}, key)


METRICS: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "rps": lambda w: _metric(w, "rps"),
    "requests": lambda w: _metric(w, "requests"),
    "p50_ms": lambda w: _metric(w.get("latency_ms", {}), "p50"),
    "p95_ms": lambda w: _metric(w.get("latency_ms", {}), "p95"),
    "p99_ms": lambda w: _metric(w.get("latency_ms", {}), "p99"),
    "error_rate": lambda w: _metric(w, "error_rate") if w.get("requests") else None,
    "psi": lambda w: _metric(w, "drift_max_psi"),
    "drifted_features": lambda w: float(len(w.get("drifted_features", []))) if w.get("rows") else None,
    "accuracy": lambda w: _metric(w, "accuracy"),
    "est_accuracy": lambda w: _metric(w, "est_accuracy"),  # before labels: monitoring/estimate.py
    "rmse": lambda w: _metric(w, "rmse"),
    # what serving costs (monitoring/resources.py); cost_* need a core-hour price
    **{key: partial(_resource, key=key)
       for key in ("cpu_pct", "rss_mb", "cpu_s_per_1k", "predictions_per_cpu_s", "cost_per_1m", "cost_per_day")},
}  # fmt: skip
PRICED = ("cost_per_1m", "cost_per_day")


@dataclass
class Rule:
    """One alert rule and its hysteresis state."""

    text: str
    metric: str
    op: str
    threshold: float
    k: int = DEFAULT_ALERT_K
    webhook: str | None = None
    firing: bool = False
    streak: int = 0
    last_value: float | None = None

    @classmethod
    def parse(cls, text: str, k: int = DEFAULT_ALERT_K, webhook: str | None = None) -> Rule:
        """Parse ``METRIC OP NUMBER``; :class:`RuleError` names the metrics when it does not."""
        match = _RULE.fullmatch(text or "")
        if not match:
            raise RuleError(
                f"Malformed alert rule {text!r}: expected METRIC OP NUMBER with OP one of >= > <= <, "
                "for example p95_ms>50."
            )
        metric, op, number = match.groups()
        if metric not in METRICS:
            raise RuleError(f"Unknown alert metric {metric!r} in {text!r}; metrics: {', '.join(METRICS)}.")
        if k < 1:
            raise RuleError(f"The hysteresis count must be at least 1, not {k}.")
        return cls(text=text.replace(" ", ""), metric=metric, op=op, threshold=float(number), k=k, webhook=webhook)

    def observe(self, value: float | None) -> str | None:
        """Feed one evaluation; returns ``"fired"``, ``"resolved"`` or ``None``."""
        self.last_value = value
        if value is None:
            return None
        breach = _OPS[self.op](value, self.threshold)
        if breach != self.firing:
            self.streak += 1
        else:
            self.streak = 0
        if self.streak >= self.k:
            self.firing, self.streak = breach, 0
            return "fired" if breach else "resolved"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.text, "metric": self.metric, "k": self.k, "webhook": redact_url(self.webhook),
            "firing": self.firing, "value": self.last_value, "streak": self.streak,
        }  # fmt: skip


def redact_url(url: str | None) -> str | None:
    """``https://hooks.example.com/…``: a webhook's path and query carry its secret, so what
    is shown (``/monitor``, ``alerts``) keeps the scheme and host only."""
    if not url:
        return url
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    hidden = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def rule_specs(rules: Sequence[str], webhook: str | None, k: int) -> list[dict[str, Any]]:
    """The spec entries of ``rules``, checked where they are given (a typo fails in the kernel,
    not in the server): ``[{"rule": "p95_ms>50", "k": 3, "webhook": None}]``."""
    return [{"rule": Rule.parse(text, k=k, webhook=webhook).text, "k": k, "webhook": webhook} for text in rules]


@dataclass
class AlertBook:
    """The rules of one deployment, their events, and the webhook sender."""

    path: Path | None = None
    rules: list[Rule] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 5
    backoff_s: float = 0.5
    window: str | None = None  # the window the rules are evaluated on (the deployment's alert window)
    evaluated_at: float | None = None  # when they last were

    def __post_init__(self) -> None:
        self._outbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=1000)
        self._sender: threading.Thread | None = None
        self.delivered: list[dict[str, Any]] = []
        if self.path is not None and self.path.exists():
            for line in self.path.read_bytes().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:  # a torn or damaged line (undecodable bytes included)
                    continue
                if isinstance(event, dict):
                    self.events.append(event)

    def set_rules(self, specs: Sequence[Mapping[str, Any]]) -> None:
        """Replace the rules (``[{"rule": "p95_ms>50", "k": 3, "webhook": None}, ...]``)."""
        self.rules = [Rule.parse(s["rule"], int(s.get("k", DEFAULT_ALERT_K)), s.get("webhook")) for s in specs]

    def evaluate(self, window: Mapping[str, Any], now: float | None = None) -> list[dict[str, Any]]:
        """Evaluate every rule on one window; returns (and records) the new events."""
        new = []
        for rule in self.rules:
            value = METRICS[rule.metric](window)
            change = rule.observe(value)
            if change:
                event = {"ts": now or time.time(), "rule": rule.text, "state": change, "value": value}
                new.append(event)
                self._record(event, rule.webhook)
        self.evaluated_at = now or time.time()  # once every rule was read
        return new

    def record(self, event: dict[str, Any], webhook: str | None = None) -> None:
        """Record an event of another source (an experiment's end) beside the rules' own: it is
        logged, shown in the panel's list of events, and sent to ``webhook``."""
        self._record(event, webhook)

    def _record(self, event: dict[str, Any], webhook: str | None) -> None:
        self.events.append(event)
        del self.events[:-200]
        if self.path is not None:
            append_private(self.path, json.dumps(event) + "\n")
        if webhook:
            try:
                self._outbox.put_nowait((webhook, event))
            except queue.Full:
                return
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(target=self._send_loop, name="webhooks", daemon=True)
                self._sender.start()

    def _send_loop(self) -> None:
        import httpx

        while True:
            try:
                url, event = self._outbox.get(timeout=5)
            except queue.Empty:
                return
            delay = self.backoff_s
            for attempt in range(1, self.retries + 1):
                try:
                    if httpx.post(url, json=event, timeout=5).status_code < 400:
                        self.delivered.append({**event, "attempts": attempt})
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(delay)
                delay *= 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.to_dict() for r in self.rules],
            "firing": [r.text for r in self.rules if r.firing],
            "events": self.events[-50:],
            "window": self.window,
            "evaluated_at": self.evaluated_at,
        }

    def view(self, windows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """:meth:`to_dict` beside a ``/monitor`` snapshot: each rule also has its metric on the
        snapshot's own alert window (``snapshot_value``), so the panel's alert rows and the
        tables beside them are one reading; ``value`` and the state stay the last evaluation's."""
        doc = self.to_dict()
        window = windows.get(self.window or "")
        for rule, shown in zip(self.rules, doc["rules"], strict=True):
            shown["snapshot_value"] = METRICS[rule.metric](window) if window is not None else None
        return doc


def with_alert_window(names: list[str] | None, book: AlertBook) -> list[str] | None:
    """The windows a snapshot computes: those asked (``None``: all) and the alert window."""
    if names is None or book.window is None or book.window in names:
        return names
    return [*names, book.window]


def attach_alerts(doc: dict[str, Any], book: AlertBook, asked: list[str] | None) -> dict[str, Any]:
    """Put the alert book beside the snapshot ``doc`` (:meth:`AlertBook.view`), then drop the
    alert window from it when it was computed only for that."""
    doc["alerts"] = book.view(doc.get("windows", {}))
    if asked is not None:
        doc["windows"] = {w: v for w, v in doc.get("windows", {}).items() if w in asked}
    return doc
