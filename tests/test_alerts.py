"""Alert rules: grammar, hysteresis, events on disk, webhooks to a real HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from nbdeploy.monitoring.alerts import AlertBook, Rule


def test_hysteresis_fires_after_k_breaches_and_resolves_after_k_clean() -> None:
    rule = Rule.parse("p95_ms > 50", k=3)
    values = [60, 70, 10, 60, 60, 60, 40, None, 40, 99, 40, 40]
    got = [rule.observe(v) for v in values]
    assert got == [None, None, None, None, None, "fired", None, None, None, None, None, None]
    assert rule.firing
    # 99 broke the clean run; the two 40s after it and one more make three: resolved
    assert [rule.observe(v) for v in (40, 40)] == ["resolved", None]


def test_k_of_one_follows_every_change() -> None:
    rule = Rule.parse("accuracy<0.9", k=1)
    assert [rule.observe(v) for v in (0.95, 0.8, 0.8, 0.91, None, 0.5)] == [
        None,
        "fired",
        None,
        "resolved",
        None,
        "fired",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "p95_ms=>50",
            "Malformed alert rule 'p95_ms=>50': expected METRIC OP NUMBER with OP one of >= > <= <, "
            "for example p95_ms>50.",
        ),
        (
            "p42>1",
            "Unknown alert metric 'p42' in 'p42>1'; metrics: rps, requests, p50_ms, p95_ms, p99_ms, "
            "error_rate, psi, drifted_features, accuracy, est_accuracy, rmse, cpu_pct, rss_mb, cpu_s_per_1k, "
            "predictions_per_cpu_s, cost_per_1m, cost_per_day.",
        ),
    ],
)
def test_rule_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Rule.parse(text)
    assert str(err.value) == message


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_first = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
        else:
            _Hook.received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.mark.alone  # times one evaluation (50 ms at most): no other test's load beside it
def test_events_are_recorded_and_posted_with_retries(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        book = AlertBook(tmp_path / "alerts.jsonl", backoff_s=0.05)
        book.set_rules([{"rule": "error_rate>0.1", "k": 2, "webhook": url}])
        window = {"requests": 10, "error_rate": 0.5}
        started = time.monotonic()
        events = [book.evaluate(window, now=float(i)) for i in range(2)]
        assert time.monotonic() - started < 0.05  # evaluation never waits for the webhook
        assert events == [[], [{"ts": 1.0, "rule": "error_rate>0.1", "state": "fired", "value": 0.5}]]
        book.evaluate({"requests": 10, "error_rate": 0.0}, now=2.0)
        book.evaluate({"requests": 10, "error_rate": 0.0}, now=3.0)
        deadline = time.monotonic() + 5
        while len(_Hook.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e["state"] for e in _Hook.received] == ["fired", "resolved"]
        assert book.delivered[0]["attempts"] == 2  # the first POST got a 503 and was retried
        lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
        assert [x["state"] for x in lines] == ["fired", "resolved"]
        assert AlertBook(tmp_path / "alerts.jsonl").events == lines  # a restarted server keeps them
        assert book.to_dict()["firing"] == []
    finally:
        server.shutdown()


def test_no_traffic_changes_nothing() -> None:
    book = AlertBook()
    book.set_rules([{"rule": "error_rate>0.1", "k": 1}])
    assert book.evaluate({"requests": 0, "error_rate": 0.0}) == []
    assert book.rules[0].last_value is None


def test_webhook_secrets_are_never_shown() -> None:
    from nbdeploy.monitoring.alerts import redact_url

    book = AlertBook()
    book.set_rules([{"rule": "p95_ms>5", "k": 1, "webhook": "https://hooks.example.com:8443/services/T0/B1/s3cret?x=1"}])
    shown = book.to_dict()["rules"][0]["webhook"]
    assert shown == "https://hooks.example.com:8443/…" and "s3cret" not in str(book.to_dict())
    assert book.rules[0].webhook.endswith("s3cret?x=1")  # still posted to in full
    assert redact_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000" and redact_url(None) is None
