"""Reading back what a server logged, to refill monitoring windows after a restart.

A server appends one JSON line per answered request to its request log and one per label to
``feedback.jsonl``; a server that restarts (or a Ray monitoring hub that Ray restarts)
replays both. A line torn by ``kill -9`` or otherwise malformed is skipped, never fatal:

>>> for item in logged_requests("requests.jsonl", since=time.time() - 3600):  # doctest: +SKIP
...     windows.add(*item)
>>> for rid, labels in logged_feedback("feedback.jsonl", since=time.time() - 3600):  # doctest: +SKIP
...     windows.feedback(rid, labels)

This module reads files only (it is the monitoring side; the server's ``requestlog`` writes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "LoggedRequest", "answer_time", "iter_records", "log_files", "logged_feedback", "logged_request",
    "logged_requests", "read_records",
]  # fmt: skip

# (answered, latency_ms, status, request id, inputs, predictions, confidence): the arguments of an
# observer's ``add`` (RequestWindows.add), as the server passed them when it answered.
LoggedRequest = tuple[float, float, int, str, Any, Any, Any]


def _lines(file: Path) -> Iterator[Any]:
    """The JSON documents of a JSON-lines file; lines that do not parse are skipped."""
    try:
        data = file.read_bytes() if file.is_file() else b""  # a directory or a FIFO in its place: nothing
    except OSError:
        return
    for line in data.splitlines():
        try:
            yield json.loads(line)
        except (ValueError, RecursionError):  # a torn last line, anything else that is not JSON, or nested too deep
            continue


def read_records(path: str | Path, include_rotated: bool = True) -> list[dict[str, Any]]:
    """All records of a request log, oldest first (rotated files included); a torn line is skipped."""
    base = Path(path)
    files = log_files(base) if include_rotated else [base]
    return [doc for file in files for doc in _lines(file) if isinstance(doc, dict)]


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """:func:`read_records`, one file in memory at a time (a search through every file)."""
    for file in log_files(Path(path)):
        for doc in _lines(file):
            if isinstance(doc, dict):
                yield doc


def log_files(base: Path) -> list[Path]:
    """``base`` and its rotated files (``base.1`` newest … ``base.N`` oldest), oldest first."""
    rotated = [p for p in base.parent.glob(base.name + ".*") if p.suffix[1:].isdigit()]
    return [*sorted(rotated, key=lambda p: -int(p.suffix[1:])), base]


def logged_requests(path: str | Path, since: float) -> Iterator[LoggedRequest]:
    """The answered requests of the log at ``path`` (rotated files included) from ``since`` on."""
    for r in read_records(path):
        item = logged_request(r, since)
        if item is not None:
            yield item


def logged_request(record: dict[str, Any], since: float) -> LoggedRequest | None:
    """One logged record as its observer saw it, or ``None`` for one answered before ``since``
    (or by a shadow, which answered nobody). Inputs are replayed only when the log holds them
    in signature order and in clear: a record with its own ``columns`` came as a table of
    other columns, and its rows would be misread."""
    r, answered = record, answer_time(record)
    if answered is None or answered < since or r.get("shadow") is True:
        return None
    # a record with hashed or no inputs (nbdeploy.privacy) gives no rows to replay drift from
    inputs = r.get("inputs") if "columns" not in r and not r.get("inputs_private") else None
    return (answered, r.get("latency_ms", 0.0), r.get("status", 0), r.get("id", ""), inputs, r.get("predictions"),
            r.get("confidence"))  # fmt: skip


def answer_time(record: dict[str, Any]) -> float | None:
    """When a logged request was answered: its ``answered`` field, or (a log written before
    that field) its start ``ts`` plus its latency; ``None`` for a record with neither."""
    answered, ts, latency = record.get("answered"), record.get("ts"), record.get("latency_ms", 0.0)
    if isinstance(answered, (int, float)):
        return float(answered)
    if isinstance(ts, (int, float)):
        return float(ts) + (latency / 1000 if isinstance(latency, (int, float)) else 0.0)
    return None


def logged_feedback(path: str | Path, since: float | None = None) -> Iterator[tuple[str, list[Any]]]:
    """``(request id, labels)`` of each line of a feedback log (rotated files included, oldest
    first) that arrived from ``since`` on; malformed lines are skipped.

    A file last written before ``since`` is not even opened: its labels arrived before then,
    for requests answered before then, which no window holds any more. So a start reads the
    labels of its longest window, however long the history is.
    """
    base = Path(path)
    for file in log_files(base):
        try:
            if since is not None and file.stat().st_mtime < since:
                continue
        except OSError:  # rotated away meanwhile
            continue
        for doc in _lines(file):
            if not isinstance(doc, dict) or "id" not in doc or not isinstance(doc.get("labels"), list):
                continue
            ts = doc.get("ts")
            if since is not None and isinstance(ts, (int, float)) and ts < since:
                continue
            yield str(doc["id"]), doc["labels"]
