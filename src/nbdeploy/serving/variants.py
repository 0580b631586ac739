"""A running experiment on the server: the challenger (its model in a process of its own,
:mod:`~nbdeploy.serving.model_process`) and its batcher, the split, the
mirrored (shadow) requests in flight, and the counts per variant.

The challenger has a batcher of its own, so its batches never mix with the champion's and
a slow challenger delays only its own requests. A shadow's prediction is made after the
champion's answer is sent, and logged as a record of its own (``"shadow": true``, with the
request's id and without its inputs, which the champion's record holds), so the request log
holds both predictions of a mirrored request. Mirrors in
flight are bounded: past :data:`MAX_MIRRORS` a mirror is dropped and counted, never queued
without end behind a challenger that cannot keep up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.serving.batching import Batcher
from nbdeploy.serving.experiment_book import ExperimentBook
from nbdeploy.serving.protocol import Parsed
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.responses import error_answer
from nbdeploy.serving.routing import Split

__all__ = ["MAX_MIRRORS", "Experiment", "MirrorDropped"]

MAX_MIRRORS = 1024
MAX_MIRROR_ROWS = 100_000  # rows of mirrored requests held at once (their parsed inputs are in memory)
# a shadow's batch gathers mirrors this long (nobody waits on its answers), or until SHADOW_BATCH
# more are queued behind its first: each batch sent and answered costs the loop a moment, which
# one client in ten to twenty felt with batches of 50 ms (client p99 1.17x); the count keeps a
# fast server's mirrors well inside MAX_MIRRORS
SHADOW_WAIT_MS = 250.0
SHADOW_BATCH = 256
DEFER_S = 0.05  # an answered mirror waits at most this long for a moment when no client is answered
WRITE_CHUNK = 16  # answered mirrors written down per turn of the loop (one write of their records)
_DRAIN_S = 30.0


class MirrorDropped(Exception):
    """A mirror the shadow never got: past the bound of mirrors in flight, or the experiment ended."""


class _Answered(NamedTuple):
    """A mirror the shadow answered (or failed), waiting to be written down."""

    since: float  # monotonic time it was answered
    ts: float  # when the request came
    rid: str
    rows: int
    latency_ms: float
    answered: float  # wall-clock time it was answered
    future: asyncio.Future[list[Any]]  # its predictions, or the shadow's error
    champion: list[Any]  # the champion's predictions, to compare


class Experiment:
    """The challenger of one experiment, served beside the champion; its accounts are in
    :attr:`book` (:class:`~nbdeploy.serving.experiment_book.ExperimentBook`)."""

    def __init__(self, spec: ExperimentSpec, model: Any, names: tuple[str, ...], log: RequestLog,
                 max_batch: int, max_wait_ms: float, log_rows: int, task: str | None = None,
                 profile: dict[str, Any] | None = None, counts_here: bool = True) -> None:  # fmt: skip
        # False on a Ray replica whose hub counts every replica's records: accounts kept here too
        # were request-path work nobody read (their distributions binned inline every 4,096 requests)
        self.counts_here = counts_here
        self.spec, self.split, self.model, self.log, self.log_rows = spec, Split.of(spec), model, log, log_rows
        shadow = spec.kind == "shadow"
        wait = max(max_wait_ms, SHADOW_WAIT_MS) if shadow else max_wait_ms
        self.batcher = Batcher(lambda: (model.predict, names), max_batch, wait, always_wait=shadow,
                               enough=SHADOW_BATCH if shadow else 0)  # fmt: skip
        self._mirror_rows = 0
        self.book = ExperimentBook(spec, names, task, profile)
        self.deciding = False  # an automatic promotion or rollback is under way
        self._mirrors: set[asyncio.Future[list[Any]]] = set()  # queued on the shadow's batcher
        self._pending: deque[_Answered] = deque()  # answered mirrors waiting to be written down
        self._drops = 0  # of those, mirrors dropped (MirrorDropped)
        self._draining = False
        self._timer: asyncio.TimerHandle | None = None
        self.answering: Callable[[], int] = lambda: 0  # requests the server is answering (set by the server)

    @property
    def label(self) -> str:
        return self.spec.label

    def start(self) -> None:
        self.batcher.start()

    async def predict(self, parsed: Parsed) -> list[Any]:
        """The challenger's predictions for a request it answers."""
        return await self.batcher.submit(parsed)

    def observe(self, variant: str, status: int, failed: bool, latency_ms: float, rid: str, predictions: Any,
                shadow: bool = False, inputs: Any = None, pinned: bool = False) -> None:  # fmt: skip
        if self.counts_here:
            self.book.observe(variant, status, failed, latency_ms, rid, predictions, shadow, inputs, pinned)

    def verdict(self) -> tuple[str, str] | None:
        return self.book.verdict()

    def fold(self) -> None:
        """The distributions' binning (off the event loop), before a verdict is asked."""
        self.book.distributions.fold()

    def refuse_promotion(self, why: str) -> None:
        """The registry refused the promotion: promote rules stop here, rollback rules go on."""
        self.book.promotion_refused = why

    def add_labels(self, rid: str, labels: list[Any]) -> bool:
        """Score both variants on a request's labels; whether this experiment knew the request."""
        return self.book.arms.label(rid, labels)

    def replay(self, records: Iterable[dict[str, Any]]) -> int:
        """Count the logged requests of this experiment after a restart."""
        return self.book.ingest(records)

    def mirror(self, parsed: Parsed, rid: str, champion: list[Any]) -> None:
        """Send an answered request to the shadow, after its answer; dropped past the bound.
        Queued straight on the shadow's batcher, with a callback for its answer: a task per
        mirror woke a dozen times at once when a shadow batch came back, ahead of the next
        client."""
        in_flight = self.in_flight()
        if in_flight >= MAX_MIRRORS or self._mirror_rows + parsed.rows > MAX_MIRROR_ROWS:
            self._dropped(time.time(), rid, parsed.rows, f"{in_flight} mirrors, {self._mirror_rows} rows in flight")
            return
        self._mirror_rows += parsed.rows
        future = self.batcher.enqueue(parsed)
        self._mirrors.add(future)
        sent = (time.perf_counter(), time.time(), rid, parsed.rows, champion)
        future.add_done_callback(lambda done: self._mirrored(done, *sent))

    def _mirrored(self, future: asyncio.Future[list[Any]], started: float, ts: float, rid: str, rows: int,
                  champion: list[Any]) -> None:  # fmt: skip
        """The shadow's answer (or failure) is in: kept for :meth:`_drain`, nothing more here."""
        latency = round((time.perf_counter() - started) * 1000, 3)
        self._mirrors.discard(future)
        self._mirror_rows -= rows
        if future.cancelled():
            self._dropped(ts, rid, rows, "the experiment ended before the shadow answered")
            return
        self._pending.append(_Answered(time.monotonic(), ts, rid, rows, latency, time.time(), future, champion))
        self._drain_soon()

    def in_flight(self) -> int:
        """Mirrors sent and not written down yet (answered ones too); drops are none."""
        return len(self._mirrors) + len(self._pending) - self._drops

    def _dropped(self, ts: float, rid: str, rows: int, why: str) -> None:
        """A mirror the shadow will not answer: counted now, and written down with the answered
        ones (chunked, off the request) as a shadow record with ``"dropped": true``, from which
        a Ray hub (which counts only records) and a restart's replay count it too."""
        self.book.count(self.label, "mirror_dropped")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        future.set_exception(MirrorDropped(why))
        self._drops += 1
        self._pending.append(_Answered(time.monotonic(), ts, rid, rows, 0.0, time.time(), future, []))
        self._drain_soon()

    def _record(self, answer: _Answered) -> tuple[dict[str, Any], list[Any] | None]:
        """A mirror's log record (without inputs: the champion's record of the same id has
        them) and the shadow's predictions (``None`` if it failed)."""
        record: dict[str, Any] = {"ts": answer.ts, "id": answer.rid, "variant": self.label}
        record.update(version=self.spec.challenger.version, shadow=True, rows=answer.rows)
        predictions: list[Any] | None = None
        exc = answer.future.exception()
        if exc is None:
            predictions = answer.future.result()
            record.update(predictions=predictions[: self.log_rows], status=200)
        elif isinstance(exc, MirrorDropped):
            record.update(dropped=True, status=503, error=f"Not mirrored: {exc}.")
        else:  # the shadow's failure is logged; the client had its answer
            status, body = error_answer(exc)
            record.update(error=body["message"], status=status)
        record.update(latency_ms=answer.latency_ms, answered=answer.answered)
        return record, predictions

    def quiet(self) -> None:
        """The server has no request to answer: a good time to write a mirror down."""
        if self._pending:
            self._drain_soon()

    def _drain_soon(self) -> None:
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """Write down up to :data:`WRITE_CHUNK` answered mirrors (their log records in one
        write, their counts) per turn of the loop, while the server answers nobody, or once
        the oldest has waited :data:`DEFER_S`. One at a time, a shadow batch's mirrors
        outnumbered the quiet moments between one client's requests and were written down
        while requests were answered, the loop then contending with their predictions for
        the interpreter lock; a whole batch at once held up the next client by a batch's work."""
        self._draining = False
        loop = asyncio.get_running_loop()
        if not self._pending:
            return
        waited = time.monotonic() - self._pending[0].since
        if self.answering() and waited < DEFER_S:  # quiet() calls again; this timer if it never comes
            if self._timer is None:
                self._timer = loop.call_later(DEFER_S - waited, self._on_timer)
            return
        try:
            self._write_down(self._next_chunk())
        finally:
            if self._pending:
                self._drain_soon()

    def _on_timer(self) -> None:
        self._timer = None
        self._drain_soon()

    def _next_chunk(self) -> list[_Answered]:
        """The oldest answered mirrors, up to :data:`WRITE_CHUNK`, taken off the queue."""
        return [self._pending.popleft() for _ in range(min(WRITE_CHUNK, len(self._pending)))]

    def _write_down(self, answers: list[_Answered]) -> None:
        """Log ``answers`` in one write, then count each: a full disk or a bug in the accounts
        is said, and the next mirrors and the experiment's end go on."""
        written = [self._record(answer) for answer in answers]
        self._drops -= sum(1 for record, _ in written if record.get("dropped"))
        try:
            self.log.append_many([record for record, _ in written])
        except Exception as exc:
            print(f"experiment: {len(answers)} shadow answers were not logged: {type(exc).__name__}: {exc}", flush=True)
        if not self.counts_here:
            return
        for answer, (record, predictions) in zip(answers, written, strict=True):
            if record.get("dropped"):  # counted when it was dropped
                continue
            try:
                status, rid = record["status"], record["id"]
                if predictions is not None:
                    self.book.compare(rid, answer.champion, predictions)
                predicted = record.get("predictions") if status == 200 else None
                self.observe(self.label, status, status != 200, record["latency_ms"], rid, predicted, shadow=True)
            except Exception as exc:
                print(f"experiment: a shadow's answer was not counted: {type(exc).__name__}: {exc}", flush=True)

    def flush(self) -> None:
        """Write down every answered mirror now (the experiment ends, the server stops)."""
        while self._pending:
            self._write_down(self._next_chunk())

    async def drop_mirrors(self) -> None:
        """Cancel the mirrors in flight (each then dropped), and write down every mirror:
        before a Ray replica's last forward to its hub, which sends what is logged."""
        for future in list(self._mirrors):
            future.cancel()
        await asyncio.sleep(0)  # the callbacks of mirrors answered just before run now: written, not lost
        self.flush()

    async def close(self, fallback: Batcher) -> None:
        """Stop the challenger without leaving a client unanswered: mirrors (which answer
        nobody) are cancelled and counted as dropped; requests it answers are finished, and
        any still queued after :data:`_DRAIN_S` are handed to ``fallback`` (the champion's)."""
        await self.drop_mirrors()
        if self.spec.kind == "shadow":
            self.batcher.take_queued()  # cancelled mirrors: neither the shadow nor the champion predicts them
        self.flush()
        deadline = time.monotonic() + _DRAIN_S
        while self.batcher.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        fallback.adopt(self.batcher.take_queued())
        await self.batcher.stop()
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
        await asyncio.to_thread(self.model.stop)

    def state(self) -> dict[str, Any]:
        """What ``GET /experiment`` shows."""
        return {**self.book.state(), "mirrors_in_flight": self.in_flight()}
