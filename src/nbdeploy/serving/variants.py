"""A running experiment on the server: the challenger (its model in a process of its own,
:mod:`~nbdeploy.serving.model_process`) and its batcher, the split, the
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
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from nbdeploy.experiment import CHAMPION, ExperimentSpec
from nbdeploy.serving.arms import Arms
from nbdeploy.serving.batching import Batcher
from nbdeploy.serving.model_process import ModelProcess
from nbdeploy.serving.protocol import Parsed
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.responses import MODEL_FAILED, error_answer
from nbdeploy.serving.routing import Split
from nbdeploy.serving.variant_distributions import VariantDistributions

__all__ = ["MAX_MIRRORS", "Experiment"]

MAX_MIRRORS = 1024
MAX_MIRROR_ROWS = 100_000  # rows of mirrored requests held at once (their parsed inputs are in memory)
SHADOW_WAIT_MS = 50.0  # a shadow's batch gathers mirrors this long: nobody waits on its answers
_DRAIN_S = 30.0


class Experiment:
    """The challenger of one experiment, served beside the champion."""

    def __init__(self, spec: ExperimentSpec, model: ModelProcess, names: tuple[str, ...], log: RequestLog,
                 max_batch: int, max_wait_ms: float, log_rows: int, task: str | None = None,
                 profile: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.spec, self.split, self.model, self.log, self.log_rows = spec, Split.of(spec), model, log, log_rows
        shadow = spec.kind == "shadow"
        wait = max(max_wait_ms, SHADOW_WAIT_MS) if shadow else max_wait_ms
        self.batcher = Batcher(lambda: (model.predict, names), max_batch, wait, always_wait=shadow)
        self._mirror_rows = 0
        self.counts: dict[str, Counter[str]] = {CHAMPION: Counter(), spec.label: Counter()}
        self.arms = Arms(task, [CHAMPION, spec.label])
        self.distributions = VariantDistributions(names, profile, task, [CHAMPION, spec.label])
        self.deciding = False  # an automatic promotion or rollback is under way
        self.promotion_refused: str | None = None  # the registry's refusal: promote rules stop here
        self._mirrors: set[asyncio.Task[None]] = set()
        self.disagreements: deque[dict[str, Any]] = deque(maxlen=20)  # the last rows a shadow answered otherwise

    @property
    def label(self) -> str:
        return self.spec.label

    def start(self) -> None:
        self.batcher.start()

    async def predict(self, parsed: Parsed) -> list[Any]:
        """The challenger's predictions for a request it answers."""
        return await self.batcher.submit(parsed)

    def observe(self, variant: str, status: int, failed: bool, latency_ms: float, rid: str, predictions: Any,
                shadow: bool = False, inputs: Any = None) -> None:  # fmt: skip
        """Count one answered (or mirrored) request; ``failed``: the model failed on it (a 5xx,
        or a predict that raised), which is what ``error_rate`` rules compare."""
        counts = self.counts.setdefault(variant, Counter())
        counts["shadowed" if shadow else "requests"] += 1
        if failed:
            counts["shadow_errors" if shadow else "errors"] += 1
        self.arms.request(variant, rid, failed, latency_ms, predictions if status == 200 else None)
        if status == 200:
            self.distributions.add(variant, inputs, predictions)

    def verdict(self) -> tuple[str, str] | None:
        """``("rollback" | "promote", why)`` once the rules decide, else ``None``: any rollback
        rule that holds ends the experiment; every promote rule must hold to promote."""
        s = self.spec
        for rule in s.rollback_when:
            v = self.arms.decide(rule, s.min_labels)
            if v.decided and v.holds:
                return "rollback", f"{rule} holds ({v.reason})"
        if s.promote_when and self.promotion_refused is None:
            verdicts = [self.arms.decide(rule, s.min_labels) for rule in s.promote_when]
            if all(v.decided and v.holds for v in verdicts):
                return "promote", "; ".join(f"{r} holds" for r in s.promote_when)
        return None

    def mirror(self, parsed: Parsed, rid: str, values: Any, champion: list[Any]) -> None:
        """Send an answered request to the shadow, after its answer; dropped past the bound."""
        if len(self._mirrors) >= MAX_MIRRORS or self._mirror_rows + parsed.rows > MAX_MIRROR_ROWS:
            self.counts[self.label]["mirror_dropped"] += 1
            return
        self._mirror_rows += parsed.rows
        task = asyncio.get_running_loop().create_task(self._mirror(parsed, rid, values, champion))
        self._mirrors.add(task)
        task.add_done_callback(lambda done: self._mirrored(done, parsed.rows))

    def _mirrored(self, task: asyncio.Task[None], rows: int) -> None:
        self._mirrors.discard(task)
        self._mirror_rows -= rows
        if task.cancelled():
            self.counts[self.label]["mirror_dropped"] += 1

    async def _mirror(self, parsed: Parsed, rid: str, values: Any, champion: list[Any]) -> None:
        started, status, record = time.perf_counter(), 200, {"ts": time.time(), "id": rid}
        record.update(variant=self.label, version=self.spec.challenger.version, shadow=True, rows=parsed.rows)
        try:
            predictions = await self.predict(parsed)
            record["predictions"] = predictions[: self.log_rows]
            self._compare(rid, champion, predictions)
        except Exception as exc:  # the shadow's failure is logged; the client had its answer
            status, body = error_answer(exc)
            record["error"] = body["message"]
        if values is not None:
            record["inputs"] = values[: self.log_rows].tolist()
        latency = round((time.perf_counter() - started) * 1000, 3)
        record.update(status=status, latency_ms=latency, answered=time.time())
        self.log.append(record)
        predicted = record.get("predictions") if status == 200 else None
        self.observe(self.label, status, status != 200, latency, rid, predicted, shadow=True, inputs=values)

    def _compare(self, rid: str, champion: list[Any], shadow: list[Any]) -> None:
        """Count the rows where the shadow agrees with the champion; keep the last disagreements."""
        counts = self.counts[self.label]
        for row, (a, b) in enumerate(zip(champion, shadow, strict=False)):
            if _same(a, b):
                counts["agree_rows"] += 1
            else:
                counts["disagree_rows"] += 1
                self.disagreements.append({"id": rid, "row": row, "champion": a, "challenger": b})

    def replay(self, records: Iterable[dict[str, Any]]) -> int:
        """Count the logged requests of this experiment (answered since it started) after a
        restart, and a shadow's agreement from the pairs of records of one request id."""
        n, pending = 0, OrderedDict[str, Any]()
        for r in records:
            answered, variant = r.get("answered"), r.get("variant")
            if not isinstance(answered, (int, float)) or answered < self.spec.started or not isinstance(variant, str):
                continue
            status, shadow = r.get("status"), r.get("shadow") is True
            status = status if isinstance(status, int) else 0
            predictions, rid, latency = r.get("predictions"), str(r.get("id")), r.get("latency_ms")
            failed = status >= 500 or (shadow and status != 200) or str(r.get("error", "")).startswith(MODEL_FAILED)
            latency = float(latency) if isinstance(latency, (int, float)) else math.nan
            self.observe(variant, status, failed, latency, rid, predictions, shadow=shadow, inputs=r.get("inputs"))
            n += 1
            if self.spec.kind == "shadow" and isinstance(predictions, list):
                if not shadow:
                    pending[rid] = predictions
                    if len(pending) > MAX_MIRRORS * 100:
                        pending.popitem(last=False)
                elif rid in pending:
                    self._compare(rid, pending.pop(rid), predictions)
        return n

    async def close(self, fallback: Batcher) -> None:
        """Stop the challenger without leaving a client unanswered: mirrors (which answer
        nobody) are cancelled and counted as dropped; requests it answers are finished, and
        any still queued after :data:`_DRAIN_S` are handed to ``fallback`` (the champion's)."""
        for task in list(self._mirrors):
            task.cancel()
        deadline = time.monotonic() + _DRAIN_S
        while self.batcher.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        fallback.adopt(self.batcher.take_queued())
        await self.batcher.stop()
        await asyncio.to_thread(self.model.stop)

    def _agreement(self) -> dict[str, Any] | None:
        if self.spec.kind != "shadow":
            return None
        counts = self.counts[self.label]
        rows = counts["agree_rows"] + counts["disagree_rows"]
        rate = counts["agree_rows"] / rows if rows else None
        return {"rows": rows, "rate": rate, "disagreements": list(self.disagreements)}

    def state(self) -> dict[str, Any]:
        """What ``GET /experiment`` shows."""
        s, c = self.spec, self.spec.challenger
        return {
            "kind": s.kind, "percent": s.percent, "sticky_column": s.sticky_column, "sticky_header": s.sticky_header,
            "started": s.started, "challenger": {"label": self.label, "ref": c.ref, "version": c.version},
            "counts": {variant: dict(counts) for variant, counts in self.counts.items()},
            "mirrors_in_flight": len(self._mirrors), "agreement": self._agreement(), "stats": self.arms.summary(),
            "distributions": self.distributions.summary(),
            "rules": {"promote_when": s.promote_when, "rollback_when": s.rollback_when, "min_labels": s.min_labels},
            "promotion_refused": self.promotion_refused,
        }  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    """Equal predictions: the same label, or numbers within a relative 1e-9 (regression)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
