"""``--retention`` on Ray: what the hub expires besides each replica's own log.

Each replica expires its own request log (the retention task of every server). The hub
expires the labels (``feedback.jsonl``, which it writes) and the request logs in its folder
that no replica writes any more: those of replicas replaced by an update or a restart, which
no one else would ever shorten. A log counts as such once its replica has not reported for
:data:`ORPHAN_S` seconds, the hub itself has run that long (after a restart every live
replica has reported by then), and the file has not changed for as long: so the hub never
filters a file while its replica appends to it. Logs on other machines' folders are their
replicas' own; a replica gone from there leaves its log to expire when its folder is reachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from nbdeploy.serving.forgetting import expire, retention_interval
from nbdeploy.serving.requestlog import RequestLog

__all__ = ["ORPHAN_S", "HubRetention", "orphan_logs"]

ORPHAN_S = 30.0


class HubRetention:
    def __init__(self, folder: Path, retention_s: float, feedback: RequestLog, live: Callable[[], set[str]],
                 started: float) -> None:  # fmt: skip
        self.folder, self.retention_s, self.feedback, self.live = folder, retention_s, feedback, live
        self.started = started  # the hub's
        self.deleted = {"requests": 0, "feedback": 0}  # shown in the hub's /monitor ("hub")
        self.interval = retention_interval(retention_s)

    def run(self) -> None:
        self.deleted["feedback"] += expire(self.feedback, self.retention_s)
        for path in orphan_logs(self.folder, self.live(), self.started):
            with RequestLog(path) as log:
                self.deleted["requests"] += expire(log, self.retention_s)


def orphan_logs(folder: Path, live: set[str], hub_started: float) -> list[Path]:
    """The request logs in ``folder`` that no replica writes any more (see above)."""
    now = time.time()
    if now - hub_started < ORPHAN_S:
        return []
    found = []
    for path in sorted(folder.glob("requests-*.jsonl")):
        replica = path.name.removeprefix("requests-").removesuffix(".jsonl")
        try:
            if replica not in live and now - path.stat().st_mtime >= ORPHAN_S:
                found.append(path)
        except OSError:  # removed meanwhile
            continue
    return found
