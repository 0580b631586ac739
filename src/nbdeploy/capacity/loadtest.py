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

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from nbdeploy.capacity import gates as gate_rules
from nbdeploy.capacity import wrk
from nbdeploy.capacity.report import LoadTestReport
from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.monitoring.resources import ProcessSampler, ResourceMeter
from nbdeploy.spec import parse_duration

__all__ = ["loadtest"]

WARMUP_S = 1
IDLE_S = 2  # the server with no traffic, before the first level: what it costs to keep running
STALE_S = ResourceMeter.STALE_S  # a replica whose last reading is older has stopped reporting
MAX_SCRIPT_BYTES = 32 << 20  # the requests wrk holds, formatted once per thread


class _ServerMeter:
    """CPU seconds (each process from when it is first seen, ended ones kept) and peak
    resident memory of a local server and its children, read by a thread every 0.2 s."""

    def __init__(self, pid: int | None) -> None:
        self.sampler = ProcessSampler(pid=pid) if pid else None
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="nbdeploy-loadtest-rss")

    def cpu(self) -> float | None:
        return self.sampler.read()[1] if self.sampler is not None else None

    def _watch(self) -> None:
        while self.sampler is not None and not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.sampler.read()[2])

    def __enter__(self) -> _ServerMeter:
        if self.sampler is not None:
            self.sampler.read()  # the processes running now count from now
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


class _ReplicaMeter:
    """The same figures for a Ray deployment, from the running totals each replica sends its
    monitoring hub (``/monitor``'s ``replicas[...].reading``): CPU summed over the replicas
    seen before and after a level, memory summed at each level's end."""

    def __init__(self, deployment: Any) -> None:
        self.deployment, self.peak_rss, self.replicas = deployment, 0.0, 1
        self._before: dict[str, float] = {}
        self._total = 0.0

    def cpu(self) -> float | None:
        """CPU seconds of the replicas reporting now, counted from the previous call for the
        replicas seen both times (one replaced meanwhile adds nothing, never a negative)."""
        time.sleep(1.1)  # replicas report twice a second: a reading taken after what came before
        try:
            doc = self.deployment.snapshot("1m")
        except Exception:  # the hub restarting: no figure for this level
            return None
        now = doc.get("now") or time.time()
        readings = {rid: r["reading"] for rid, r in (doc.get("replicas") or {}).items()
                    if r.get("reading") and now - r["reading"][0] <= STALE_S}  # fmt: skip
        self.replicas = max(self.replicas, len(readings))
        self.peak_rss = max(self.peak_rss, sum(r[2] for r in readings.values()))
        before, self._before = self._before, {rid: r[1] for rid, r in readings.items()}
        self._total += sum(max(0.0, r[1] - before[rid]) for rid, r in readings.items() if rid in before)
        return self._total if readings else None

    def __enter__(self) -> _ReplicaMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _level(url: str, lua: str, connections: int, seconds: float, rows: int, meter: Any) -> dict[str, Any]:
    """One level, with the server's CPU around it: per 1,000 predictions and in percent of a core."""
    before = meter.cpu()
    level = wrk.run_level(url, lua, connections, seconds)
    after = meter.cpu()
    predictions = level["answered"] * rows
    cpu = after - before if after is not None and before is not None else None
    level["cpu_s_per_1k"] = 1000 * cpu / predictions if cpu is not None and predictions > 0 else None
    level["cpu_pct"] = 100 * cpu / level["seconds"] if cpu is not None and level["seconds"] else None
    return level


def _idle_cores(meter: Any) -> float | None:
    """CPU (seconds per second) the server uses with no traffic: its fixed cost, which sizing
    counts once per replica (:mod:`~nbdeploy.capacity.sizing`)."""
    start, began = meter.cpu(), time.monotonic()
    time.sleep(IDLE_S)
    end = meter.cpu()
    return max(0.0, end - start) / (time.monotonic() - began) if start is not None and end is not None else None


def _levels(connections: Sequence[int]) -> list[int]:
    levels = sorted(set(int(c) for c in connections))
    if not levels or levels[0] < 1 or levels[-1] > 10_000:
        raise InvalidInputError("--connections takes counts from 1 to 10000, e.g. 1,16,64.")
    return levels


def loadtest(
    deployment: Any,  # a Deployment (nbdeploy.deployments calls this; capacity never imports it)
    make_bodies: Callable[[], tuple[Sequence[str], int]],
    *,
    connections: Sequence[int] = (1, 16, 64),
    duration: str | float = "10s",
    gates: Sequence[str] = (),
    record: bool = True,
) -> LoadTestReport:
    """Send the requests ``make_bodies()`` gives (``(bodies, rows in each)``: MLflow bodies of
    one size, taken in turn; made once the options are checked) at each level; the report,
    recorded on the served version when ``record``."""
    try:
        seconds = parse_duration(duration, "--duration") if isinstance(duration, str) else float(duration)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if not 1 <= seconds <= 3600 or seconds != int(seconds):
        raise InvalidInputError(f"Invalid --duration {duration!r}: use whole seconds from 1s to 1h, e.g. 10s.")
    levels, rules = _levels(connections), gate_rules.parse_gates(gates)
    wrk.require_wrk()
    if deployment.state() != "running":
        raise InvalidInputError(
            f"Deployment {deployment.name!r} is {deployment.state()}: serve it first.", docs=Docs.STATES
        )
    if deployment.spec.experiment is not None:
        raise InvalidInputError(f"Deployment {deployment.name!r} runs an experiment: conclude it first (the load "
                                "would count in its comparison).")  # fmt: skip
    bodies, rows = make_bodies()
    largest, limit = max(len(b) for b in bodies), deployment.spec.max_body_bytes
    if largest > limit:
        raise InvalidInputError(f"A request of --data is {largest:,} bytes, over the server's limit of {limit:,}: "
                                "send fewer --rows.")  # fmt: skip
    if sum(len(b) for b in bodies) > MAX_SCRIPT_BYTES:
        raise InvalidInputError(f"--data makes over {MAX_SCRIPT_BYTES >> 20} MB of requests: give fewer rows.")
    headers = {"Content-Type": "application/json"}
    if deployment.token:
        headers["Authorization"] = f"Bearer {deployment.token}"
    url = deployment.url
    lua = wrk.script(bodies, headers, urlparse(url).path.rstrip("/") + "/invocations")  # Ray: /NAME/invocations
    wrk.run_level(url, lua, levels[0], WARMUP_S)  # connections opened, caches warm; not counted
    meter = _ServerMeter(deployment.pid) if deployment.target == "local" else _ReplicaMeter(deployment)
    with meter:
        idle = _idle_cores(meter)
        results = [_level(url, lua, c, seconds, rows, meter) for c in levels]
    peak = round(meter.peak_rss / (1 << 20), 1) if meter.peak_rss else None
    best, decided = gate_rules.decide(rules, results, peak)
    current = deployment.spec.current
    report = LoadTestReport(
        name=deployment.name, ref=current.resolved or current.ref, target=deployment.target, levels=results,
        seconds=seconds, rows_per_request=rows, bodies=len(bodies), peak_rss_mb=peak, best=best, gates=decided,
        when=time.time(), replicas=getattr(meter, "replicas", 1),
        idle_cpu_pct=round(100 * idle, 2) if idle is not None else None,
    )  # fmt: skip
    if record and current.version is not None:
        from nbdeploy.registry.loadtests import record_loadtest

        report.run_id = record_loadtest(report.ref, report.to_dict(), report.html_page(), report.text())
    return report
