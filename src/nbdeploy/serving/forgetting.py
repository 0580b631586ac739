"""Records leaving the logs while the server serves: ``POST /admin/forget`` and ``--retention``.

``forget`` takes request ids, or a ``where`` (a column and a value: every request with a
row whose column has that value, compared through the keyed hash where the log keeps one)
and removes those requests from every file of the request log and their labels from the
feedback log, rotated files included. The retention task removes, once a minute (or a
quarter of the retention, if shorter), records answered longer ago than the retention,
reading only files whose first record is old enough. Both count what they removed in
``/metrics`` (``nbdeploy_log_records_deleted_total``). The files are filtered in a worker
thread; appends wait only for the copy of what arrived meanwhile (``RequestLog.remove``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nbdeploy.log_files import first_record, not_of
from nbdeploy.monitoring.replay import answer_time, iter_records
from nbdeploy.privacy import LogPrivacy
from nbdeploy.serving.bodies import read_body
from nbdeploy.serving.protocol import ProtocolError
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.responses import json_response
from nbdeploy.serving.server import Server

__all__ = ["MAX_IDS", "Forgetting", "expire", "matching_ids", "retention_interval", "retention_loop"]

MAX_IDS = 100_000
_BODY = "The body must be JSON with 'ids' (a list of request ids) or 'where' ({'column': name, 'value': scalar})."


def _body(raw: bytes) -> tuple[set[str] | None, tuple[str, Any] | None]:
    try:
        doc = json.loads(raw)
        ids, where = doc.get("ids"), doc.get("where")
    except (ValueError, AttributeError, RecursionError) as exc:
        raise ProtocolError(400, _BODY) from exc
    if (ids is None) == (where is None):
        raise ProtocolError(400, _BODY)
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids) or len(ids) > MAX_IDS:
            raise ProtocolError(400, f"The field 'ids' must be a list of at most {MAX_IDS:,} request ids.")
        return {str(i) for i in ids}, None
    if not (isinstance(where, dict) and isinstance(where.get("column"), str)
            and isinstance(where.get("value"), str | int | float | bool)):  # fmt: skip
        raise ProtocolError(400, "The field 'where' must be {'column': name, 'value': a string, number or boolean}.")
    return None, (where["column"], where["value"])


def matching_ids(log: RequestLog, matcher: LogPrivacy, column: str, value: Any) -> set[str]:
    """The ids of the requests in every file of ``log`` with a row whose ``column`` is ``value``."""
    ids: set[str] = set()
    for _ in range(8):  # a search during a rotation may skip a file moved onto a name already read
        rotations = log.rotations
        ids |= {str(r.get("id")) for r in iter_records(log.path) if matcher.matches(r, column, value)}
        if log.rotations == rotations:
            break
    return ids


class Forgetting:
    """``POST /admin/forget`` over one server's logs. On a Ray replica (``relay``: its hub's
    ``forget``) the hub hands the order to every replica, this one included, and answers once
    each has done it (:mod:`~nbdeploy.serving.hub_forget`)."""

    def __init__(self, server: Server, privacy: LogPrivacy, relay: Any = None) -> None:
        self.server, self.privacy, self.relay = server, privacy, relay
        self._lock = asyncio.Lock()  # one forget at a time; appends go on meanwhile

    async def forget(self, request: Request) -> Response:
        ids, where = _body(await read_body(request, 16 << 20))
        if self.relay is not None:
            return json_response(await self.relay(sorted(ids) if ids is not None else None, where))
        async with self._lock:
            result = await asyncio.to_thread(self._forget, ids, where)
        return json_response(result)

    def run_order(self, ids: list[str] | None, where: Any) -> tuple[list[str], int]:
        """A Ray replica's part of a forget: the matching requests removed from its own log;
        ``(their ids, how many records)`` for the hub, which removes their labels."""
        found, removed = self._remove(set(ids) if ids is not None else None, tuple(where) if where else None)
        return sorted(found), removed["requests"]

    def _forget(self, ids: set[str] | None, where: tuple[str, Any] | None) -> dict[str, Any]:
        found, removed = self._remove(ids, where)
        return {"ids": len(found), "removed": removed}

    def _remove(self, ids: set[str] | None, where: tuple[str, Any] | None) -> tuple[set[str], dict[str, int]]:
        server = self.server
        if where is not None:
            ids = matching_ids(server.log, self.privacy, *where)
        assert ids is not None
        removed = {"requests": 0, "feedback": 0}
        if ids:
            removed["requests"] = server.log.remove(not_of(ids))
            if server.feedback_log is not None:
                removed["feedback"] = server.feedback_log.remove(not_of(ids))
        for log, count in removed.items():
            server.metrics.log_deleted.labels(log, "forget").inc(count)
        return ids, removed


def expire(log: RequestLog, retention_s: float) -> int:
    """Remove from every file of ``log`` the records answered over ``retention_s`` ago (reading
    only files whose first record is that old); how many."""
    cutoff = time.time() - retention_s

    def keep(record: dict[str, Any]) -> bool:
        t = answer_time(record)
        return t is None or t >= cutoff

    def recent(path: Any) -> bool:  # a file whose first record is recent holds nothing older
        first = first_record(path)
        t = answer_time(first) if first else None
        return t is not None and t >= cutoff  # a first record without a time: the file is read

    return log.remove(keep, skip=recent)


def _expire(server: Server, retention_s: float) -> None:
    for name, log in (("requests", server.log), ("feedback", server.feedback_log)):
        if log is not None:
            server.metrics.log_deleted.labels(name, "retention").inc(expire(log, retention_s))


def retention_interval(retention_s: float) -> float:
    """How often records past the retention are looked for: every minute, or a quarter of it."""
    return max(1.0, min(60.0, retention_s / 4))


async def retention_loop(server: Server, retention_s: float) -> None:
    """Remove records past the retention, at start and then every :func:`retention_interval`."""
    interval = retention_interval(retention_s)
    while True:
        try:
            await asyncio.to_thread(_expire, server, retention_s)
        except Exception as exc:  # never let housekeeping end serving; said, and tried again
            print(f"retention: records were not removed: {type(exc).__name__}: {exc}", flush=True)
        await asyncio.sleep(interval)
