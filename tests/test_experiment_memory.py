"""What a server keeps per request for a label to come must not be objects the garbage
collector tracks: every full collection walks them all. An experiment kept up to 200,000
requests' predictions as lists and a dict per request; measured with bench/shadow_cost.py, a
shadowed server's p99 at 16 connections grew from 26 to 201 ms within 7 minutes, its full
collections from 7 to 220 ms. Here the kept entries are checked untracked after collections
(a tuple is untracked by a collection once what it holds is, one level per collection), and
the objects the collector tracks stay flat while requests are counted."""

from __future__ import annotations

import gc

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.model_entry import ModelEntry
from nbdeploy.monitoring.windows import MAX_EARLY, RequestWindows
from nbdeploy.serving.batching import Answer
from nbdeploy.serving.experiment_book import ExperimentBook

REQUESTS = 20_000


def _tracked() -> int:
    """Objects the collector tracks once collections have untracked what they can."""
    for _ in range(4):  # nested tuples lose their tracking one level per collection
        gc.collect()
    return len(gc.get_objects())


def _book(kind: str = "shadow") -> ExperimentBook:
    spec = ExperimentSpec(kind, ModelEntry("m/2", "/m", version=2), 100 if kind == "shadow" else 10)
    return ExperimentBook(spec, ("x",), "classification")


def test_counting_requests_leaves_the_collector_no_more_objects_to_walk() -> None:
    book = _book()
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
    assert not any(gc.is_tracked(kept) for kept in book.arms._waiting.values())
    assert grown < REQUESTS // 20, f"{grown} more objects for the collector after {REQUESTS} requests"
    # the predictions are still there for the labels: both variants scored on the same rows
    assert book.arms.label("r0", [0]) and book.arms.label("r1", [0])
    assert book.arms.stats("champion", "accuracy").mean == 0.5  # r0 predicted 0, r1 predicted 1
    assert book.arms.stats(book.label, "accuracy").mean == 0.0  # the shadow said 1 to both


def test_a_replayed_shadow_keeps_the_champions_answers_untracked_until_its_own_come() -> None:
    book = _book()
    champions = [{"id": f"r{i}", "answered": book.spec.started + 1, "variant": "champion", "status": 200,
                  "predictions": [i % 2]} for i in range(100)]  # fmt: skip
    book.ingest(champions)
    _tracked()
    assert len(book._pairs) == 100 and not any(gc.is_tracked(kept) for kept in book._pairs.values())
    shadows = [{**r, "variant": book.label, "shadow": True, "predictions": [0]} for r in champions]
    book.ingest(shadows)
    assert book.state()["agreement"]["rate"] == 0.5 and not book._pairs


def test_a_request_id_sent_twice_is_scored_once_per_variant() -> None:
    book = _book("canary")
    for predicted in ([0], [1]):  # a client reusing its X-Request-Id: the last answer counts
        book.observe("champion", 200, False, 2.0, "same", predicted)
    assert book.arms.label("same", [1])
    assert book.arms.stats("champion", "accuracy").n == 1
    assert book.arms.stats("champion", "accuracy").mean == 1.0


def test_labels_for_requests_never_seen_are_kept_untracked_and_the_oldest_give_way() -> None:
    windows = RequestWindows(["x"], None, "classification", windows={"1m": 60.0})
    before = _tracked()
    for i in range(MAX_EARLY + 10):  # a client sending labels for ids that no request brings
        assert not windows.feedback(f"nobody-{i}", ["yes"])
    assert _tracked() - before < MAX_EARLY // 20
    assert "nobody-0" not in windows._early and f"nobody-{MAX_EARLY + 9}" in windows._early
    # a label that came first still joins its request when it arrives (a Ray replica's records come later)
    windows.add(1.0, 1.0, 200, f"nobody-{MAX_EARLY + 9}", [[1.0]], ["yes"])
    windows.fold()
    assert windows.snapshot(1.0)["windows"]["1m"]["labelled"] == 1


def test_a_shadows_record_that_comes_before_its_champions_is_still_compared() -> None:
    """On Ray a shadow's actor sends its records to the hub itself: they may come first."""
    book = _book()
    champions = [{"id": f"r{i}", "answered": book.spec.started + 1, "variant": "champion", "status": 200,
                  "predictions": [i % 2]} for i in range(100)]  # fmt: skip
    shadows = [{**r, "variant": book.label, "shadow": True, "predictions": [0]} for r in champions]
    book.ingest(shadows[:50] + champions[50:])
    book.ingest(champions[:50] + shadows[50:])
    assert book.state()["agreement"]["rate"] == 0.5 and book.state()["agreement"]["rows"] == 100 and not book._pairs
