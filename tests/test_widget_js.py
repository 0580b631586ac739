"""The monitor widget's JavaScript on a Ray deployment's document, rendered by Node.js.

The real-browser test (test_browser.py) covers a local deployment end to end; this one feeds
the same ``monitor.js`` a ``/monitor`` document shaped as the Ray hub builds it (windows of
the whole deployment plus ``replicas``) and checks the per-replica table.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nbdeploy.monitoring.windows import RequestWindows

JS = Path(__file__).resolve().parent.parent / "src" / "nbdeploy" / "widgets" / "monitor.js"
NODE = shutil.which("node")

RUNNER = """
const { default: widget } = await import(process.argv[2]);
let text = "";
for await (const chunk of process.stdin) text += chunk;
const doc = JSON.parse(text);
const values = { snapshot: doc.snapshot || doc, status: "live", window: "1m", name: "rayd", job: doc.job || {} };
const el = { innerHTML: "" };
widget.render({ model: { get: (k) => values[k], on: () => {} }, el });
process.stdout.write(el.innerHTML);
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (it runs the widget's JavaScript)")
def test_replica_table_of_a_ray_deployment(tmp_path: Path) -> None:
    now = time.time()
    per, merged = {}, RequestWindows(["x"], None, "classification")
    for rid, latencies in {"r1": [1.0, 2.0, 3.0], "r2": [10.0, 20.0]}.items():
        w = per[rid] = RequestWindows(["x"], None, "classification")
        for i, ms in enumerate(latencies):
            for windows in (w, merged):  # as the hub does: each record in its replica's and in the whole
                windows.add(now - 5 + i, ms, 200, f"{rid}-{i}", [[1.0]], [1])
    doc = merged.snapshot(now, ["1m"])
    doc.update(name="rayd", ref="m/1", version=1, uptime_s=5, alerts={"rules": [], "events": []}, target="ray")
    doc["replicas"] = {
        rid: {"pid": 100 + n, "node": f"node{n}" * 4, "last_seen": now, "windows": w.snapshot(now, ["1m"])["windows"]}
        for n, (rid, w) in enumerate(per.items())
    }
    script = tmp_path / "render.mjs"
    script.write_text(RUNNER)
    assert NODE is not None
    out = subprocess.run(
        [NODE, str(script), JS.as_uri()], input=json.dumps(doc), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    html = out.stdout
    assert 'data-tile="requests"' in html and ">5<" in html  # the merged tile: 3 + 2 requests
    for rid, count, pid in (("r1", 3, 100), ("r2", 2, 101)):
        row = html[html.index(f'data-replica="{rid}"') :].split("</tr>", 1)[0]
        assert f"<td>{count}</td>" in row and f"<td>{pid}</td>" in row, row


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (it runs the widget's JavaScript)")
def test_the_panel_shows_the_retraining_job(tmp_path: Path) -> None:
    """The job's section: what starts it, what follows, the run in progress, the queued one,
    and the last runs (newest first) with their outcome, candidate and executed notebook."""
    from nbdeploy.widgets.monitor import job_text

    now = time.time()
    windows = RequestWindows(["x"], None, "classification")
    windows.add(now - 1, 2.0, 200, "a", [[1.0]], [1])
    snapshot = windows.snapshot(now, ["1m"])
    snapshot.update(name="rayd", ref="m/1", version=1, uptime_s=5, alerts={"rules": [], "events": []})
    job = {"state": "running", "trigger": "on psi>0.2 (fires after 3 breaches)", "action": "canary 10%",
           "next_run": None, "running": {"run": 3, "trigger": {"reason": "psi>0.2 fired (value 0.31)"}},
           "queued": {"reason": "asked by hand"},
           "runs": [{"run": 1, "started": 1.0, "outcome": "rejected", "candidate": "m/2", "why": "<b>failed</b>",
                     "notebook_artifact": "runs:/abc/retrain/executed.ipynb"},
                    {"run": 2, "started": 2.0, "outcome": "promoted", "candidate": "m/3",
                     "notebook": "/home/x/retrain/runs/2/executed.ipynb"}, {"run": 3, "started": 3.0}]}  # fmt: skip
    script = tmp_path / "render.mjs"
    script.write_text(RUNNER)
    assert NODE is not None
    out = subprocess.run([NODE, str(script), JS.as_uri()], input=json.dumps({"snapshot": snapshot, "job": job}),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    html = out.stdout
    assert "retraining job · running" in html and "canary 10%" in html
    assert "run 3 in progress (psi&gt;0.2 fired (value 0.31))" in html and "queued: asked by hand" in html
    order = [html.index(f'data-run="{n}"') for n in (3, 2, 1)]
    assert order == sorted(order)  # newest first
    assert 'data-outcome="rejected"' in html and "runs:/abc/retrain/executed.ipynb" in html
    assert "/home/x/retrain/runs/2/executed.ipynb" in html and "&lt;b&gt;failed" in html and "<b>failed" not in html
    text = job_text(job)
    assert "retraining job running: on psi>0.2" in text and "run 2: promoted m/3" in text
    assert "run 3: in progress" in text and max(map(len, text.splitlines())) <= 100


def _render(tmp_path: Path, payload: dict[str, object]) -> str:
    script = tmp_path / "render.mjs"
    script.write_text(RUNNER)
    assert NODE is not None
    out = subprocess.run([NODE, str(script), JS.as_uri()], input=json.dumps(payload), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (it runs the widget's JavaScript)")
def test_the_panel_tells_the_truth_at_a_glance(tmp_path: Path) -> None:
    """(#16 item 4) Data from its first seconds, every figure with its window and the
    snapshot's age, alert values read on the same snapshot as the tiles, and an empty state."""
    from nbdeploy.monitoring.alerts import AlertBook, attach_alerts, with_alert_window
    from nbdeploy.monitoring.view import render_text

    now = time.time()
    windows = RequestWindows(["x"], None, "classification")
    book = AlertBook(window="1m")
    book.set_rules([{"rule": "p95_ms>50", "k": 2}])
    windows.add(now - 30, 80.0, 200, "early", [[1.0]], [1])
    book.evaluate(windows.snapshot(now - 3, ["1m"])["windows"]["1m"], now=now - 3)  # 3 s before the panel's
    windows.add(now - 1, 20.0, 200, "late", [[1.0]], [1])
    doc = attach_alerts(windows.snapshot(now, with_alert_window(["1m"], book)), book, ["1m"])
    doc.update(name="demo", ref="m/1", version=1, uptime_s=40, now=now)
    html = _render(tmp_path, doc)

    assert html.count("<circle") >= 2  # two buckets measured: dots, where a line would need more
    for label in ("p95 (1m)", "p99 (1m)", "error rate (1m)", "requests/s (1m)", "last 10 min; latest"):
        assert label in html, label
    assert "as of " in html and " s ago)" in html
    p95 = doc["windows"]["1m"]["latency_ms"]["p95"]
    row = html[html.index('data-rule="p95_ms&gt;50"') :].split("</li>", 1)[0]
    shown = re.search(r'data-value="([^"]*)"', row)
    assert shown and float(shown.group(1)) == p95 and f"{p95:.3f}" in row  # the snapshot's, not the evaluation's
    assert book.rules[0].last_value != p95  # the evaluation 3 s earlier saw only the slow request
    assert f'data-tile="p95"><div class="label">p95 (1m)</div><div class="value">{p95:.1f} ms' in html
    assert "states from the evaluation 3 s ago" in html and "values on this snapshot, over 1m" in html
    assert "No traffic yet" not in html
    text = render_text(doc, "1m")
    assert "states from the evaluation 3 s ago; values on this snapshot, over 1m" in text
    assert f"p95_ms>50                ok      {p95:.4g}" in text

    empty = RequestWindows(["x"], None, "classification").snapshot(now, ["1m"])
    empty.update(name="demo", ref="m/1", version=1, uptime_s=1, now=now, alerts={"rules": [], "events": []})
    html = _render(tmp_path, empty)
    assert "No traffic yet: try <code>%deploy predict rayd --data X.head()</code>" in html  # the widget's name
    assert "no traffic yet: try %deploy predict demo --data X.head()" in render_text(empty, "1m")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (it runs the widget's JavaScript)")
def test_a_server_of_an_earlier_nbdeploy_shows_its_last_evaluation(tmp_path: Path) -> None:
    """A deployment started before an upgrade keeps running: its /monitor has no
    snapshot_value, window or evaluated_at; the panel shows the last evaluation's value, said so."""
    from nbdeploy.monitoring.view import render_text

    now = time.time()
    windows = RequestWindows(["x"], None, "classification")
    windows.add(now - 1, 20.0, 200, "a", [[1.0]], [1])
    doc = windows.snapshot(now, ["1m"])
    rules = [{"rule": "p95_ms>50", "metric": "p95_ms", "k": 3, "webhook": None, "firing": True, "value": 61.5}]
    doc.update(name="old", ref="m/1", version=1, uptime_s=9, now=now,
               alerts={"rules": rules, "firing": ["p95_ms>50"], "events": []})  # fmt: skip
    html = _render(tmp_path, doc)
    row = html[html.index('data-rule="p95_ms&gt;50"') :].split("</li>", 1)[0]
    assert "FIRING · 61.500 (last evaluation)" in row and "states from the last evaluation" in html
    assert "p95_ms>50                FIRING  61.5 (last evaluation)" in render_text(doc, "1m")
