"""The request logs' columnar copy: each log file's rows, parsed ahead of an export.

An export spends most of its time parsing JSON (about 20 times what reading the same rows
from Parquet takes). So a background process (:mod:`.log_converter`, started by the server)
parses each log file's new whole lines as they come, with the export's own code
(:func:`~.export_rows.block_rows`, no ``--since``), and writes the rows as Arrow files in
``FOLDER/.log-columns/``: ``<dev>-<inode>-<start>-<end>.arrow`` holds the rows of bytes
``[start, end)`` of the log file with that identity. An export then reads a file's rows from
its segments, one at a time, and parses only the bytes after the last one.

The JSON lines stay the record; this is a cache, used only where it is exactly what parsing
would give:

- a log file is append-only while it keeps its identity (a rotation renames it; ``forget``
  and the retention task write a new file, :func:`nbdeploy.log_files.swap_in`, which deletes
  the old file's segments under the lock it swaps under, so that no forgotten row survives
  in a copy), so bytes once converted never change;
- a segment names the features it was parsed for (a served version with other inputs makes
  it stale), and holds a digest of the first and last 4 KiB of its bytes, checked against
  the file before use (an inode number reused by a new file after a rotation deleted the old);
- its counts (rows the log did not keep, lines skipped) are kept with their answer times, so
  that ``--since`` counts as parsing would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from nbdeploy._files import flocked
from nbdeploy.deployments.export_files import log_names
from nbdeploy.deployments.export_schema import RECORD, TIME, Counts, Features, raw_schema
from nbdeploy.log_files import COLUMNS, LOGS_LOCK

__all__ = ["Segment", "cached_rows", "features_key", "log_name", "publish", "read_segment", "segments"]

FORMAT = 1  # of a segment's rows and counts: raised whenever they, or the parsing rules, change
_EDGE = 4096  # bytes at each end of a segment's span whose digest it keeps
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)\.arrow$")
Identity = tuple[int, int]


@dataclass(frozen=True)
class Segment:
    """The rows of bytes ``[start, end)`` of the log file ``identity`` (device, inode)."""

    path: Path
    identity: Identity
    start: int
    end: int


@dataclass
class Cached:
    """A segment checked against its file: its records numbered, requests with rows, dated
    counts. Its rows are read only by :meth:`rows`, one segment at a time."""

    segment: Segment
    records: int
    requests: int
    at: dict[str, list[tuple[float, int]]]
    key: str

    def table(self) -> pa.Table:
        """Its rows, ``RECORD`` numbered from 0, checked whole (offsets, lengths, text): a
        damaged body, or a file parsed for other features since it was checked, raises
        ``pyarrow.ArrowException`` here, never a crash or another schema further on."""
        # read, not mapped: a file cut short under a mapping would kill this process (SIGBUS)
        with pa.OSFile(str(self.segment.path)) as source:
            table = ipc.open_file(source).read_all()
        if (table.schema.metadata or {}).get(b"features", b"").decode() != self.key:
            raise pa.ArrowInvalid(f"{self.segment.path.name} was written again for other features")
        table = table.replace_schema_metadata(None)
        table.validate(full=True)
        return table

    def rows(self, since: float | None, counts: Counts) -> pa.Table:
        """Its rows answered at ``since`` or later, counted in ``counts`` as parsing counts them."""
        table = self.table()
        if since is not None:
            table = table.filter(pc.greater_equal(table[TIME], since))
            counts.requests += pc.count_distinct(table[RECORD]).as_py() if table.num_rows else 0
        else:
            counts.requests += self.requests
        counts.rows += table.num_rows
        for name, pairs in self.at.items():
            n = sum(k for when, k in pairs if since is None or when >= since)
            setattr(counts, name, getattr(counts, name) + n)
        where = table.schema.get_field_index(RECORD)
        table = table.set_column(where, RECORD, pc.add(table[RECORD], counts.records))
        counts.records += self.records
        return table


def segments(folder: Path) -> dict[Identity, list[Segment]]:
    """The segments in ``folder``'s copy, by log file."""
    found: dict[Identity, list[Segment]] = {}
    try:
        names = os.listdir(folder / COLUMNS)
    except OSError:
        return found
    for name in names:
        match = _NAME.match(name)
        if match:
            dev, ino, start, end = (int(g) for g in match.groups())
            found.setdefault((dev, ino), []).append(Segment(folder / COLUMNS / name, (dev, ino), start, end))
    return found


def features_key(features: Features) -> str:
    """What a segment was parsed for: this format, and the features (a change of either
    makes every segment stale)."""
    return json.dumps([FORMAT, features.names, features.types, sorted(features.by_version.items())])


def features_of(key: str) -> Features:
    _, names, types, by_version = json.loads(key)
    return Features(names, types, {int(v): list(n) for v, n in by_version})


def digest(fd: int, start: int, end: int) -> str:
    """A digest of the first and last :data:`_EDGE` bytes of ``[start, end)`` of the file."""
    head = os.pread(fd, min(_EDGE, end - start), start)
    tail = os.pread(fd, min(_EDGE, end - start), max(start, end - _EDGE))
    return hashlib.blake2b(head + b"|" + tail, digest_size=16).hexdigest()


def _pack(pairs: list[tuple[float, int]]) -> bytes:
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2).tobytes()


def _unpack(data: bytes | None) -> list[tuple[float, int]]:
    if not data:
        return []
    return [(float(w), int(n)) for w, n in np.frombuffer(data, dtype=np.float64).reshape(-1, 2)]


def read_segment(segment: Segment, fd: int, key: str) -> Cached | None:
    """The segment, if it holds what parsing the file's bytes would give now. Its rows are
    read later, by :meth:`Cached.table`: a segment merged away meanwhile fails then, and the
    export parses the file from the end of the segment before it."""
    try:
        with pa.OSFile(str(segment.path)) as source:
            schema = ipc.open_file(source).schema
        meta = schema.metadata or {}
        if meta.get(b"features", b"").decode() != key or meta.get(b"digest", b"").decode() != digest(
            fd, segment.start, segment.end
        ):
            return None
        if not schema.remove_metadata().equals(raw_schema(features_of(key))):
            return None
        at = {name: _unpack(meta.get(f"at.{name}".encode())) for name in ("not_logged", "skipped")}
        return Cached(segment, int(meta[b"records"]), int(meta[b"requests"]), at, key)
    except (OSError, pa.ArrowException, KeyError, ValueError):  # deleted meanwhile, or damaged: parse instead
        return None


def chain(found: list[Segment], fd: int, size: int, key: str) -> list[Cached]:
    """The segments that cover the file from its first byte on, one after the other (where a
    merge left two that start at one byte, the longer), up to ``size`` at most."""
    by_start: dict[int, list[Segment]] = {}
    for segment in found:
        if segment.end <= size:
            by_start.setdefault(segment.start, []).append(segment)
    out, pos = [], 0
    while pos in by_start:
        opened = None
        for segment in sorted(by_start[pos], key=lambda s: -s.end):
            opened = read_segment(segment, fd, key)
            if opened is not None:
                break
        if opened is None:
            break
        out.append(opened)
        pos = opened.segment.end
    return out


def cached_rows(found: dict[Identity, list[Segment]], fd: int, size: int, features: Features) -> list[Cached]:
    """What an export reads from the copy for the open log file ``fd`` (its first ``size`` bytes)."""
    info = os.fstat(fd)
    mine = found.get((info.st_dev, info.st_ino))
    return chain(mine, fd, size, features_key(features)) if mine else []


def publish(folder: Path, fd: int, start: int, end: int, table: pa.Table, records: int,
            at: dict[str, list[tuple[float, int]]], key: str) -> Segment | None:  # fmt: skip
    """Write the rows of bytes ``[start, end)`` of the log file ``fd`` as a segment; ``None``
    when the file left the logs meanwhile (swapped by a forget: its rows must not be kept)."""
    info = os.fstat(fd)
    where = folder / COLUMNS
    where.mkdir(mode=0o700, exist_ok=True)
    name = f"{info.st_dev}-{info.st_ino}-{start}-{end}.arrow"
    tmp = where / f".{name}.{os.getpid()}.tmp"
    requests = pc.count_distinct(table[RECORD]).as_py() if table.num_rows else 0
    meta: dict[str, Any] = {"features": key, "digest": digest(fd, start, end), "records": str(records),
                            "requests": str(requests)}  # fmt: skip
    meta |= {f"at.{k}": _pack(v) for k, v in at.items()}
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "wb") as fh:
            with ipc.new_file(fh, table.schema.with_metadata(meta)) as writer:
                writer.write_table(table)
        with flocked(folder / LOGS_LOCK, shared=True):  # a swap holds it exclusive: it deletes the old file's
            if log_name(folder, info) is None:  # swapped, or rotated away, since it was read: its rows must go
                return None
            os.replace(tmp, where / name)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return Segment(where / name, (info.st_dev, info.st_ino), start, end)


def log_name(folder: Path, info: os.stat_result) -> str | None:
    """The name under which the file ``info`` is one of ``folder``'s logs (``None``: it is
    none of them now; a link count would not tell: NFS keeps a replaced file that is still
    open under another name)."""
    for path in log_names(folder):
        with contextlib.suppress(OSError):
            if os.path.samestat(path.stat(follow_symlinks=False), info):
                return path.name
    return None
