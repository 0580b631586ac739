"""A running experiment on the server: the challenger's model and batcher, the split, the
mirrored (shadow) requests in flight, and the counts per variant.

The challenger has a batcher of its own, so its batches never mix with the champion's and
a slow challenger delays only its own requests. A shadow's prediction is made after the
champion's answer is sent, and logged as a record of its own (``"shadow": true``, with the
request's id), so the request log holds both predictions of a mirrored request. Mirrors in
flight are bounded: past :data:`MAX_MIRRORS` a mirror is dropped and counted, never queued
without end behind a challenger that cannot keep up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from nbdeploy.experiment import CHAMPION, ExperimentSpec
from nbdeploy.serving.batching import Batcher
from nbdeploy.serving.loader import LoadedModel
from nbdeploy.serving.protocol import Parsed, Schema
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.responses import error_answer
from nbdeploy.serving.routing import Split

__all__ = ["MAX_MIRRORS", "Experiment"]

MAX_MIRRORS = 1024
_DRAIN_S = 30.0


class Experiment:
    """The challenger of one experiment, served beside the champion."""

    def __init__(self, spec: ExperimentSpec, model: LoadedModel, log: RequestLog, max_batch: int,
                 max_wait_ms: float, log_rows: int,
                 on_batch: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
        self.spec, self.split, self.model, self.log, self.log_rows = spec, Split.of(spec), model, log, log_rows
        names = Schema.from_signature(model.inputs).names
        self.batcher = Batcher(lambda: (model.predict, names), max_batch, max_wait_ms, on_batch)
        self.counts: dict[str, Counter[str]] = {CHAMPION: Counter(), spec.label: Counter()}
        self._mirrors: set[asyncio.Task[None]] = set()
        self._in_flight = 0

    @property
    def label(self) -> str:
        return self.spec.label

    def start(self) -> None:
        self.batcher.start()

    async def predict(self, parsed: Parsed) -> list[Any]:
        """The challenger's predictions for a request it answers."""
        self._in_flight += 1
        try:
            return await self.batcher.submit(parsed)
        finally:
            self._in_flight -= 1

    def count(self, variant: str, status: int, shadow: bool = False) -> None:
        counts = self.counts.setdefault(variant, Counter())
        counts["shadowed" if shadow else "requests"] += 1
        if status >= 500 or (shadow and status != 200):
            counts["shadow_errors" if shadow else "errors"] += 1

    def mirror(self, parsed: Parsed, rid: str, values: Any) -> None:
        """Send an answered request to the shadow, after its answer; dropped past the bound."""
        if len(self._mirrors) >= MAX_MIRRORS:
            self.counts[self.label]["mirror_dropped"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._mirror(parsed, rid, values))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _mirror(self, parsed: Parsed, rid: str, values: Any) -> None:
        started, status, record = time.perf_counter(), 200, {"ts": time.time(), "id": rid}
        record.update(variant=self.label, version=self.spec.challenger.version, shadow=True, rows=parsed.rows)
        try:
            predictions = await self.predict(parsed)
            record["predictions"] = predictions[: self.log_rows]
        except Exception as exc:  # the shadow's failure is logged; the client had its answer
            status, body = error_answer(exc)
            record["error"] = body["message"]
        if values is not None:
            record["inputs"] = values[: self.log_rows].tolist()
        record.update(status=status, latency_ms=round((time.perf_counter() - started) * 1000, 3), answered=time.time())
        self.log.append(record)
        self.count(self.label, status, shadow=True)

    def replay(self, records: Iterable[dict[str, Any]]) -> int:
        """Count the logged requests of this experiment (answered since it started) after a restart."""
        n = 0
        for r in records:
            answered = r.get("answered")
            variant = r.get("variant")
            if not isinstance(answered, (int, float)) or answered < self.spec.started or not isinstance(variant, str):
                continue
            status = r.get("status")
            self.count(variant, status if isinstance(status, int) else 0, shadow=r.get("shadow") is True)
            n += 1
        return n

    async def close(self) -> None:
        """Finish what the challenger was given (answers and mirrors), then stop its batcher."""
        deadline = time.monotonic() + _DRAIN_S
        while (self._in_flight or self._mirrors) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self.batcher.stop()

    def state(self) -> dict[str, Any]:
        """What ``GET /experiment`` shows."""
        s, c = self.spec, self.spec.challenger
        return {
            "kind": s.kind, "percent": s.percent, "sticky_column": s.sticky_column, "sticky_header": s.sticky_header,
            "started": s.started, "challenger": {"label": self.label, "ref": c.ref, "version": c.version},
            "counts": {variant: dict(counts) for variant, counts in self.counts.items()},
            "mirrors_in_flight": len(self._mirrors),
        }  # fmt: skip
