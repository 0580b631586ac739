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

    def predict(frame: pd.DataFrame) -> np.ndarray:
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

    def predict(frame: pd.DataFrame) -> np.ndarray:
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
