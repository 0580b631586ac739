"""Adaptive micro-batching: concurrent requests share one ``predict`` call.

A request that arrives at an idle server is predicted at once. Requests that arrive while a
``predict`` runs are queued, and the next ``predict`` takes all compatible ones (same
columns and params, so the same method, up to ``max_batch`` rows). ``max_wait_ms`` adds a short wait to gather
more, but only while traffic is concurrent (the previous batch held several requests), so
sequential latency never grows. If a batched ``predict`` fails, its requests are retried
one by one so that only the bad one gets the error. A request of more than ``max_batch``
rows is predicted ``max_batch`` rows at a time, taking turns with the other requests.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.serving.protocol import Parsed, ProtocolError
from nbdeploy.spec import DEFAULTS

__all__ = ["Answer", "Batcher", "PredictError"]


class Answer(list[Any]):
    """One request's predictions; ``confidence``: a classifier's probability of each predicted
    class (for the accuracy estimated before labels), or ``None``."""

    confidence: list[float] | None = None


def _answer(values: list[Any], confidence: list[float] | None) -> Answer:
    out = Answer(values)
    out.confidence = confidence
    return out


class PredictError(Exception):
    """The model raised while predicting on one request's input."""


@dataclass
class _Item:
    parsed: Parsed
    future: asyncio.Future[list[Any]]
    done: list[Any] = field(default_factory=list)  # predictions of the chunks already predicted
    confidence: list[float] | None = None  # a chunked request keeps none: see _chunk

    def next_chunk(self, rows: int) -> Parsed:
        """The next ``rows`` rows not predicted yet, as a request of their own."""
        a, b = len(self.done), min(len(self.done) + rows, self.parsed.rows)
        p = self.parsed
        return Parsed(
            b - a,
            p.columns,
            values=p.values[a:b] if p.values is not None else None,
            frame=p.frame.iloc[a:b] if p.frame is not None else None,
            params=p.params,
            params_key=p.params_key,
        )


_STOPPED = "The model answering this request was stopped while it predicted: send the request again."


class Batcher:
    """Queue of parsed requests and the one worker that predicts on them."""

    def __init__(
        self,
        model: Callable[[], tuple[Callable[..., Any], tuple[str, ...]]],
        max_batch: int = DEFAULTS.max_batch,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
        always_wait: bool = False,
        scored: bool = False,
        enough: int = 0,
    ) -> None:
        self._model = model  # returns (predict, column names) of the model serving now
        self.scored = scored  # predict returns (output, confidence per row or None): LoadedModel.scored_call
        self.max_batch, self.max_wait = max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.always_wait = always_wait  # wait max_wait_ms even for a lone request (nobody waits on a shadow)
        self.enough = enough  # this many queued requests end the wait early (0: never)
        self._enough = asyncio.Event()
        self._in_batch = False
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None
        self._last_requests = 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, True)  # a predict may still run: not on the loop

    @property
    def busy(self) -> bool:
        """Requests queued or being predicted."""
        return bool(self._queue) or self._in_batch

    def take_queued(self) -> list[_Item]:
        """Every queued request, taken out (to be predicted by another batcher)."""
        items = list(self._queue)
        self._queue.clear()
        return items

    def adopt(self, items: list[_Item]) -> None:
        """Predict requests queued elsewhere (their futures are answered from here)."""
        self._queue.extend(items)
        if items:
            self._queued()

    async def submit(self, parsed: Parsed) -> list[Any]:
        """Predictions for one request (a list with one entry per input row)."""
        return await self.enqueue(parsed)

    def enqueue(self, parsed: Parsed) -> asyncio.Future[list[Any]]:
        """Queue one request; its future gets the predictions. For a caller that waits on
        nobody (a shadow's mirror): no task of its own to start and to wake."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(parsed, future))
        self._queued()
        return future

    def _queued(self) -> None:
        """Requests were queued: wake the worker, and end a gather that now has enough."""
        self._wake.set()
        if self.enough and len(self._queue) >= self.enough:
            self._enough.set()

    def _take(self, batch: list[_Item], rows: int) -> int:
        key = batch[0].parsed.key
        kept: collections.deque[_Item] = collections.deque()
        while self._queue:
            item = self._queue.popleft()
            if item.parsed.key == key and rows + item.parsed.rows <= self.max_batch:
                batch.append(item)
                rows += item.parsed.rows
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        return rows

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft()]
            self._in_batch = True  # from here the batch is out of the queue: busy until answered
            try:
                await self._serve(batch)
            except asyncio.CancelledError:  # stopped meanwhile: none of these is left without an answer
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(ProtocolError(503, _STOPPED, "TEMPORARILY_UNAVAILABLE"))
                raise
            except Exception as exc:  # a bug of ours fails this batch, never the batcher and the requests behind it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                self._in_batch = False

    async def _serve(self, batch: list[_Item]) -> None:
        """Gather more requests behind ``batch[0]`` (a very large one is chunked), predict, answer."""
        first = batch[0]
        if first.parsed.rows > self.max_batch:
            await self._chunk(first)
            return
        rows = self._take(batch, first.parsed.rows)
        if self.max_wait and (self._last_requests > 1 or self.always_wait) and rows < self.max_batch:
            await self._gather()
            rows = self._take(batch, rows)
        self._last_requests = len(batch)
        results = await self._predict_batch([i.parsed for i in batch])
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        if self._on_batch:
            self._on_batch(len(batch), rows)

    async def _gather(self) -> None:
        """Wait ``max_wait_ms`` for more requests, or until :attr:`enough` are queued."""
        if not self.enough:
            await asyncio.sleep(self.max_wait)
            return
        self._enough.clear()  # set by an enqueue before this gather: what counts is the queue now
        if len(self._queue) < self.enough:
            # a timer, not wait_for: no task of its own per batch (and 3.10/3.11's wait_for
            # could swallow the cancellation of a batcher being stopped)
            timer = asyncio.get_running_loop().call_later(self.max_wait, self._enough.set)
            try:
                await self._enough.wait()
            finally:
                timer.cancel()

    async def _chunk(self, item: _Item) -> None:
        """Predict ``max_batch`` rows of a request larger than that, then queue the rest
        behind the requests waiting meanwhile: a huge request never holds up the others for
        longer than one ``predict`` of ``max_batch`` rows."""
        chunk = item.next_chunk(self.max_batch)
        [result] = await self._predict_batch([chunk])
        if self._on_batch:
            self._on_batch(1, chunk.rows)
        if item.future.done():  # the client went away
            return
        if isinstance(result, BaseException):
            item.future.set_exception(result)
            return
        item.done.extend(result)
        item.confidence = None  # a request of more rows than a batch: no confidences kept (memory), no estimate
        if len(item.done) < item.parsed.rows:
            self._queue.append(item)
        else:
            item.future.set_result(_answer(item.done, item.confidence))

    async def _predict_batch(self, items: list[Parsed]) -> list[Any]:
        """Predictions (or the error) of each request of one batch. A model in this process
        predicts on the batcher's thread; one in another process (its ``predict`` a
        coroutine) is sent the batch from the event loop, with no thread of ours between
        (each hop of a thread waits for the interpreter lock of a busy server)."""
        predict, names = self._model()
        if not inspect.iscoroutinefunction(predict):
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, items)
        try:
            out = await predict(stack(items), names, items[0].method)
        except ProtocolError as exc:
            return [exc] * len(items)
        except Exception as exc:
            if len(items) == 1:
                return [PredictError(f"{type(exc).__name__}: {exc}")]
            return [(await self._predict_batch([one]))[0] for one in items]
        return _split(out, items)

    def _predict(self, items: list[Parsed]) -> list[Any]:
        predict, names = self._model()
        try:
            raw = predict(frame(stack(items), names), items[0].method)
            raw, confidence = raw if self.scored else (raw, None)
            out = predictions(raw)
        except ProtocolError as exc:  # the request asked for what this model lacks (swapped meanwhile)
            return [exc] * len(items)
        except Exception as exc:
            if len(items) == 1:
                return [PredictError(f"{type(exc).__name__}: {exc}")]
            return [self._predict([one])[0] for one in items]
        return _split(out, items, confidence)


def _split(out: list[Any], items: list[Parsed], confidence: list[float] | None = None) -> list[Any]:
    results, start = [], 0
    for item in items:
        end = start + item.rows
        results.append(_answer(out[start:end], confidence[start:end] if confidence is not None else None))
        start = end
    return results


def stack(items: list[Parsed]) -> Any:
    """The rows of ``items`` as one array (requests of values) or one DataFrame."""
    if items[0].values is not None:
        values = [i.values for i in items if i.values is not None]
        return values[0] if len(values) == 1 else np.vstack(values)
    frames = [i.frame for i in items if i.frame is not None]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def frame(rows: Any, names: tuple[str, ...]) -> pd.DataFrame:
    """What a model is given: a DataFrame with the signature's columns."""
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=list(names))


def predictions(raw: Any) -> list[Any]:
    """A model's output as a list with one entry per row."""
    if isinstance(raw, pd.DataFrame):
        return list(raw.to_dict(orient="records"))
    return list(np.asarray(raw).tolist())
