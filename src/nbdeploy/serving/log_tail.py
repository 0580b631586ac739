"""The lines appended to a JSON-lines log since the last look, followed across the ways the
log's file is replaced while it is read.

>>> tail = LogTail(Path("requests.jsonl"))          # doctest: +SKIP
>>> for line in tail.read():                          # doctest: +SKIP
...     record = json.loads(line)

Only complete lines are returned: a line still being written waits for the next look. The
file at the log's path is replaced in two ways, told apart by what became of the file read so
far:

- **rotation** (:class:`~nbdeploy.serving.requestlog.RequestLog` renames it ``NAME.1``): it
  is read to its end, then the next file from its start (``NAME.k-1`` if it went on to
  ``NAME.k`` meanwhile, so a tail that fell behind several rotations skips none);
- **a swap** (a forget or the retention task put a filtered copy in its place, and the old
  file has no name left): the copy repeats the lines already read, less those removed, then
  goes on with new ones. The hashes of the lines read from the current file are kept, so a
  swapped-in copy gives only the lines not seen before. They take about 70 bytes a line, for
  as long as the file is the live one (a rotation starts them again).

Beside it, what a reader that starts mid-way needs: the rotated files' lines
(:func:`rotated_lines`), the files a log has now (:func:`log_inodes`) and which requests it
still holds (:func:`still_logged`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from nbdeploy.monitoring.replay import iter_records, log_files

__all__ = ["LogTail", "json_records", "log_inodes", "rotated_lines", "still_logged"]

READ_BYTES = 8 << 20  # read per call at most: a backlog is taken a block at a time


class LogTail:
    """The new complete lines of the log at ``path`` (a missing file has none yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None
        self._rest = b""  # the start of a line still being written
        self._seen: set[int] = set()  # hashes of the lines read from the current file
        self.sources: set[int] = set()  # the files (inodes) the last read took its lines from
        self.consumed = 0  # bytes the last read took from the files

    @property
    def inode(self) -> int | None:
        """The file being read (``None`` before the log exists)."""
        return os.fstat(self._fh.fileno()).st_ino if self._fh is not None else None

    def open(self) -> bool:
        """Open the log's file now, if it exists (``read`` does it at its first call)."""
        if self._fh is None:
            try:
                self._fh = self.path.open("rb")
            except FileNotFoundError:
                return False
        return True

    def read(self, limit: int = READ_BYTES) -> list[bytes]:
        """The complete lines appended since the last call (up to about ``limit`` bytes; call
        again while :attr:`consumed` is not 0 to catch up: a block may hold no complete new
        line), newline included."""
        self.consumed = 0
        if not self.open():
            return []
        assert self._fh is not None
        self.sources = {os.fstat(self._fh.fileno()).st_ino}
        data = self._fh.read(limit)
        if not data and self._replaced():
            swapped = os.fstat(self._fh.fileno()).st_nlink == 0  # no name left: a copy took its place
            successor = self._copy() if swapped else self._successor(os.fstat(self._fh.fileno()).st_ino)
            self._fh.close()
            self._fh, self._rest = None, b""  # a line torn at the old file's end is never finished
            if not swapped:
                self._seen.clear()
            if successor is not None:  # rotated more than once since: the files between come first
                self._fh = successor
            elif not self.open():
                return []
            assert self._fh is not None
            self.sources.add(os.fstat(self._fh.fileno()).st_ino)
            data = self._fh.read(limit)
        self.consumed = len(data)
        data = self._rest + data
        end = data.rfind(b"\n") + 1
        self._rest = data[end:]
        lines = []
        for line in data[:end].splitlines(keepends=True):
            key = hash(line)
            if key not in self._seen:
                self._seen.add(key)
                lines.append(line)
        return lines

    def pending(self) -> int:
        """About how many bytes are left to read: the rest of the file being read, and the whole
        of the file at the log's path if that is another (rotated or swapped in since)."""
        try:
            live = os.stat(self.path)
        except FileNotFoundError:
            live = None
        if self._fh is None:
            return live.st_size if live is not None else 0
        reading = os.fstat(self._fh.fileno())
        left = max(0, reading.st_size - self._fh.tell())
        return left + (live.st_size if live is not None and live.st_ino != reading.st_ino else 0)

    def _successor(self, inode: int) -> BinaryIO | None:
        """The file rotated right after the one read (``inode``), when that one is ``NAME.k``
        with k > 1 now; ``None`` when the next is the live file."""
        k = 1
        while True:
            try:
                found = os.stat(self.path.with_name(f"{self.path.name}.{k}")).st_ino
            except FileNotFoundError:
                return None
            if found == inode:
                break
            k += 1
        if k == 1:
            return None
        try:
            return self.path.with_name(f"{self.path.name}.{k - 1}").open("rb")
        except FileNotFoundError:
            return None

    def _copy(self) -> BinaryIO | None:
        """After a swap, the copy of the file read: the newest of the log's files whose first
        line was read already (a file rotated, then swapped before it was read to its end, has
        its copy at ``NAME.k``); ``None`` when none is (the live file then)."""
        for k in range(1_000_000):
            try:
                fh = (self.path.with_name(f"{self.path.name}.{k}") if k else self.path).open("rb")
            except FileNotFoundError:
                if k:
                    return None
                continue  # the live file between a rotation's rename and its new file
            if hash(fh.readline()) in self._seen:
                fh.seek(0)
                return fh
            fh.close()
        return None

    def _replaced(self) -> bool:
        assert self._fh is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:  # between a rename and the new file: the next look sees it
            return False

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def rotated_lines(base: Path, live: int | None) -> Iterator[tuple[int, list[bytes]]]:
    """The inode and lines of each rotated file of the log at ``base``, oldest first, but the
    one being tailed. All are opened first: a rotation while they are read moves names, not
    the files opened, so none is read twice or missed."""
    opened = []
    for path in log_files(base)[:-1]:
        try:
            opened.append(path.open("rb"))
        except FileNotFoundError:
            continue
    try:
        for fh in opened:
            inode = os.fstat(fh.fileno()).st_ino
            if inode != live:
                yield inode, fh.read().splitlines()
    finally:
        for fh in opened:
            fh.close()


def log_inodes(base: Path) -> set[int]:
    """The files of the log at ``base`` now."""
    found = set()
    for path in log_files(base):
        try:
            found.add(os.stat(path).st_ino)
        except FileNotFoundError:
            continue
    return found


def still_logged(base: Path, ids: set[str]) -> set[str]:
    """Those of ``ids`` whose request is still in the log at ``base`` (read whole: only after a swap)."""
    return {str(r.get("id")) for r in iter_records(base) if r.get("shadow") is not True and str(r.get("id")) in ids}


def json_records(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The JSON objects among ``lines`` (a torn or damaged line is skipped). orjson parses a
    logged request in a fifth of the time of ``json`` (an integer past 64 bits becomes a float);
    ``json`` takes the lines it refuses (NaN and Infinity, which the server's ``json.dumps`` writes)."""
    out = []
    for line in lines:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                doc = json.loads(line)
            except (ValueError, RecursionError):
                continue
        if isinstance(doc, dict):
            out.append(doc)
    return out
