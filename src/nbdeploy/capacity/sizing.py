"""``Deployment.recommend(target_rps=, p99_ms=)``: replicas and CPUs from a load test.

The model: a server costs a fixed CPU to keep running (``idle_1``, measured by the load
test with no traffic before its first level) plus a CPU per request. The arithmetic, shown
in the recommendation's text:

1. From the load test, the levels whose p99 meets ``p99_ms`` (and with under 1 % errors);
   among them, the one with the highest throughput: what one server (or one Ray replica:
   a test of N replicas is divided by N) sustains within the target, ``rps_1``, and the CPU
   it used doing so, ``cores_1`` (CPU seconds per second).
2. CPU per request at that load: ``(cores_1 - idle_1) / rps_1``. It is assumed the same
   however many servers share the traffic (each does the same work per request);
   ``tests/test_ray.py`` checks the model between 1 and 2 Ray replicas within the noise it
   states. A test recorded before idle was measured counts it in the CPU per request.
3. Replicas: enough that none goes past what one sustained, ``ceil(target_rps / (rps_1 *
   utilization))`` (default utilization 0.7, the autoscaler's target in the packaged
   manifests).
4. CPUs: ``replicas * idle_1 + target_rps * CPU per request / utilization`` (headroom for
   bursts on the part that grows with traffic), ``CPUs / replicas`` each (Ray's
   ``--replica-cpus``, a pod's CPU request).

>>> r = recommend({"levels": [{"connections": 1, "rps": 400.0, "p99_ms": 4.0, "cpu_pct": 60.0},
...                           {"connections": 16, "rps": 800.0, "p99_ms": 30.0, "cpu_pct": 100.0},
...                           {"connections": 64, "rps": 810.0, "p99_ms": 120.0, "cpu_pct": 100.0}]},
...               target_rps=2000, p99_ms=50)
>>> r.replicas, round(r.cpus, 2), round(r.cpus_per_replica, 2)
(4, 3.57, 0.89)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nbdeploy.errors import Docs, InvalidInputError

__all__ = ["Recommendation", "recommend"]


@dataclass(frozen=True)
class Recommendation:
    target_rps: float
    p99_ms: float
    utilization: float
    rps_1: float  # what one server sustains within the p99 target
    cores_1: float  # the CPU it used doing so
    connections: int  # at this load test level
    replicas: int
    cpus: float
    cpus_per_replica: float
    idle_1: float | None = None  # one server's CPU with no traffic (None: not measured, counted per request)

    @property
    def cpu_per_request(self) -> float:
        """CPU seconds one request costs beyond the servers' fixed cost."""
        return (self.cores_1 - (self.idle_1 or 0.0)) / self.rps_1

    def cores_for(self, rps: float, replicas: int) -> float:
        """The CPU (seconds per second) the model expects ``replicas`` servers to use between
        them while serving ``rps`` requests/s (no headroom): what a measurement is checked against."""
        return replicas * (self.idle_1 or 0.0) + rps * self.cpu_per_request

    def text(self) -> str:
        ms, idle = 1000 * self.cpu_per_request, self.idle_1
        fixed = (f"  CPU per request: ({self.cores_1:.2f} - {idle:.2f} with no traffic) / {self.rps_1:.1f} = {ms:.3f} "
                 "CPU ms" if idle is not None else f"  CPU per request: {self.cores_1:.2f} / {self.rps_1:.1f} = "
                 f"{ms:.3f} CPU ms (CPU with no traffic not measured by this load test: counted here)")  # fmt: skip
        return "\n".join([
            f"for {self.target_rps:g} requests/s with p99 <= {self.p99_ms:g} ms:",
            f"  one server sustains {self.rps_1:.1f} requests/s within the target (load test level of "
            f"{self.connections} connections), using {self.cores_1:.2f} CPU",
            fixed,
            f"  replicas: ceil({self.target_rps:g} / ({self.rps_1:.1f} x {self.utilization:g})) = {self.replicas}",
            f"  CPUs: {f'{self.replicas} x {idle:.2f} + ' if idle is not None else ''}{self.target_rps:g} x {ms:.3f} ms"
            f" / {self.utilization:g} utilization = {self.cpus:.2f}, {self.cpus_per_replica:.2f} CPU each",
            f"  Ray: --replicas {self.replicas} --replica-cpus {math.ceil(self.cpus_per_replica * 10) / 10:g};"
            f" Kubernetes: replicas {self.replicas}, requests.cpu {math.ceil(self.cpus_per_replica * 10) * 100}m",
        ])  # fmt: skip

    def __repr__(self) -> str:
        return self.text()


def recommend(
    loadtest: dict[str, Any] | None, target_rps: float, p99_ms: float, utilization: float = 0.7
) -> Recommendation:
    """Replicas and CPUs for ``target_rps`` at ``p99_ms``, from a load test's summary (see above)."""
    if loadtest is None:
        raise InvalidInputError(
            "No load test is recorded for the served version: run %deploy loadtest first.", docs=Docs.LOADTEST
        )
    if not all(math.isfinite(v) for v in (target_rps, p99_ms, utilization)) or not (
        target_rps > 0 and p99_ms > 0 and 0 < utilization <= 1
    ):
        raise InvalidInputError("Give a target_rps and a p99_ms above 0, and a utilization in (0, 1].")
    # levels that answered (errors under 1 %) with a known p99
    levels = [lv for lv in loadtest.get("levels", []) if lv.get("p99_ms") is not None and lv.get("rps")
              and (lv.get("error_rate") or 0) <= 0.01]  # fmt: skip
    within = [lv for lv in levels if lv["p99_ms"] <= p99_ms]
    if not within:
        fastest = min((lv["p99_ms"] for lv in levels), default=None)
        lowest = f"its lowest p99: {fastest:.2f} ms" if fastest is not None else "no level answered without errors"
        raise InvalidInputError(f"No level of the load test met p99 <= {p99_ms:g} ms ({lowest}); no number of "
                                "replicas makes one request faster.", docs=Docs.SIZING)  # fmt: skip
    best = max(within, key=lambda lv: lv["rps"])
    if not (best.get("cpu_pct") or 0) > 0:
        raise InvalidInputError("The load test measured no CPU at that level (the server's processes could not be "
                                "read): run %deploy loadtest again.")  # fmt: skip
    servers = max(1, int(loadtest.get("replicas") or 1))  # a Ray test measures its replicas together
    rps_1, cores_1 = float(best["rps"]) / servers, float(best["cpu_pct"]) / 100 / servers
    idle = loadtest.get("idle_cpu_pct")
    idle_1 = float(idle) / 100 / servers if isinstance(idle, int | float) and 0 <= idle else None
    if idle_1 is not None and idle_1 >= cores_1:  # noise of a server that hardly works: all of it per request
        idle_1 = None
    replicas = max(1, math.ceil(target_rps / (rps_1 * utilization)))
    cpus = replicas * (idle_1 or 0.0) + target_rps * (cores_1 - (idle_1 or 0.0)) / rps_1 / utilization
    return Recommendation(target_rps, p99_ms, utilization, rps_1, cores_1, int(best["connections"]), replicas, cpus,
                          cpus / replicas, idle_1)  # fmt: skip
