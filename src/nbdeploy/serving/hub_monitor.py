"""The monitoring backend of a Ray replica: ``/monitor``, ``/feedback``, ``/admin/alerts``, ``/experiment``
and the token book of ``/admin/tokens`` answered by the deployment's hub through its Serve
handle (any object whose methods have ``.remote()``). It imports no Ray, so it can be tested with a stand-in handle.

>>> monitor = HubMonitor(serve.get_deployment_handle("Hub", app_name="cancer-monitor"), {"1m": 60.0})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.serving.monitor_routes import checked_rules
from nbdeploy.serving.protocol import ProtocolError

__all__ = ["HubMonitor"]


class HubMonitor:
    """``/monitor``, ``/feedback`` and ``/admin/alerts`` answered by the deployment's hub; a 503
    while it cannot answer (Ray restarting it): serving never waits for monitoring."""

    AWAY = "The monitoring hub of this deployment is not answering (Ray restarts it); try again shortly."

    def __init__(self, hub: Any, windows: dict[str, float]) -> None:
        self.hub = hub
        self.windows = list(windows)

    async def _ask(self, call: Any, *args: Any) -> Any:
        """A hub method's answer, or a 503 when the hub cannot answer in time."""
        try:
            return await asyncio.wait_for(call.remote(*args), timeout=20)
        except Exception as exc:
            print(f"monitoring hub did not answer: {type(exc).__name__}: {exc}", flush=True)
            raise ProtocolError(503, self.AWAY, "TEMPORARILY_UNAVAILABLE") from exc

    async def snapshot(self, names: list[str] | None) -> dict[str, Any]:
        doc: dict[str, Any] = await self._ask(self.hub.snapshot, names)
        return doc

    async def experiment(self) -> dict[str, Any]:
        """The experiment as the hub counts it, over every replica."""
        doc: dict[str, Any] = await self._ask(self.hub.experiment_state)
        return doc

    async def feedback(self, ids: list[Any], targets: list[Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._ask(self.hub.feedback, [str(i) for i in ids], targets)
        return result

    async def set_tokens(self, book: dict[str, list[str]], issued: float, wait_s: float = 5.0) -> bool:
        """The kernel's new token book, kept by the hub and relayed to every replica; whether
        every replica holds it within ``wait_s`` (each takes it with its next report to the hub)."""
        digest = await self._ask(self.hub.set_tokens, book, issued)
        deadline = time.monotonic() + wait_s
        while not await self._ask(self.hub.tokens_reached, digest):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def forget(self, ids: list[str] | None, where: Any) -> dict[str, Any]:
        """``POST /admin/forget`` on Ray: an order every replica carries out on its own log."""
        n = await self._ask(self.hub.forget_open, ids, list(where) if where else None)
        while (answer := await self._ask(self.hub.forget_answer, n)) is None:
            await asyncio.sleep(0.25)
        if "error" in answer:  # the hub restarted meanwhile and lost the order
            raise ProtocolError(503, "The monitoring hub restarted during the forget: run forget again.",
                                "TEMPORARILY_UNAVAILABLE")  # fmt: skip
        if answer.get("unreached"):
            missing, removed = len(answer["unreached"]), answer["removed"]["requests"]
            raise ProtocolError(503, f"Removed {removed} records, but {missing} replica(s) did not answer within a "
                                     "minute: run forget again.", "TEMPORARILY_UNAVAILABLE")  # fmt: skip
        return {"ids": answer["ids"], "removed": answer["removed"]}

    async def set_alerts(self, rules: Any) -> dict[str, Any]:
        checked_rules(AlertBook(), rules)  # a 400 for rules that do not parse, without asking the hub
        result: dict[str, Any] = await self._ask(self.hub.set_alerts, rules)
        if "error" in result:
            raise ProtocolError(400, result["error"])
        return result
