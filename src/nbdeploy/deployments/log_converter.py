"""The process that keeps the request logs' columnar copy (:mod:`.log_columns`) up to date.

    python -m nbdeploy.deployments.log_converter FOLDER [--parent PID] [--every 10]

A server that logs inputs starts it (:mod:`nbdeploy.serving.log_columns_process`, through
:mod:`nbdeploy._process`); it dies with the server and runs under ``SCHED_IDLE``, so it takes
only CPU nothing else wants.
Every ``--every`` seconds it takes the features an export would use now (``spec.json``),
opens the log files as an export does, parses each file's new whole lines into segments,
:data:`SPAN_BYTES` of JSON at a time, merges runs of small segments into segments of at most
:data:`SEGMENT_BYTES` (so an export reads few), and deletes the copies of files that left
the logs. A file it cannot copy is said once on stderr and tried again at the next look (an
export parses what is not copied); below :data:`MIN_FREE` on the disk it copies nothing. It
keeps no state of its own: a restart goes on from the segments on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nbdeploy._process import die_with, run_idle
from nbdeploy.deployments.export import CHUNK_BYTES, _features
from nbdeploy.deployments.export_files import open_logs
from nbdeploy.deployments.export_rows import block_rows
from nbdeploy.deployments.export_schema import RECORD, Counts, Features
from nbdeploy.deployments.log_columns import Cached, chain, features_key, log_name, publish, segments
from nbdeploy.errors import NbdeployError
from nbdeploy.log_files import COLUMNS
from nbdeploy.spec import DeploymentSpec

__all__ = ["MERGE_RUN", "MIN_FREE", "SEGMENT_BYTES", "SPAN_BYTES", "convert", "convert_file", "main"]

SEGMENT_BYTES = CHUNK_BYTES  # JSON per segment at most: an export holds one at a time
SPAN_BYTES = 8 << 20  # JSON parsed at once: what this process holds beside the server (Python's parse: ~10x)
MERGE_RUN = 4  # this many small segments in a row (within SEGMENT_BYTES) are merged into one
MIN_FREE = 256 << 20  # bytes left on the disk below which nothing is copied: the log's appends come first
_BACK = 64 << 10  # bytes read at a time looking back for a line's end


def _line_end(fd: int, start: int, stop: int) -> int:
    """Where the last whole line of ``[start, stop)`` ends (``start``: none ends there)."""
    pos = stop
    while pos > start:
        low = max(start, pos - _BACK)
        found = os.pread(fd, pos - low, low).rfind(b"\n")
        if found >= 0:
            return low + found + 1
        pos = low
    return start


def _convert_span(folder: Path, fd: int, start: int, end: int, features: Features, key: str) -> bool:
    counts = Counts(at={"not_logged": [], "skipped": []})
    rows = block_rows(os.pread(fd, end - start, start), features, None, counts)
    assert counts.at is not None
    return publish(folder, fd, start, end, rows, counts.records, counts.at, key) is not None


def _merge(folder: Path, fd: int, run: list[Cached], key: str) -> None:
    """One segment in place of the consecutive ``run`` (its records numbered on)."""
    tables, offset = [], 0
    at: dict[str, list[tuple[float, int]]] = {"not_logged": [], "skipped": []}
    for cached in run:
        try:
            table = cached.table()
        except (OSError, pa.ArrowException):  # damaged (its body): made again at the next look
            cached.segment.path.unlink(missing_ok=True)
            return
        where = table.schema.get_field_index(RECORD)
        tables.append(table.set_column(where, RECORD, pc.add(table[RECORD], offset)))
        offset += cached.records
        for name, pairs in cached.at.items():
            at[name] += pairs
    merged = pa.concat_tables(tables)
    if publish(folder, fd, run[0].segment.start, run[-1].segment.end, merged, offset, at, key) is not None:
        for cached in run:
            with contextlib.suppress(OSError):
                cached.segment.path.unlink()


def _runs(have: list[Cached]) -> list[list[Cached]]:
    """Runs of at least :data:`MERGE_RUN` consecutive segments spanning at most :data:`SEGMENT_BYTES`."""
    runs, run = [], []  # type: list[list[Cached]], list[Cached]
    for cached in have:
        if run and cached.segment.end - run[0].segment.start > SEGMENT_BYTES:
            runs.append(run)
            run = []
        run.append(cached)
    runs.append(run)
    return [r for r in runs if len(r) >= MERGE_RUN]


def convert_file(folder: Path, fd: int, size: int, features: Features, found: list[Any]) -> int:
    """Bring the copy of one log file up to its last whole line; the bytes parsed."""
    key = features_key(features)
    have = chain(found, fd, size, key)
    kept = {c.segment.path for c in have}
    for segment in found:  # stale (other features, a digest that differs) or merged into another
        if segment.path not in kept and segment.end <= size:
            with contextlib.suppress(OSError):
                segment.path.unlink()
    pos = have[-1].segment.end if have else 0
    end, parsed = _line_end(fd, pos, size), 0
    while pos < end:
        stop = end if end - pos <= SPAN_BYTES else _line_end(fd, pos, pos + SPAN_BYTES)
        if stop == pos or not _convert_span(folder, fd, pos, stop, features, key):
            break  # a line longer than a span (an export parses it), or the file left the logs
        parsed += stop - pos
        pos = stop
    if parsed:  # new segments: the chain again, with them
        info = os.fstat(fd)
        have = chain(segments(folder).get((info.st_dev, info.st_ino), []), fd, size, key)
    for run in _runs(have):
        _merge(folder, fd, run, key)
    return parsed


def convert(folder: Path) -> tuple[int, list[str]]:
    """One pass over ``folder``'s logs: the bytes parsed (0: nothing new, or nothing to
    export), and what failed (one file's failure does not stop the others)."""
    try:
        features = _features(DeploymentSpec.load(folder))
    except (NbdeployError, OSError):  # no inputs logged, no signature, no spec: nothing an export could read
        return 0, []
    if shutil.disk_usage(folder).free < MIN_FREE:
        return 0, [f"less than {MIN_FREE >> 20} MiB free on the disk of {folder}: not copied, the log comes first"]
    found, parsed, live, failed = segments(folder), 0, set(), []
    logs = open_logs(folder, None)
    try:
        for fh, size in logs.files:
            info = os.fstat(fh.fileno())
            live.add((info.st_dev, info.st_ino))
            try:
                parsed += convert_file(folder, fh.fileno(), size, features, found.get((info.st_dev, info.st_ino), []))
            except Exception as exc:  # the next pass tries again; the export parses what is not copied
                name = log_name(folder, info) or f"a log rotated away (inode {info.st_ino})"
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        logs.close()
    for identity, gone in found.items():  # files rotated away (or swapped) since
        if identity not in live:
            for segment in gone:
                with contextlib.suppress(OSError):
                    segment.path.unlink()
    return parsed, failed


def _sweep(folder: Path) -> None:
    """Temporary files a converter killed mid-write left (not one another converter is writing)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder / COLUMNS):
            path = folder / COLUMNS / name
            with contextlib.suppress(OSError):
                if name.startswith(".") and name.endswith(".tmp") and time.time() - path.stat().st_mtime > 60:
                    path.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nbdeploy.deployments.log_converter")
    parser.add_argument("folder", type=Path, help="the deployment's folder")
    parser.add_argument("--parent", type=int, help="die with this process")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between looks at the logs")
    args = parser.parse_args(argv)
    if args.parent:
        die_with(args.parent)
    run_idle()
    for stop in (signal.SIGTERM, signal.SIGINT):  # the server stops it; Ctrl-C in its terminal too, quietly
        signal.signal(stop, lambda *_: sys.exit(0))
    parent, said = os.getppid(), set()  # type: int, set[str]
    while os.getppid() == parent:  # where no PR_SET_PDEATHSIG kills it with its parent
        _sweep(args.folder)
        try:
            _, failed = convert(args.folder)
        except Exception as exc:
            failed = [f"{type(exc).__name__}: {exc}"]
        for line in failed:
            if line not in said:  # said once; the next look tries again
                print(f"log columns: {line}", file=sys.stderr, flush=True)
        said = set(failed)
        _give_back()
        time.sleep(args.every)


def _give_back() -> None:
    """Return what a pass freed to the system (Arrow's pool keeps it, and so does malloc): about
    90 MB after a pass over 40 MB of log, which the server's memory figure would carry between looks."""
    pa.default_memory_pool().release_unused()
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


if __name__ == "__main__":
    main()
