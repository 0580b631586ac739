"""Capacity (#14): load tests driven by wrk, gated, recorded on the version and refusing its
promotion; CPU, memory and cost of the serving processes in /monitor, /metrics and alerts."""

from __future__ import annotations

import doctest
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

import nbdeploy
from nbdeploy.capacity import gates, report, wrk
from nbdeploy.deployments import http
from nbdeploy.errors import InvalidInputError, PromotionRefusedError
from nbdeploy.monitoring import resources
from nbdeploy.monitoring.view import render_text
from tests.helpers import eventually, usage_error

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
# load tests measure CPU and latency: each runs with the machine to itself (conftest.py)
pytestmark = pytest.mark.alone


def test_doctests() -> None:
    for module in (gates, report, resources):
        assert doctest.testmod(module).failed == 0


def _tree_cpu(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def _tree_rss(pid: int) -> float:
    root = psutil.Process(pid)
    return float(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))


@needs_wrk
def test_cpu_per_1k_predictions_in_monitor_agrees_with_psutil(
    cancer: dict[str, Any], serving: Callable[..., Any], two_versions: str, name: str
) -> None:
    """Over a 10 s load of 5-row requests, the server's own figure for CPU seconds per 1,000
    predictions (1m window) is within 10 % of psutil's reading of its process tree; the cost
    follows from the price, and a cost rule fires on it."""
    dep = serving(f"{two_versions}/1", name=name, core_hour_price=0.05, alerts=["cost_per_1m>0"], alert_k=1,
                  alert_interval_s=1.0)  # fmt: skip
    bodies = http.request_bodies(cancer["X_test"], 5)
    lua = wrk.script(bodies, {"Content-Type": "application/json", "Authorization": f"Bearer {dep.token}"})
    # the same span on both sides: from the server ready (its first sample) to a second after the load
    before = _tree_cpu(dep.pid)
    level = wrk.run_level(dep.url, lua, 8, 10)
    time.sleep(1.5)  # a sample after the last answer
    spent = _tree_cpu(dep.pid) - before
    doc = dep.snapshot("1m")
    assert level["errors"] == 0 and level["requests"] > 500, level
    r = doc["windows"]["1m"]["resources"]
    psutil_per_1k = 1000 * spent / r["predictions"]
    print(f"\nCPU s / 1k predictions: /monitor {r['cpu_s_per_1k']:.4f}, psutil {psutil_per_1k:.4f}")
    assert 0 <= r["predictions"] - 5 * level["requests"] <= 5 * 8  # requests in flight when wrk stopped counting
    assert abs(r["cpu_s_per_1k"] / psutil_per_1k - 1) <= 0.10
    assert r["cost_per_1m"] == pytest.approx(0.05 * r["cpu_s_per_1k"] / 1000 / 3600 * 1e6, rel=1e-9)
    assert r["cost_per_day"] == pytest.approx(0.05 * r["cpu_pct"] / 100 * 24, rel=1e-3)
    assert r["rss_mb"] == pytest.approx(_tree_rss(dep.pid) / 2**20, rel=0.2)  # the server and its children
    assert doc["processes"][0]["role"] == "server" and doc["processes"][0]["pid"] == dep.pid
    metrics = httpx.get(dep.url + "/metrics", headers={"Authorization": f"Bearer {dep.token}"}).text
    assert 'nbdeploy_process_cpu_seconds_total{process="server"}' in metrics
    assert "nbdeploy_cost_per_1m " in metrics and "nbdeploy_predictions_total" in metrics
    fired = eventually(lambda: dep.alerts(), lambda a: "cost_per_1m>0" in a["firing"])
    assert "cost_per_1m>0" in fired["firing"]


def test_a_challengers_process_is_measured_as_its_own(
    cancer: dict[str, Any], serving: Callable[..., Any], two_versions: str, name: str
) -> None:
    dep = serving(f"{two_versions}/1", name=name)
    dep.canary(f"{two_versions}/2", percent=50)
    time.sleep(1.5)  # a reading that sees the challenger's process: its predictions count from there
    body = json.loads(cancer["X_test"].head(20).to_json(orient="split", index=False))
    headers = {"Authorization": f"Bearer {dep.token}"}
    with httpx.Client() as client:
        answers = [client.post(dep.url + "/invocations", json={"dataframe_split": body}, headers=headers)
                   for _ in range(40)]  # fmt: skip
    by_variant = {v: 20 * sum(r.headers["x-nbdeploy-variant"] == v for r in answers) for v in ("champion", "2")}
    assert by_variant["2"] > 0 and by_variant["champion"] > 0, by_variant

    def settled(d: dict[str, Any]) -> bool:
        roles = {p["role"]: p for p in d.get("processes", [])}
        return "canary 2" in roles and roles["canary 2"]["predictions_per_cpu_s"] is not None

    doc = eventually(lambda: dep.snapshot("1m"), settled)
    roles = {p["role"]: p for p in doc["processes"]}
    # each variant's predictions, by the process that made them
    assert (roles["server"]["predictions"], roles["canary 2"]["predictions"]) == (
        by_variant["champion"],
        by_variant["2"],
    )
    challenger = psutil.Process(dep.pid).children()
    assert roles["canary 2"]["pid"] in {c.pid for c in challenger}
    assert roles["canary 2"]["rss_mb"] > 20 and roles["server"]["rss_mb"] > 20
    text = render_text(dep.snapshot(), "1m")
    assert "canary 2 (pid" in text and "CPU s / 1k predictions" in text and "pred/CPU s" in text
    dep.conclude(abort=True)


@needs_wrk
def test_a_failed_load_test_refuses_promotion_and_is_on_the_version_and_its_card(
    cancer: dict[str, Any], serving: Callable[..., Any], name: str, ip: Any
) -> None:
    v = nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    nbdeploy.validate(v.ref, cancer["X_test"], cancer["y_test"])  # validation passes: the load test decides
    serving(v.ref, name=name)
    ip.user_ns["rows"] = cancer["X_test"]
    with pytest.raises(nbdeploy.ValidationFailedError) as failed:
        ip.run_line_magic("deploy", f'loadtest {name} --connections 1,4 --duration 2s --data rows --rows 3 '
                                    '--gate "p99_ms<=0.001" --gate "rps>=1" --strict')  # fmt: skip
    r = failed.value.report
    assert r.passed is False and r.failed == ["p99_ms<=0.001", "rps>=1"] and r.best is None
    assert [lv["connections"] for lv in r.levels] == [1, 4] and all(lv["rps"] > 0 for lv in r.levels)
    assert all(lv["cpu_s_per_1k"] > 0 for lv in r.levels) and r.peak_rss_mb > 50
    # the server with no traffic, measured before the first level: little next to a loaded level
    assert r.idle_cpu_pct is not None and 0 <= r.idle_cpu_pct < min(lv["cpu_pct"] for lv in r.levels)
    assert "<svg" in r._repr_html_() and "FAILED on p99_ms<=0.001" in r.text()
    assert max(len(line) for line in r.text().splitlines()) <= 100
    with pytest.raises(PromotionRefusedError, match=r"its last load test failed on p99_ms<=0.001, rps>=1"):
        nbdeploy.promote(v.ref)
    mv = nbdeploy.resolve(v.ref)
    assert mv.tags["nbdeploy.loadtest"] == "failed"
    summary = json.loads(mv.tags["nbdeploy.loadtest.summary"])
    assert summary["run_id"] == r.run_id and [lv["rps"] for lv in summary["levels"]] == [lv["rps"] for lv in r.levels]
    assert summary["idle_cpu_pct"] == r.idle_cpu_pct
    from mlflow import MlflowClient

    run = MlflowClient().get_run(r.run_id)
    assert run.data.metrics["rps_c4"] == pytest.approx(r.levels[1]["rps"])
    assert run.data.params["rows_per_request"] == "3"
    card = nbdeploy.card(v.ref)
    text = repr(card)
    assert "## Capacity" in text and "Latest load test: FAILED" in text and "load tested" in text
    # a test without gates, or a pass of other gates, is no answer to the gates that failed
    dep = nbdeploy.get(name)
    dep.loadtest(cancer["X_test"], connections=2, duration=1)
    assert dep.loadtest(cancer["X_test"], connections=2, duration=1, gates="rps>=1").passed is True
    with pytest.raises(PromotionRefusedError, match=r"failed on p99_ms<=0.001\b"):
        nbdeploy.promote(v.ref)
    assert "still refused: p99_ms<=0.001 failed before" in nbdeploy.card(v.ref).markdown
    assert nbdeploy.promote(v.ref, force=True).aliases == ["champion"]


@needs_wrk
def test_bodies_with_brackets_and_failing_requests_are_counted_as_errors(
    cancer: dict[str, Any], serving: Callable[..., Any], two_versions: str, name: str
) -> None:
    dep = serving(f"{two_versions}/1", name=name)
    bad = json.dumps({"dataframe_split": {"columns": ["]]", "]=]"], "data": [["]==]", 1]]}})
    lua = wrk.script([bad], {"Content-Type": "application/json", "Authorization": f"Bearer {dep.token}"})
    level = wrk.run_level(dep.url, lua, 2, 1)
    assert level["requests"] > 0 and level["error_rate"] == 1.0  # each a 400, the script intact
    assert level["rps"] == 0.0  # errors answered fast are no capacity
    for tail in ("a]", "a]=", "]]", "]=]"):  # a text ending in a bracket must not close its string early
        lua = wrk.script([bad], {"Content-Type": "application/json", "X-Tail": tail})
        assert wrk.run_level(dep.url, lua, 1, 1)["requests"] > 0, tail


def test_gates_are_decided_where_they_all_hold() -> None:
    def level(c: int, rps: float, p99: float | None, err: float) -> dict[str, Any]:
        return {"connections": c, "rps": rps, "p99_ms": p99, "error_rate": err}

    rules = gates.parse_gates(["p99_ms<=50", "error_rate<0.001", "rps>=100"])
    # p99 met only at 1 connection, errors only at 64: no level meets both, so nothing passes
    best, results = gates.decide(rules, [level(1, 200.0, 10.0, 0.01), level(64, 900.0, 300.0, 0.0)], 100.0)
    assert best is None and [r["passed"] for r in results] == [False, False, False]
    # a latency unknown (requests timed out) meets no gate
    best, results = gates.decide(rules, [level(16, 500.0, None, 0.0)], 100.0)
    assert best is None and not results[0]["passed"]
    best, results = gates.decide(rules, [level(1, 200.0, 10.0, 0.0), level(16, 800.0, 40.0, 0.0)], 100.0)
    assert best is not None and best["connections"] == 16 and all(r["passed"] for r in results)


@needs_wrk
def test_hostile_options_are_one_sentence(ip: Any, dep: Any, name: str) -> None:
    cases = {
        f"loadtest {name} --duration 1.5s": "use whole seconds",
        f"loadtest {name} --rows 5": "--rows cuts --data into requests",
        f"loadtest {name} --data X_test --rows 100000": "fewer than --rows 100000",
        f"loadtest {name} --data big --rows 110000 --duration 1s --connections 1": "over the server's limit",
        f"loadtest {name} --gate 'p99<=5'": "Unknown load-test metric 'p99'",
        f"loadtest {name} --gate 'rps=5'": "Malformed load-test gate",
        f"loadtest {name} --connections 0": "--connections takes counts from 1 to 10000",
        f"loadtest {name} --duration 0s": "Invalid --duration",
        f"loadtest {name} --duration 2h": "from 1s to 1h",
        f"loadtest {name} --strict": "--strict fails on a gate",
        f"loadtest {name} --rows 0 --data X_test": "a request carries at least 1 row",
        f"loadtest {name} --rows 1000 --data X_test": "fewer than --rows 1000",
        f"loadtest {name} --data X_test.head(0)": "fewer than --rows 1",
        "loadtest nobody": "No deployment is named 'nobody'",
        f"alerts {name} --add 'cost_per_1m>2'": "needs the price of a core-hour",
    }
    ip.user_ns["big"] = pd.concat([ip.user_ns["X_test"]] * 800)  # a request of 110,000 rows: about 30 MB
    for line, expected in cases.items():
        assert expected in usage_error(ip, line), line
    assert "invalid connection counts" in usage_error(ip, f"loadtest {name} --connections a,b")


def test_without_wrk_the_load_test_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, dep: Any) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidInputError, match="not installed here: apt-get install wrk"):
        dep.loadtest(duration=1)


def test_a_price_must_be_a_number(serving: Callable[..., Any], two_versions: str, name: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with pytest.raises(InvalidInputError, match="Invalid core-hour price -1"):
        serving(f"{two_versions}/1", name=name, core_hour_price=-1)
    monkeypatch.setenv("NBDEPLOY_CORE_HOUR_PRICE", "four cents")
    with pytest.raises(InvalidInputError, match="Invalid NBDEPLOY_CORE_HOUR_PRICE"):
        serving(f"{two_versions}/1", name=name)
    assert os.environ["NBDEPLOY_CORE_HOUR_PRICE"] == "four cents"


def test_the_meter_windows_young_stale_wrapped_and_merged() -> None:
    meter = resources.ResourceMeter([60.0], price=None)
    assert meter.window(0.0, 60.0) is None  # one sample is no rate
    meter.add_sample(100.0, 1.0, 50e6, 0)
    meter.add_sample(100.5, 9.0, 50e6, 0)  # closer than a step to the last: not kept
    meter.add_sample(101.0, 1.5, 60e6, 100)
    w = meter.window(101.0, 60.0)
    assert w["covered_s"] == 1.0 and w["cpu_pct"] == 50.0 and w["cost_per_1m"] is None
    assert w["predictions_per_cpu_s"] == 200.0
    assert meter.window(101.0 + resources.ResourceMeter.STALE_S + 1, 60.0) is None  # gone: says nothing
    last = 101
    for t in range(102, 102 + 3 * meter.samples.capacity):  # the ring wraps around several times
        meter.add_sample(float(t), 1.5 + 0.25 * (t - 101), 70e6, 100 + 10 * (t - 101))
        last = t
    w = meter.window(float(last), 60.0)
    assert w["covered_s"] == 61.0 and w["cpu_pct"] == pytest.approx(25.0) and w["cpu_s_per_1k"] == pytest.approx(25.0)
    other = dict(w, cpu_s=30.0, predictions=0, covered_s=30.0)
    merged = resources.merge_windows([w, None, other], price=2.0)
    assert merged["cpu_s"] == pytest.approx(w["cpu_s"] + 30.0) and merged["covered_s"] == 61.0
    assert merged["predictions"] == w["predictions"]
    assert merged["cost_per_1m"] == pytest.approx(2.0 * merged["cpu_s"] / 3600 * 1e6 / merged["predictions"])


def test_a_process_counts_from_when_it_is_first_seen_and_keeps_it_after_it_ends() -> None:
    import subprocess
    import sys

    sampler = resources.ProcessSampler()
    _, start, _, _ = sampler.read()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 2.5: pass"])
    time.sleep(1.0)
    _, seen, _, _ = sampler.read()  # the child counts from here: its first second is not in the total
    time.sleep(1.0)
    _, mid, _, _ = sampler.read()
    busy.wait()
    _, spent, _, _ = sampler.read()  # ended and reaped: out of the listing, what it used is kept
    assert busy.pid not in {p["pid"] for p in sampler.processes()}
    assert seen - start < 0.5  # this process only, mostly asleep
    assert 0.3 <= mid - seen <= 2.0  # the child's second between the readings (the machine may be busy)
    assert spent >= mid  # a total never goes back
    assert sampler.spent_by_role()["helper"] == pytest.approx(mid - seen, abs=0.3)


def test_a_process_of_a_role_started_elsewhere_is_sampled_with_the_server() -> None:
    """A Ray replica's shadow actor is started by Ray, not by the replica: named in ``roles``,
    it is read beside the replica's own processes; a named process that ended is passed over."""
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 30: pass"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        sampler = resources.ProcessSampler(lambda: {busy.pid: "shadow 2", gone.pid: "shadow 3"}, pid=server.pid)
        _, start, _, _ = sampler.read()
        time.sleep(1.0)
        _, later, _, _ = sampler.read()
        assert {(p["pid"], p["role"]) for p in sampler.processes()} == {(server.pid, "server"), (busy.pid, "shadow 2")}
        assert 0.3 <= later - start and sampler.spent_by_role()["shadow 2"] == pytest.approx(later - start, abs=0.1)
    finally:
        for process in (server, busy):
            process.kill()
            process.wait()


def test_recommend_shows_its_arithmetic_and_refuses_what_it_cannot_size(ip: Any, dep: Any, name: str) -> None:
    from nbdeploy.capacity.sizing import recommend

    assert "run %deploy loadtest first" in usage_error(ip, f"recommend {name} --rps 100 --p99-ms 50")
    assert "--rps" in usage_error(ip, f"recommend {name} --p99-ms 50")
    test = {"levels": [{"connections": 4, "rps": 500.0, "p99_ms": 20.0, "cpu_pct": 80.0}]}
    with pytest.raises(InvalidInputError, match="No level of the load test met p99 <= 5 ms"):
        recommend(test, 100, 5)
    with pytest.raises(InvalidInputError, match="above 0"):
        recommend(test, -1, 50)
    r = recommend(test, 1000, 50, utilization=0.5)
    assert (r.replicas, r.cpus) == (4, pytest.approx(1000 * 0.8 / 500 / 0.5))
    assert "ceil(1000 / (500.0 x 0.5)) = 4" in r.text() and "--replicas 4" in r.text()
    # a Ray test of 2 replicas measured them together: one replica is half of it
    assert recommend({**test, "replicas": 2}, 1000, 50, utilization=0.5).replicas == 8
    # a fixed CPU per server (measured with no traffic) is counted once per replica, not per request
    fixed = recommend({**test, "idle_cpu_pct": 10.0}, 1000, 50, utilization=0.5)
    assert fixed.cpu_per_request == pytest.approx(0.7 / 500) and fixed.replicas == 4
    assert fixed.cpus == pytest.approx(4 * 0.1 + 1000 * 0.7 / 500 / 0.5)
    assert "4 x 0.10 + 1000 x 1.400 ms" in fixed.text()
    assert fixed.cores_for(500, replicas=2) == pytest.approx(2 * 0.1 + 0.7) and "not measured" in r.text()
    # a Ray test of 2 replicas measured their idle CPU together too: one replica's is half of it
    pair = recommend({**test, "replicas": 2, "idle_cpu_pct": 20.0}, 1000, 50, utilization=0.5)
    assert (pair.rps_1, pair.cores_1, pair.idle_1) == (250.0, 0.4, pytest.approx(0.1))
    assert pair.cpu_per_request == pytest.approx(0.3 / 250) and pair.replicas == 8
    # an idle figure at or over the loaded one is noise: all of the CPU is then counted per request
    noisy = recommend({**test, "idle_cpu_pct": 95.0}, 1000, 50, utilization=0.5)
    assert noisy.idle_1 is None and noisy.cpus == r.cpus and "not measured" in noisy.text()
    with pytest.raises(InvalidInputError, match="measured no CPU"):
        recommend({"levels": [{"connections": 4, "rps": 500.0, "p99_ms": 20.0, "cpu_pct": None}]}, 100, 50)
    errors = {"levels": [{"connections": 4, "rps": 500.0, "p99_ms": 1.0, "cpu_pct": 80.0, "error_rate": 0.5}]}
    with pytest.raises(InvalidInputError, match="no level answered without errors"):
        recommend(errors, 100, 50)
    with pytest.raises(InvalidInputError, match="above 0"):
        recommend(test, float("inf"), 50)


def test_a_failed_gate_refuses_promotion_until_that_very_gate_passes() -> None:
    from nbdeploy.registry.loadtests import _verdict

    def gate(text: str, ok: bool) -> dict[str, Any]:
        return {"gate": text, "passed": ok}

    tags: dict[str, str] = {}
    for gates_run, expected in [
        ([gate("p99_ms<=50", False)], ("failed", "")),
        ([gate("rps>=10000", False)], ("failed", "p99_ms<=50")),  # the earlier failure is kept beside the new
        ([gate("rps>=10000", True)], ("failed", "p99_ms<=50")),  # a pass of one gate is no answer to the other
        ([], (None, "")),  # no gates: no verdict
        ([gate("p99_ms<=50", True), gate("rps>=10000", True)], ("passed", "")),
    ]:
        status = "recorded" if not gates_run else "passed" if all(g["passed"] for g in gates_run) else "failed"
        verdict, still = _verdict(tags, status, gates_run)
        assert (verdict, still) == expected, gates_run
        if verdict is not None:
            failed = ", ".join(g["gate"] for g in gates_run if not g["passed"])
            tags = {
                "nbdeploy.loadtest": verdict,
                "nbdeploy.loadtest.failed": ", ".join(x for x in (failed, still) if x),
            }
