"""Replaying a request log and a feedback log after a restart (torn and malformed lines)."""

from __future__ import annotations

import json
from pathlib import Path

from nbdeploy.monitoring.replay import logged_feedback, logged_requests, read_records


def _write(path: Path, lines: list[str], torn: str = "") -> None:
    path.write_text("".join(line + "\n" for line in lines) + torn)


def test_logged_requests_read_back_exactly(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    old = {"ts": 100.0, "id": "a-1", "status": 200, "latency_ms": 1.5, "inputs": [[1.0]], "predictions": [0]}
    rotated = {"ts": 200.0, "id": "a-2", "status": 200, "latency_ms": 2.0, "inputs": [[2.0]], "predictions": [1],
               "confidence": [0.75]}  # fmt: skip
    table = {"ts": 300.0, "id": "a-3", "status": 200, "latency_ms": 3.0, "columns": ["x"], "inputs": [[3.0]],
             "predictions": [1]}  # fmt: skip
    error = {"ts": 400.0, "id": "a-4", "status": 400, "latency_ms": 0.5, "answered": 400.25,
             "error": "The input is missing 1 column."}  # fmt: skip
    _write(log.with_name("requests.jsonl.1"), [json.dumps(old), json.dumps(rotated)])
    lines = [json.dumps(table), "not json", "[1, 2]", json.dumps({"id": "no-ts"}), json.dumps(error)]
    _write(log, lines, torn='{"ts": 500.0, "id": "a-5", "sta')
    log.with_name("requests.jsonl.tmp").write_text("{}\n")  # not a rotated file

    assert list(logged_requests(log, since=150.0)) == [
        # stamped when answered: the record's "answered", or (logs before it) its start plus latency
        (200.002, 2.0, 200, "a-2", [[2.0]], [1], [0.75]),  # a classifier's confidences, when logged
        (300.003, 3.0, 200, "a-3", None, [1], None),  # inputs in other columns than the signature's: not replayed
        (400.25, 0.5, 400, "a-4", None, None, None),
    ]
    assert [r["id"] for r in read_records(log)] == ["a-1", "a-2", "a-3", "no-ts", "a-4"]
    assert list(logged_requests(tmp_path / "missing.jsonl", since=0)) == []


def test_logged_feedback_skips_malformed_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "feedback.jsonl"
    lines = [
        json.dumps({"id": "a-1", "labels": [1]}),
        "{oops",
        json.dumps({"id": 7, "labels": [0, 1]}),
        json.dumps({"labels": [1]}),
        json.dumps({"id": "a-3", "labels": "1"}),
        json.dumps(["a-4", [1]]),
        json.dumps({"id": "a-5", "labels": [{"class": "b"}]}),
    ]
    _write(path, lines, torn='{"id": "a-6", "lab')
    assert list(logged_feedback(path)) == [("a-1", [1]), ("7", [0, 1]), ("a-5", [{"class": "b"}])]
    assert list(logged_feedback(tmp_path / "missing.jsonl")) == []


def test_only_the_labels_of_the_longest_window_are_replayed(tmp_path: Path) -> None:
    import os
    import time

    log, now = tmp_path / "feedback.jsonl", time.time()
    old_file = log.with_name("feedback.jsonl.2")
    _write(old_file, [json.dumps({"ts": now - 7200, "id": f"old-{i}", "labels": [0]}) for i in range(1000)])
    os.utime(old_file, (now - 7200, now - 7200))  # last written two hours ago: not opened
    _write(log.with_name("feedback.jsonl.1"), [
        json.dumps({"ts": now - 4000, "id": "stale", "labels": [1]}),  # before the window, in a recent file
        json.dumps({"ts": now - 60, "id": "a", "labels": [1]}),
    ])  # fmt: skip
    undated = json.dumps({"id": "before-ts-was-logged", "labels": [0]})  # a log written before "ts"
    _write(log, [undated, json.dumps({"ts": now, "id": "b", "labels": [2]})])
    assert list(logged_feedback(log, since=now - 3600)) == [("a", [1]), ("before-ts-was-logged", [0]), ("b", [2])]
    assert len(list(logged_feedback(log))) == 1004  # without a bound: everything, oldest first
