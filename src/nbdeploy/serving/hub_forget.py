"""``forget`` on Ray: the hub hands each order to every replica and answers once all did it.

A replica's request log is on its own machine and only that replica appends to it, so only
it may filter it. ``POST /admin/forget`` on any replica opens an order at the hub; each
replica is given the orders it has not done with the answer to its next report (twice a
second), removes the matching requests from its own log, and reports their ids and how
many records went. Once every replica reporting has done it (or :data:`WAIT_S` passed), the
hub removes the labels of those ids from ``feedback.jsonl`` (which it writes) and the
requests from the logs in its folder that no replica writes any more (replaced replicas',
as for retention), and the order's answer is ready: ``{"ids", "removed": {"requests",
"feedback"}, "unreached": [replicas that did not do it]}``.

>>> orders = HubForget(lambda ids, where, found: (found | set(ids or []), 0, 1), lambda: {"r1"})
>>> n = orders.open(["a"], None)
>>> orders.pending_for("r1")[0]["ids"], orders.answer(n)
(['a'], None)
>>> orders.report("r1", {n: [["a"], 1]})
>>> time.sleep(SETTLE_S); orders.answer(n)
{'ids': 1, 'removed': {'requests': 1, 'feedback': 1}, 'unreached': []}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbdeploy.log_files import not_of
from nbdeploy.privacy import LogPrivacy
from nbdeploy.serving.forgetting import matching_ids
from nbdeploy.serving.hub_retention import orphan_logs
from nbdeploy.serving.requestlog import RequestLog

__all__ = ["WAIT_S", "ForgetMethods", "HubForget", "hub_part"]

WAIT_S = 60.0  # a replica that has not done an order by then is named in its answer
SETTLE_S = 1.5  # three reports: every replica reporting has been seen (a hub just restarted knows none yet)
KEEP_S = 600.0  # an order's answer is kept this long for the replica that asked


class HubForget:
    """The forget orders of one Ray deployment, kept by its hub.

    ``finish(ids, where, found)`` removes, at the hub, the labels of ``found`` and the matching
    requests of logs no replica writes: ``(ids in all, requests removed, labels removed)``.
    ``live()`` names the replicas reporting now."""

    def __init__(self, finish: Callable[[list[str] | None, Any, set[str]], tuple[set[str], int, int]],
                 live: Callable[[], set[str]]) -> None:  # fmt: skip
        self.finish, self.live = finish, live
        self.orders: dict[int, dict[str, Any]] = {}
        self.next = 1
        self.lock = threading.Lock()

    def open(self, ids: list[str] | None, where: Any) -> int:
        with self.lock:
            n, self.next = self.next, self.next + 1
            self.orders[n] = {"n": n, "ids": ids, "where": where, "done": {}, "opened": time.time(), "answer": None}
            for old in [k for k, o in self.orders.items() if time.time() - o["opened"] > KEEP_S]:
                del self.orders[old]
            return n

    def pending_for(self, replica: str) -> list[dict[str, Any]]:
        """The orders ``replica`` has not done: ``{"n", "ids", "where"}`` each."""
        with self.lock:
            return [{"n": o["n"], "ids": o["ids"], "where": o["where"]} for o in self.orders.values()
                    if o["answer"] is None and replica not in o["done"]]  # fmt: skip

    def report(self, replica: str, done: Any) -> None:
        """What ``replica`` did: ``{n: [ids found, records removed]}``."""
        if not isinstance(done, dict):
            return
        with self.lock:
            for n, result in done.items():
                try:
                    found, removed = result
                    order = self.orders.get(int(n))
                    if order is not None:
                        order["done"][replica] = ({str(i) for i in found}, int(removed))
                except (TypeError, ValueError):  # not what a replica sends: ignored, never a failed report
                    continue

    def answer(self, n: int) -> dict[str, Any] | None:
        """The order's answer once every replica reporting did it (or :data:`WAIT_S` passed);
        ``None`` until then. The hub's own part runs once, here."""
        with self.lock:
            order = self.orders.get(n)
            if order is None:
                return {"error": "unknown order"}
            if order["answer"] is not None:
                return dict(order["answer"])
            live, done, age = self.live(), dict(order["done"]), time.time() - order["opened"]
            if age < SETTLE_S or not (live <= set(done) or age > WAIT_S):
                return None
            found: set[str] = set().union(*(f for f, _ in done.values())) if done else set()
            ids, requests, labels = self.finish(order["ids"], order["where"], found)
            removed = {"requests": requests + sum(r for _, r in done.values()), "feedback": labels}
            answer = {"ids": len(ids), "removed": removed, "unreached": sorted(live - set(done))}
            order["answer"] = answer
            return dict(answer)


def hub_part(folder: Path, feedback: RequestLog, matcher: LogPrivacy, live: Callable[[], set[str]],
             started: float) -> Callable[[list[str] | None, Any, set[str]], tuple[set[str], int, int]]:  # fmt: skip
    """What the hub removes itself: from the logs no replica writes, the matching requests;
    from ``feedback.jsonl``, the labels of every request removed anywhere."""

    def finish(ids: list[str] | None, where: Any, found: set[str]) -> tuple[set[str], int, int]:
        every = set(found) | set(ids or [])
        requests = 0
        for path in orphan_logs(folder, live(), started):
            with RequestLog(path) as log:
                here = matching_ids(log, matcher, *where) if where else set(ids or [])
                every |= here
                requests += log.remove(not_of(here)) if here else 0
        labels = feedback.remove(not_of(every)) if every else 0
        return every, requests, labels

    return finish


class ForgetMethods:
    """The hub's methods of a forget, called by the replica that was asked (``self.forgets``)."""

    forgets: HubForget

    def forget_open(self, ids: list[str] | None, where: Any) -> int:
        return self.forgets.open(ids, where)

    def forget_answer(self, n: int) -> dict[str, Any] | None:
        return self.forgets.answer(n)
