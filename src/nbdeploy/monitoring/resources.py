"""What serving costs: CPU and memory of a server's processes, per monitoring window.

A :class:`ResourceMeter` keeps one sample a second of three running totals: CPU seconds
of every process that serves (the server, a challenger's process, the body parser),
resident memory, and predictions answered. A window's figures are differences between
the sample at its start and now, so they are exact up to the one-second step:

- ``cpu_pct``: CPU seconds per second of wall time, as a percentage of one core (200 %
  is two cores busy);
- ``cpu_s_per_1k``: CPU seconds per 1,000 predictions, and its inverse
  ``predictions_per_cpu_s`` (idle time is counted: a server that waits costs too);
- with a price per core-hour, ``cost_per_1m`` (per million predictions at the window's
  rate) and ``cost_per_day`` (a day at the window's CPU use).

CPU is counted from the first sample (the server ready to answer: loading the model is
not serving) and, for a process that appears later, from the first sample that sees it. A
process that ends keeps the CPU it used, so the totals never go back. A meter whose newest
sample is older than :attr:`ResourceMeter.STALE_S` reports nothing.

>>> meter = ResourceMeter(windows=[60.0], price=0.04)
>>> meter.add_sample(0.0, cpu_s=0.0, rss_bytes=100e6, predictions=0)
>>> meter.add_sample(10.0, cpu_s=2.0, rss_bytes=120e6, predictions=4000)
>>> w = meter.window(10.0, 60.0)
>>> w["cpu_pct"], w["cpu_s_per_1k"], round(w["cost_per_1m"], 4)
(20.0, 0.5, 0.0056)
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from nbdeploy.monitoring.ring import Ring

__all__ = ["ProcessSampler", "ResourceMeter", "merge_windows"]

_MB = 1024 * 1024


class ResourceMeter:
    """One-second samples of CPU seconds, RSS and predictions, and each window's figures."""

    STEP_S = 0.9  # samples closer than this to the last one are not kept (a Ray replica reports twice a second)
    STALE_S = 5.0  # a meter whose newest sample is older than this says nothing (a process gone, a replica replaced)

    def __init__(self, windows: Iterable[float], price: float | None = None) -> None:
        self.price = price  # per core-hour; None: no cost figures
        longest = max(windows, default=3600.0)
        columns = {n: (np.float64, ()) for n in ("ts", "cpu", "rss", "pred")}
        self.samples = Ring(int(longest / self.STEP_S) + 120, columns)
        self._lock = threading.Lock()

    def add_sample(self, ts: float, cpu_s: float, rss_bytes: float, predictions: float) -> None:
        with self._lock:
            if self.samples.count and ts - self.samples.last < self.STEP_S:
                return
            self.samples.append({"ts": np.array([ts]), "cpu": np.array([cpu_s]), "rss": np.array([rss_bytes]),
                                 "pred": np.array([predictions])}, 1)  # fmt: skip

    def window(self, now: float, seconds: float) -> dict[str, Any] | None:
        """The figures of ``[now - seconds, now]``, from the sample at or before its start to the
        newest; ``None`` before two samples or when the newest is stale. ``covered_s`` says how
        much of the window the samples span (less while the server is young)."""
        with self._lock:
            ring = self.samples
            first = max(0, ring.count - ring.capacity)
            if ring.count - first < 2 or now - ring.last > self.STALE_S:
                return None
            lo, hi = ring.span(now - seconds, now)
            lo = max(first, lo - 1)  # the sample at or before the window's start
            if hi - lo < 2:
                return None
            at = {n: ring.cols[n][np.arange(lo, hi) % ring.capacity] for n in ("ts", "cpu", "rss", "pred")}
        return self._figures(at)

    def _figures(self, at: Mapping[str, np.ndarray]) -> dict[str, Any]:
        wall = float(at["ts"][-1] - at["ts"][0])
        cpu, predictions = float(at["cpu"][-1] - at["cpu"][0]), float(at["pred"][-1] - at["pred"][0])
        out: dict[str, Any] = {
            "covered_s": round(wall, 3),
            "cpu_s": round(cpu, 4),
            "cpu_pct": round(100 * cpu / wall, 2) if wall > 0 else None,
            "rss_mb": round(float(at["rss"][-1]) / _MB, 1),
            "rss_peak_mb": round(float(at["rss"].max()) / _MB, 1),
            "predictions": int(predictions),
            "cpu_s_per_1k": 1000 * cpu / predictions if predictions else None,
            "predictions_per_cpu_s": predictions / cpu if cpu > 0 else None,
            "core_hour_price": self.price,
            "cost_per_1m": None,
            "cost_per_day": None,
        }
        if self.price is not None:
            if predictions:
                out["cost_per_1m"] = self.price * cpu / 3600 * 1e6 / predictions
            if wall > 0:
                out["cost_per_day"] = self.price * cpu / wall * 24
        return out


def merge_windows(parts: Iterable[Mapping[str, Any] | None], price: float | None) -> dict[str, Any] | None:
    """One window's figures over several meters (Ray replicas): sums of CPU, memory and
    predictions, over the longest span any of them covers."""
    given = [p for p in parts if p]
    if not given:
        return None
    wall = max(p["covered_s"] for p in given)
    cpu, predictions = sum(p["cpu_s"] for p in given), sum(p["predictions"] for p in given)
    meter = ResourceMeter([wall + 1], price)
    rss = sum(p["rss_mb"] for p in given) * _MB
    meter.add_sample(0.0, 0.0, sum(p["rss_peak_mb"] for p in given) * _MB, 0)
    meter.add_sample(wall, cpu, rss, predictions)
    return meter.window(wall, wall + 1)


class ProcessSampler:
    """The running totals of a process (this one by default) and its children, read with ``psutil``.

    Each process counts from the first reading that sees it: the server's own start and a
    challenger's model loading are not serving. ``roles`` names the children that matter
    (``{pid: "canary 2"}``); others are ``helper``. :meth:`processes` gives each one's
    figures, :meth:`spent_by_role` the CPU of each role with ended processes kept (a counter).
    Readings come from a worker thread while the loop asks: one lock covers both.
    """

    def __init__(self, roles: Callable[[], Mapping[int, str]] | None = None, pid: int | None = None) -> None:
        import psutil  # the server only: the kernel never samples a process

        self._psutil = psutil
        self._root = psutil.Process(pid or os.getpid())
        self.roles = roles or (lambda: {})
        self._known: dict[int, float] = {}  # pid -> CPU seconds at its last reading
        self._spent = 0.0  # CPU seconds counted so far, ended processes included
        self._by_role: dict[str, float] = collections.defaultdict(float)
        self._made: dict[str, int] = collections.defaultdict(int)  # predictions by role (count())
        self.predictions = 0  # answered predictions (rows), counted by the server
        self._last: dict[int, dict[str, Any]] = {}
        self._recent: collections.deque[tuple[float, dict[int, float]]] = collections.deque(maxlen=61)
        self._lock = threading.Lock()

    def _tree(self, roles: Mapping[int, str]) -> list[Any]:
        """This process, its children, and the processes of ``roles`` it did not start (a Ray
        replica's shadow actor, which Ray starts on the replica's machine)."""
        try:
            tree = [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:  # the root itself ended
            return []
        inside = {process.pid for process in tree}
        for pid in set(roles) - inside:
            try:
                tree.append(self._psutil.Process(pid))
            except self._psutil.Error:  # ended (a restarted actor: its new pid comes with its next answer)
                continue
        return tree

    def read(self) -> tuple[float, float, float, float]:
        """``(time, cpu_s, rss_bytes, predictions)`` now."""
        psutil, now, roles = self._psutil, time.time(), self.roles()
        rss, last = 0.0, {}
        with self._lock:
            for process in self._tree(roles):
                try:
                    with process.oneshot():
                        times, memory = process.cpu_times(), float(process.memory_info().rss)
                except psutil.Error:  # ended between the listing and the reading
                    continue
                pid, cpu = process.pid, float(times.user + times.system)
                role = "server" if pid == self._root.pid else roles.get(pid, "helper")
                delta = max(0.0, cpu - self._known.get(pid, cpu))  # a new process: from now
                self._spent += delta
                self._by_role[role] += delta
                self._known[pid] = cpu
                rss += memory
                last[pid] = {"pid": pid, "role": role, "cpu_s": cpu, "rss_mb": round(memory / _MB, 1)}
            for pid in set(self._known) - set(last):
                del self._known[pid]
            self._last = last
            self._recent.append((now, {pid: p["cpu_s"] for pid, p in last.items()}))
            return now, self._spent, rss, float(self.predictions)

    def count(self, role: str, rows: int) -> None:
        """``rows`` predictions answered, made by the process of ``role`` (``server``, ``canary 2``)."""
        self.predictions += rows
        self._made[role] += rows

    def spent_by_role(self) -> dict[str, float]:
        """CPU seconds each role used since the first reading (ended processes kept: it never goes back)."""
        with self._lock:
            return dict(self._by_role)

    def processes(self) -> list[dict[str, Any]]:
        """Each process of the last reading: pid, role (``server``, ``canary 2``…), its CPU
        seconds since its start, its CPU over the last minute (``cpu_pct_1m``), RSS, and the
        predictions its role answered with their rate per CPU second (a variant's figure)."""
        with self._lock:
            recent, last, spent, made = list(self._recent), dict(self._last), dict(self._by_role), dict(self._made)
        out = []
        for pid, p in last.items():
            t0, cpu0 = next(((t, c[pid]) for t, c in recent if pid in c), (None, None))
            t1 = recent[-1][0] if recent else None
            busy = 100 * (p["cpu_s"] - cpu0) / (t1 - t0) if t0 is not None and t1 is not None and t1 > t0 else None
            # a variant's predictions per CPU second, since its process was first seen
            n, cpu = made.get(p["role"], 0), spent.get(p["role"], 0.0)
            out.append({**p, "cpu_pct_1m": None if busy is None else round(busy, 2), "predictions": n,
                        "predictions_per_cpu_s": n / cpu if n and cpu > 0 else None})  # fmt: skip
        return sorted(out, key=lambda p: (p["role"] != "server", p["pid"]))
