"""How a shadow's answered mirrors are written down: several per turn of the loop, their log
records in one write, each counted on its own (issue #11). A real request log on disk and a
real event loop; the shadow's answers are the futures its batcher would have set."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.model_entry import ModelEntry
from nbdeploy.serving.batching import PredictError
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.variants import WRITE_CHUNK, Experiment, _Answered


def _shadow(log: RequestLog, counts_here: bool = True) -> Experiment:
    spec = ExperimentSpec("shadow", ModelEntry("m/2", "/unused", version=2), 100)
    return Experiment(spec, model=None, names=("x",), log=log, max_batch=64, max_wait_ms=5, log_rows=10,
                      counts_here=counts_here)  # fmt: skip


def _answers(loop: asyncio.AbstractEventLoop, outcomes: list[Any]) -> list[_Answered]:
    """One answered mirror per outcome: a prediction (the champion said 1) or the shadow's error."""
    answers = []
    for i, outcome in enumerate(outcomes):
        future: asyncio.Future[list[Any]] = loop.create_future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result([outcome])
        answers.append(_Answered(time.monotonic(), time.time(), f"r{i}", 1, 2.5, time.time(), future, [1]))
    return answers


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_mirror_of_a_chunk_is_logged_and_counted_its_own_way(tmp_path: Path) -> None:
    """Answers and failures mixed in one chunk, more than a chunk waiting: each has its record
    (its status, its predictions or its error) and its counts; nothing is lost or doubled."""
    log = RequestLog(tmp_path / "requests.jsonl")
    outcomes: list[Any] = [1, 0, PredictError("boom"), 1] * 10  # 40: more than WRITE_CHUNK

    async def scenario() -> Experiment:
        experiment = _shadow(log)
        experiment._pending.extend(_answers(asyncio.get_running_loop(), outcomes))
        experiment._drain_soon()
        await asyncio.sleep(0)  # one turn of the loop: one chunk
        assert len(experiment._pending) == len(outcomes) - WRITE_CHUNK
        for _ in range(10):
            await asyncio.sleep(0)
        return experiment

    experiment = asyncio.run(scenario())
    records = _lines(tmp_path / "requests.jsonl")
    assert [r["id"] for r in records] == [f"r{i}" for i in range(len(outcomes))]
    assert [r["status"] for r in records] == [400 if isinstance(o, Exception) else 200 for o in outcomes]
    assert all(r["shadow"] and r["variant"] == "2" for r in records)
    assert all("boom" in r["error"] for r in records if r["status"] == 400)
    counts = experiment.book.counts["2"]
    assert counts["shadowed"] == 40 and counts["shadow_errors"] == 10
    assert counts["agree_rows"] == 20 and counts["disagree_rows"] == 10


def test_a_log_that_cannot_be_written_still_leaves_every_mirror_counted(tmp_path: Path, capsys: Any) -> None:
    """The log's file is gone from under it (closed: every write fails, as on a full disk): the
    server says so in one line per chunk and goes on; the counts miss no mirror."""
    log = RequestLog(tmp_path / "requests.jsonl")
    log.close()

    async def scenario() -> Experiment:
        experiment = _shadow(log)
        experiment._pending.extend(_answers(asyncio.get_running_loop(), [1] * (WRITE_CHUNK + 3)))
        experiment.flush()
        return experiment

    experiment = asyncio.run(scenario())
    said = [line for line in capsys.readouterr().out.splitlines() if "were not logged" in line]
    assert len(said) == 2, said
    assert re.fullmatch(
        rf"experiment: {WRITE_CHUNK} shadow answers were not logged: OSError: \[Errno \d+\] .+", said[0]
    )
    assert said[1].startswith("experiment: 3 shadow answers were not logged: OSError")
    assert experiment.book.counts["2"]["shadowed"] == WRITE_CHUNK + 3
    assert not experiment._pending


def test_a_ray_replica_logs_every_mirror_and_leaves_the_counting_to_its_hub(tmp_path: Path) -> None:
    """On a Ray replica (``counts_here=False``) the hub counts every replica's records: the
    replica writes each mirror's record as a local server does, and keeps no accounts of its
    own, for the champion's requests or the shadow's answers."""
    log = RequestLog(tmp_path / "requests.jsonl")
    outcomes: list[Any] = [1, 0, PredictError("boom")] * 10

    async def scenario() -> Experiment:
        experiment = _shadow(log, counts_here=False)
        experiment.observe("champion", 200, False, 1.0, "r0", [1], inputs=[[0.5]])
        experiment._pending.extend(_answers(asyncio.get_running_loop(), outcomes))
        experiment.flush()
        return experiment

    experiment = asyncio.run(scenario())
    records = _lines(tmp_path / "requests.jsonl")
    assert [r["id"] for r in records] == [f"r{i}" for i in range(len(outcomes))]
    assert [r.get("predictions") for r in records] == [None if isinstance(o, Exception) else [o] for o in outcomes]
    assert not any(experiment.book.counts.values()) and experiment.book.distributions.queued == 0
