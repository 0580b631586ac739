"""The request log (one JSON line per answered request, appended with a single ``write``),
and the feedback log (one line per label), written the same way.

The file is opened with ``O_APPEND`` and each record is one ``os.write`` of one line, made
before the response is sent: a server killed with ``kill -9`` loses nothing it answered.
The log rotates by size (``requests.jsonl`` → ``requests.jsonl.1`` → …); the records in the
oldest file that rotation deletes are counted (``dropped``, in ``/metrics``). A line torn by a
crash is closed when the log is opened again, so the next record starts a line of its own
(the torn one is skipped when read back); a line left open by another writer while this one
appends (the file's size is not where our last line ended) is closed the same way. Reading it back
is :mod:`nbdeploy.monitoring.replay`'s part (``read_records`` is re-exported here).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbdeploy._files import flocked, open_owned
from nbdeploy.log_files import LOGS_LOCK, drop_columns, filter_file, swap_in
from nbdeploy.monitoring.replay import log_files, read_records
from nbdeploy.privacy import LogPrivacy
from nbdeploy.spec import DEFAULTS

__all__ = ["FEEDBACK_BACKUPS", "FEEDBACK_FILE_BYTES", "RequestLog", "apply_labels", "feedback_log", "read_records"]

# Labels are small and only those of the last window are replayed at a start: smaller files,
# so that a start reads little more than that window, and more of them, to keep history.
FEEDBACK_FILE_BYTES = 8 << 20
FEEDBACK_BACKUPS = 20


class RequestLog:
    """Append-only JSON-lines log with size-based rotation."""

    def __init__(self, path: str | Path, max_bytes: int = DEFAULTS.log_max_bytes, backups: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        self._removing = threading.Lock()  # one removal at a time (RequestLog.remove)
        self.rotations = 0
        self.dropped = 0  # records deleted by rotation, since this process started
        self.privacy: LogPrivacy | None = None  # what of the inputs is written (nbdeploy.privacy)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        if self._size and not self._ends_with_newline(self._size):
            self._write(b"\n")  # a torn last line (a crash mid-write): end it, keep the next record whole
            self._size += 1

    def _ends_with_newline(self, size: int) -> bool:
        return os.pread(self._fd, 1, size - 1) == b"\n"

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a short write (a full disk, a signal) must not leave half a line behind
            view = view[os.write(self._fd, view) :]

    def _open(self) -> int:
        # read too: the last byte says whether a line was left open (_append); a link in its place
        # is replaced, never followed
        return open_owned(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line with one system call."""
        if self.privacy is not None:
            self.privacy.apply(record)
        self._append((json.dumps(record, separators=(",", ":"), default=str) + "\n").encode())

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Write records as lines with one system call (a crash tears at most the last one)."""
        if self.privacy is not None:
            for record in records:
                self.privacy.apply(record)
        self._append("".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records).encode())

    def _append(self, data: bytes) -> None:
        with self._lock:
            size = os.fstat(self._fd).st_size
            torn = False
            if size != self._size:  # written by another hand since our last line: it may have left one open
                self._size = size
                torn = size > 0 and not self._ends_with_newline(size)
            if self._size + len(data) > self.max_bytes and self._size:
                self._rotate()
                torn = False
            if torn:  # its line ends here; ours stays whole and readable
                data = b"\n" + data
            self._write(data)
            self._size += len(data)

    def _rotate(self) -> None:
        self.rotations += 1  # a removal or search in progress sees names move under it
        os.close(self._fd)
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        gone = None
        if oldest.exists():  # about to be replaced: say how many records go
            with oldest.open("rb") as fh:
                gone = os.fstat(fh.fileno())
                self.dropped += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        if gone is not None and not (oldest.exists() and os.path.samestat(gone, oldest.stat())):
            drop_columns(self.path.parent, gone.st_dev, gone.st_ino)  # replaced: its columnar copy goes too
        self._fd = self._open()
        self._size = 0

    def remove(self, keep: Callable[[dict[str, Any]], bool], skip: Callable[[Path], bool] | None = None) -> int:
        """Take the records ``keep`` rejects out of every file of this log (rotated ones too)
        while appends go on; the count removed. The filtering is done outside the append lock;
        under it, only what was appended meanwhile is copied and the file swapped. A file
        rotated during its filtering is refused by the swap, and the pass is made again until
        one pass has swapped every file it filtered. Removals of one log take turns (a forget
        and the retention task). Files for which ``skip`` says so are not read."""
        with self._removing:
            removed = 0
            for _ in range(8):
                rotations = self.rotations
                counts = [self._remove_from(path, keep) for path in log_files(self.path) if not (skip and skip(path))]
                removed += sum(c for c in counts if c > 0)
                # a rotation during the pass may have moved a file not yet filtered onto a name done
                if -1 not in counts and self.rotations == rotations:
                    return removed
            raise RuntimeError(f"{self.path.name} rotated under every pass of a removal; try again")

    def _remove_from(self, path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Records removed from ``path`` (0: none to remove; -1: it moved meanwhile, filter again)."""
        filtered = filter_file(path, keep)
        if filtered is None:
            return 0
        try:
            # an export opening the logs holds .logs.lock shared: it never sees a file and its swapped copy
            with flocked(self.path.parent / LOGS_LOCK), self._lock:
                if not swap_in(filtered):
                    return -1
                if path == self.path:  # the live file is a new one now: append to it
                    os.close(self._fd)
                    self._fd = self._open()
                    self._size = os.fstat(self._fd).st_size
        finally:
            filtered.discard()  # a copy of records never stays behind (swapped in, it is gone already)
        return filtered.removed

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def feedback_log(folder: str | Path) -> RequestLog:
    """The deployment's ``feedback.jsonl`` (``{"ts", "id", "labels"}`` lines), rotating every
    :data:`FEEDBACK_FILE_BYTES` and keeping :data:`FEEDBACK_BACKUPS` older files."""
    return RequestLog(Path(folder) / "feedback.jsonl", max_bytes=FEEDBACK_FILE_BYTES, backups=FEEDBACK_BACKUPS)


def apply_labels(
    ids: list[Any], targets: list[Any], label: Callable[[str, list[Any]], bool], log: RequestLog | None
) -> dict[str, Any]:
    """``label(id, labels)`` for each id (a target that is not a list is one row's label),
    every label appended to ``log`` in one write; the ``POST /feedback`` answer
    ``{"accepted": n, "unknown": [ids...]}``. Shared by the local server and the Ray hub."""
    unknown, records, now = [], [], time.time()
    for rid, target in zip(ids, targets, strict=True):
        labels = target if isinstance(target, list) else [target]
        if not label(str(rid), labels):
            unknown.append(rid)
        records.append({"ts": now, "id": str(rid), "labels": labels})
    if log is not None and records:  # one write: a crash tears the last line only
        log.append_many(records)
    return {"accepted": len(ids) - len(unknown), "unknown": unknown}
