"""The micro-batcher with a real model: grouping by columns and params, splitting results back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.serving.batching import Batcher, PredictError
from nbdeploy.serving.protocol import Schema, parse

SCHEMA = Schema.from_signature([{"name": "a", "type": "double"}, {"name": "b", "type": "double"}])


def body(rows: list[list[float]], params: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"dataframe_split": {"columns": ["a", "b"], "data": rows}}
    if params:
        doc["params"] = params
    return json.dumps(doc).encode()


def test_compatible_requests_share_a_call_and_others_do_not() -> None:
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LinearRegression().fit(X, X["a"] * 2 + X["b"])
    calls: list[int] = []

    def predict(frame: pd.DataFrame, method: str = "predict") -> np.ndarray:
        calls.append(len(frame))
        assert list(frame.columns) == ["a", "b"]
        return model.predict(frame)

    async def scenario() -> list[Any]:
        batcher = Batcher(lambda: (predict, SCHEMA.names), max_batch=100)
        batcher.start()
        requests = [parse(body([[float(i), 1.0]]), "application/json", SCHEMA) for i in range(6)]
        requests.append(parse(body([[9.0, 0.0]], {"k": 1}), "application/json", SCHEMA))  # other params
        requests.append(parse(b"a,b\n5,5\n", "text/csv", SCHEMA))  # a frame, not a matrix
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return list(results)

    results = asyncio.run(scenario())
    expected = [[float(v)] for v in model.predict(pd.DataFrame({"a": range(6), "b": [1.0] * 6}))]
    assert [pytest_round(r) for r in results[:6]] == [pytest_round(e) for e in expected]
    assert pytest_round(results[6]) == pytest_round([model.predict(pd.DataFrame({"a": [9.0], "b": [0.0]}))[0]])
    assert sum(calls) == 8 and len(calls) == 3  # six matrix rows together; params and CSV apart


def test_max_batch_splits_and_a_failure_is_retried_alone() -> None:
    calls: list[int] = []

    def predict(frame: pd.DataFrame, method: str = "predict") -> np.ndarray:
        calls.append(len(frame))
        if (frame["a"] < 0).any():
            raise ValueError("negative a")
        return frame["a"].to_numpy() * 10

    async def scenario() -> list[Any]:
        batcher = Batcher(lambda: (predict, SCHEMA.names), max_batch=3)
        batcher.start()
        values = [1.0, 2.0, -1.0, 3.0, 4.0, 5.0]
        requests = [parse(body([[v, 0.0]]), "application/json", SCHEMA) for v in values]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        await batcher.stop()
        return list(results)

    results = asyncio.run(scenario())
    assert results[0] == [10.0] and results[1] == [20.0] and results[3:] == [[30.0], [40.0], [50.0]]
    assert isinstance(results[2], PredictError) and str(results[2]) == "ValueError: negative a"
    assert max(calls) <= 3


def pytest_round(values: list[float]) -> list[float]:
    return [round(float(v), 9) for v in values]


def test_a_request_larger_than_max_batch_takes_turns_with_the_others() -> None:
    calls: list[tuple[int, float]] = []

    def predict(frame: pd.DataFrame, method: str = "predict") -> np.ndarray:
        calls.append((len(frame), float(frame["a"].iloc[0])))
        return frame["a"].to_numpy() * 10

    async def scenario() -> tuple[list[Any], list[str]]:
        batcher = Batcher(lambda: (predict, SCHEMA.names), max_batch=100)
        batcher.start()
        order: list[str] = []

        async def submit(what: str, rows: list[list[float]], content_type: str = "application/json") -> list[Any]:
            csv = ("a,b\n" + "\n".join(f"{a},{b}" for a, b in rows)).encode()
            data = body(rows) if content_type == "application/json" else csv
            result = await batcher.submit(parse(data, content_type, SCHEMA))
            order.append(what)
            return result

        big = submit("big", [[float(i), 0.0] for i in range(250)])
        big_csv = submit("big csv", [[float(-i), 1.0] for i in range(150)], "text/csv")  # a frame: sliced too
        small = [submit(f"small {i}", [[1000.0 + i, 0.0]]) for i in range(3)]
        results = await asyncio.gather(big, big_csv, *small)
        await batcher.stop()
        return list(results), order

    results, order = asyncio.run(scenario())
    assert results[0] == [i * 10.0 for i in range(250)]  # whole and in order
    assert results[1] == [-i * 10.0 for i in range(150)]
    assert max(n for n, _ in calls) <= 100  # no predict call over max_batch rows
    assert order.index("small 2") < order.index("big")  # answered between the big one's chunks


def test_a_batcher_stopped_while_gathering_or_predicting_answers_every_request() -> None:
    """Stopping never leaves a request waiting: those taken out of the queue for a batch (while
    it gathers more, or while it predicts) are answered 503; the rest can be handed on."""
    import time

    from nbdeploy.serving.protocol import ProtocolError

    def slow(frame: pd.DataFrame, method: str = "predict") -> np.ndarray:
        time.sleep(0.3)
        return np.zeros(len(frame))

    async def scenario(wait_ms: float) -> tuple[list[Any], int, int]:
        batcher = Batcher(lambda: (slow, SCHEMA.names), max_batch=10, max_wait_ms=wait_ms, always_wait=True)
        batcher.start()
        # two that share a batch (which then waits for more), three of other params that stay queued
        requests = [parse(body([[float(i), 1.0]], {"k": 1} if i >= 2 else None), "application/json", SCHEMA)
                    for i in range(5)]  # fmt: skip
        waiting = [asyncio.ensure_future(batcher.submit(r)) for r in requests]
        await asyncio.sleep(0.05)  # the first batch is out of the queue: gathering, or predicting
        assert batcher.busy
        left = batcher.take_queued()
        await batcher.stop()
        done, pending = await asyncio.wait(waiting, timeout=5)
        return [t.exception() for t in done], len(pending), len(left)

    for wait_ms in (1000.0, 0.0):  # stopped while gathering; stopped while predicting
        errors, unanswered, taken = asyncio.run(scenario(wait_ms))
        assert unanswered == taken == 3  # only the three taken out (to be served elsewhere) wait
        assert len(errors) == 2 and all(isinstance(e, ProtocolError) and e.status == 503 for e in errors)


def test_a_gathering_batch_ends_once_enough_requests_are_queued() -> None:
    """A shadow's batcher waits long for mirrors (``always_wait``), but ``enough`` queued
    ones end the wait: with an hour's wait, 8 requests are answered in one call (the batcher
    holds the first, and the seventh queued behind it ends the wait); fewer than ``enough``
    wait out their (short) window."""
    calls: list[int] = []

    def predict(frame: pd.DataFrame, method: str = "predict") -> np.ndarray:
        calls.append(len(frame))
        return frame["a"].to_numpy()

    async def scenario(wait_ms: float, n: int) -> list[Any]:
        batcher = Batcher(lambda: (predict, SCHEMA.names), max_batch=100, max_wait_ms=wait_ms, always_wait=True,
                          enough=7)  # fmt: skip
        batcher.start()
        futures = []
        for i in range(n):
            futures.append(batcher.enqueue(parse(body([[float(i), 0.0]]), "application/json", SCHEMA)))
            await asyncio.sleep(0)  # the batcher takes the first and starts its wait
        results = await asyncio.wait_for(asyncio.gather(*futures), 60)  # an hour's wait would fail here
        await batcher.stop()
        return list(results)

    assert asyncio.run(scenario(3_600_000, 8)) == [[float(i)] for i in range(8)]
    assert calls == [8]
    calls.clear()
    assert asyncio.run(scenario(1000, 3)) == [[0.0], [1.0], [2.0]]  # fewer than enough: the window ends it
    assert calls == [3]


def test_a_gather_counts_what_is_queued_once_it_starts() -> None:
    """Requests queued while a batch predicts are taken by the next batch before it gathers;
    they do not also end that gather at once (an event left set by them would): the next
    batch still waits for ``enough`` more. Deterministic: the batcher reaches its gather in
    the same turn of the loop that answers the first batch."""
    import threading

    calls: list[int] = []
    release = threading.Event()

    def predict(frame: pd.DataFrame, method: str = "predict") -> np.ndarray:
        calls.append(len(frame))
        release.wait(60)
        return frame["a"].to_numpy()

    async def scenario() -> list[Any]:
        batcher = Batcher(lambda: (predict, SCHEMA.names), max_batch=100, max_wait_ms=3_600_000, always_wait=True,
                          enough=2)  # fmt: skip
        batcher.start()

        def send(i: int) -> asyncio.Future[list[Any]]:
            return batcher.enqueue(parse(body([[float(i), 0.0]]), "application/json", SCHEMA))

        futures = [send(0)]
        await asyncio.sleep(0)  # the batcher holds 0 and gathers
        futures += [send(1), send(2)]  # enough: 0-2 are predicted, and the predict blocks
        while not calls:
            await asyncio.sleep(0.01)
        futures += [send(i) for i in (3, 4, 5)]  # queued meanwhile: more than enough
        release.set()
        await asyncio.wait_for(asyncio.gather(*futures[:3]), 60)  # the next batch holds 3-5 and gathers
        futures += [send(6), send(7)]  # enough new ones end its gather
        results = await asyncio.wait_for(asyncio.gather(*futures), 60)
        await batcher.stop()
        return list(results)

    assert asyncio.run(scenario()) == [[float(i)] for i in range(8)]
    assert calls == [3, 5]


def test_mirrors_answered_as_a_shadow_is_closed_are_written_down_by_close(tmp_path: Any) -> None:
    """``close()`` in the loop turn right after a shadow batch came back (the mirrors'
    callbacks queued, not yet run): every mirror is logged before ``close()`` returns, none
    counted as dropped, with clients being answered (no quiet moment to write them in)."""
    from nbdeploy.experiment import ExperimentSpec
    from nbdeploy.model_entry import ModelEntry
    from nbdeploy.monitoring.replay import read_records
    from nbdeploy.serving.requestlog import RequestLog
    from nbdeploy.serving.variants import Experiment

    class Shadow:  # a challenger in another process answers through a coroutine, as this one
        stopped = False

        async def predict(self, rows: Any, names: tuple[str, ...], method: str = "predict") -> list[Any]:
            return [float(r[0]) for r in rows]

        def stop(self) -> None:
            self.stopped = True

    spec = ExperimentSpec("shadow", ModelEntry(ref="m/2", model_path="unused", version=2), 100.0)
    log = RequestLog(tmp_path / "requests.jsonl")
    model = Shadow()

    async def scenario() -> dict[str, Any]:
        experiment = Experiment(spec, model, SCHEMA.names, log, max_batch=100, max_wait_ms=0, log_rows=10)
        experiment.answering = lambda: 1
        experiment.start()
        for i in range(3):
            experiment.mirror(parse(body([[float(i), 0.0]]), "application/json", SCHEMA), f"r{i}", [0])
        while experiment.batcher.busy or not any(f.done() for f in experiment._mirrors):
            await asyncio.sleep(0)  # until the batch's answers are set: their callbacks are queued
        await experiment.close(Batcher(lambda: (None, SCHEMA.names)))  # type: ignore[arg-type, return-value]
        return experiment.state()

    state = asyncio.run(scenario())
    logged = list(read_records(tmp_path / "requests.jsonl"))
    assert sorted((r["id"], r["predictions"]) for r in logged) == [("r0", [0.0]), ("r1", [1.0]), ("r2", [2.0])]
    assert state["counts"]["2"].get("mirror_dropped", 0) == 0 and state["mirrors_in_flight"] == 0
    assert model.stopped
