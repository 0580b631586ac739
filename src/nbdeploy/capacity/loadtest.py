"""``%deploy loadtest NAME``: drive a deployment at a few loads and say what it sustains.

For each connection count, wrk (:mod:`~nbdeploy.capacity.wrk`) keeps that many requests
in flight for ``duration``; meanwhile the server's processes (the server and its children:
a challenger, the body parser) are read with ``psutil``: CPU seconds per 1,000
predictions and the highest resident memory. The result is a
:class:`~nbdeploy.capacity.report.LoadTestReport` (curve, capacity within the gates,
figures), recorded on the served version in MLflow unless ``record=False``.

The load reaches the deployment like any traffic: its requests are in the request log and
the monitoring windows. Load-test a deployment of its own (``serve REF --name NAME-load``)
rather than one that serves users.

>>> report = nbdeploy.get("cancer").loadtest(connections=[1, 16], duration="10s")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from nbdeploy.capacity import gates as gate_rules
from nbdeploy.capacity import wrk
from nbdeploy.capacity.report import LoadTestReport
from nbdeploy.errors import InvalidInputError
from nbdeploy.spec import parse_duration

__all__ = ["loadtest"]

WARMUP_S = 1.0


class _ServerMeter:
    """CPU seconds and peak resident memory of a local server and its children (psutil)."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self._psutil, self.peak_rss = psutil, 0.0
        self.root = psutil.Process(pid) if pid else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="nbdeploy-loadtest-rss")

    def _tree(self) -> list[Any]:
        if self.root is None:
            return []
        try:
            return [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return []

    def cpu(self) -> float | None:
        if self.root is None:
            return None
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
            except self._psutil.Error:
                continue
            total += t.user + t.system
        return total

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            rss = 0.0
            for p in self._tree():
                try:
                    rss += p.memory_info().rss
                except self._psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)

    def __enter__(self) -> _ServerMeter:
        if self.root is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def _levels(connections: Sequence[int]) -> list[int]:
    levels = sorted(set(int(c) for c in connections))
    if not levels or levels[0] < 1 or levels[-1] > 10_000:
        raise InvalidInputError("--connections takes counts from 1 to 10000, e.g. 1,16,64.")
    return levels


def loadtest(
    deployment: Any,  # a Deployment (nbdeploy.deployments calls this; capacity never imports it)
    make_bodies: Callable[[], Sequence[str]],
    *,
    connections: Sequence[int] = (1, 16, 64),
    duration: str | float = "10s",
    gates: Sequence[str] = (),
    record: bool = True,
) -> LoadTestReport:
    """Send the requests ``make_bodies()`` gives (MLflow ``dataframe_split`` bodies of one
    size, taken in turn; made once the options are checked) at each level; the report,
    recorded on the served version when ``record``."""
    try:
        seconds = parse_duration(duration, "--duration") if isinstance(duration, str) else float(duration)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if not 1 <= seconds <= 3600:
        raise InvalidInputError(f"Invalid --duration {duration!r}: use 1s to 1h, e.g. 10s.")
    levels, rules = _levels(connections), gate_rules.parse_gates(gates)
    wrk.require_wrk()
    if deployment.state() != "running":
        raise InvalidInputError(f"Deployment {deployment.name!r} is {deployment.state()}: serve it first.")
    if deployment.spec.experiment is not None:
        raise InvalidInputError(f"Deployment {deployment.name!r} runs an experiment: conclude it first (the load "
                                "would count in its comparison).")  # fmt: skip
    bodies = make_bodies()
    rows = len(json.loads(bodies[0]).get("dataframe_split", {}).get("data", [None]))
    headers = {"Content-Type": "application/json"}
    if deployment.token:
        headers["Authorization"] = f"Bearer {deployment.token}"
    lua = wrk.script(bodies, headers)
    url = deployment.url
    wrk.run_level(url, lua, levels[0], WARMUP_S)  # connections opened, caches warm; not counted
    results = []
    with _ServerMeter(deployment.pid if deployment.target == "local" else None) as meter:
        for c in levels:
            before = meter.cpu()
            level = wrk.run_level(url, lua, c, seconds)
            after = meter.cpu()
            predictions = (level["requests"] - level["errors"]) * rows
            cpu = after - before if after is not None and before is not None else None
            level["cpu_s_per_1k"] = 1000 * cpu / predictions if cpu is not None and predictions > 0 else None
            level["cpu_pct"] = 100 * cpu / level["seconds"] if cpu is not None and level["seconds"] else None
            results.append(level)
        peak = round(meter.peak_rss / (1 << 20), 1) if meter.root is not None and meter.peak_rss else None
    best, decided = gate_rules.decide(rules, results, peak)
    current = deployment.spec.current
    report = LoadTestReport(
        name=deployment.name, ref=current.resolved or current.ref, target=deployment.target, levels=results,
        seconds=seconds, rows_per_request=rows, bodies=len(bodies), peak_rss_mb=peak, best=best, gates=decided,
        when=time.time(),
    )  # fmt: skip
    if record and current.version is not None:
        from nbdeploy.registry.loadtests import record_loadtest

        report.run_id = record_loadtest(report.ref, report.to_dict(), report.html_page(), report.text())
    return report
