"""An experiment keeps each request's predictions until its label comes (up to 200,000
requests): kept as lists and a dict per request, they were objects the garbage collector
tracks, and every full collection of the server walked them all. Measured with
bench/shadow_cost.py: a shadowed server's p99 at 16 connections grew from 26 to 201 ms
within 8 minutes, its full collections from 7 to 220 ms. Here, the objects the collector
tracks stay flat while requests are counted, and labels still score both variants."""

from __future__ import annotations

import gc

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.model_entry import ModelEntry
from nbdeploy.serving.batching import Answer
from nbdeploy.serving.experiment_book import ExperimentBook

REQUESTS = 20_000


def _tracked() -> int:
    gc.collect()  # what survives a full collection is what the next full collections walk
    return len(gc.get_objects())


def test_counting_requests_leaves_the_collector_no_more_objects_to_walk() -> None:
    spec = ExperimentSpec("shadow", ModelEntry("m/2", "/m", version=2), 100)
    book = ExperimentBook(spec, ("x",), "classification")
    before = _tracked()
    for i in range(REQUESTS):
        rid = f"r{i}"
        champion = Answer([i % 2])  # as the batcher answers: a list with the model's confidence
        champion.confidence = [0.9]
        book.observe("champion", 200, False, 2.0, rid, champion, inputs=[[float(i)]])
        book.compare(rid, champion, [1])
        book.observe(book.label, 200, False, 3.0, rid, [1], shadow=True)
    book.distributions.fold()
    grown = _tracked() - before
    assert grown < REQUESTS // 20, f"{grown} more objects for the collector after {REQUESTS} requests"
    # the predictions are still there for the labels: both variants scored on the same rows
    assert book.arms.label("r0", [0]) and book.arms.label("r1", [0])
    assert book.arms.stats("champion", "accuracy").mean == 0.5  # r0 predicted 0, r1 predicted 1
    assert book.arms.stats(book.label, "accuracy").mean == 0.0  # the shadow said 1 to both


def test_a_request_id_sent_twice_is_scored_once_per_variant() -> None:
    spec = ExperimentSpec("canary", ModelEntry("m/2", "/m", version=2), 10)
    book = ExperimentBook(spec, ("x",), "classification")
    for predicted in ([0], [1]):  # a client reusing its X-Request-Id: the last answer counts
        book.observe("champion", 200, False, 2.0, "same", predicted)
    assert book.arms.label("same", [1])
    assert book.arms.stats("champion", "accuracy").n == 1
    assert book.arms.stats("champion", "accuracy").mean == 1.0
