"""The files of an export: the request logs it reads, in blocks, and the file it writes.

The logs are opened before the first is read, and listed again until a listing finds no
file that is not open: a rotation in between (the server renames ``requests.jsonl`` to
``.1`` and starts another) shows as a file not seen, which is opened too (:func:`open_logs`).
Once open, a rotation moves names, not the files being read, so no record is read twice or
missed. Only regular files are read
(never through a link, never a FIFO that would block the export); a log that cannot be read
is named in the result.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nbdeploy._files import flocked, open_to_read
from nbdeploy.errors import InvalidInputError
from nbdeploy.log_files import LOGS_LOCK
from nbdeploy.monitoring.replay import log_files

__all__ = ["Logs", "blocks", "log_names", "out_path", "write_parquet"]

_TRIES = 300  # listings at most (a log rotating on every one: a writer in a hurry)


@dataclass
class Logs:
    """The request logs of a deployment, open: ``(file, size when opened)``, oldest first."""

    files: list[tuple[IO[bytes], int]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "name: reason"

    def close(self) -> None:
        for fh, _ in self.files:
            fh.close()
        self.files.clear()


def log_names(folder: Path) -> list[Path]:
    bases = [folder / "requests.jsonl", *sorted(folder.glob("requests-*.jsonl"))]
    return [path for base in bases for path in log_files(base)]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat(follow_symlinks=False)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


@dataclass
class _Found:
    """A log file opened, and what orders it: its log, when it was last written, its number."""

    handle: IO[bytes]
    size: int
    base: str
    mtime_ns: int
    number: int  # N of NAME.N (0: the live file)


_Opened = dict[tuple[int, int], "_Found | None"]  # by identity; None: seen, not to be read


def _open(path: Path, logs: Logs, opened: _Opened, since: float | None) -> bool:
    """Open ``path`` unless its file is open already; whether a file not seen before was found."""
    try:
        fd = open_to_read(path)
    except FileNotFoundError:  # rotated away meanwhile: the next listing finds it where it went
        return False
    except OSError as exc:
        if not any(u.startswith(f"{path.name}:") for u in logs.unreadable):
            logs.unreadable.append(f"{path.name}: {exc.strerror or exc}")
        return False
    info = os.fstat(fd)
    identity = (info.st_dev, info.st_ino)
    if identity in opened:
        os.close(fd)
        return False
    if not stat.S_ISREG(info.st_mode) or (since is not None and info.st_mtime < since):
        os.close(fd)  # not a file; or last written before `since`, so nothing in it to take
        opened[identity] = None
        return True
    number = int(path.suffix[1:]) if path.suffix[1:].isdigit() else 0
    base = path.name.removesuffix(path.suffix) if number else path.name
    opened[identity] = _Found(os.fdopen(fd, "rb"), info.st_size, base, info.st_mtime_ns, number)
    return True


def open_logs(folder: Path, since: float | None) -> Logs:
    """Every request log of the deployment (a local server's, each Ray replica's), rotated
    files included, oldest first, opened with the size they have now.

    A listing taken while the server rotates can miss a file being renamed (from a name not
    yet scanned to one already scanned), so the folder is listed again, and any file not yet
    open is opened, until a listing finds none (or after a few hundred: a log rotating without
    pause still gives every file that existed when the export began, at its first listing
    where it is not being renamed). Files are known by their identity, so none is read twice;
    ``forget`` and the retention task swap files only while no export is opening them
    (``.logs.lock``). Each log's files are read oldest first: by when each was last written,
    then by its number."""
    logs, opened = Logs(), {}  # type: Logs, _Opened
    try:
        with flocked(folder / LOGS_LOCK, shared=True):
            for _ in range(_TRIES):
                if not any([_open(path, logs, opened, since) for path in log_names(folder)]):
                    break
    except BaseException:  # an error or Ctrl-C part way: nothing stays open
        for found in opened.values():
            if found is not None:
                found.handle.close()
        raise
    files = sorted((f for f in opened.values() if f is not None), key=lambda f: (f.base, f.mtime_ns, -f.number))
    logs.files = [(f.handle, f.size) for f in files]
    return logs


def blocks(fh: IO[bytes], size: int, chunk: int, skipped: list[int]) -> Iterator[bytes]:
    """Whole lines of the first ``size`` bytes of ``fh``, ``chunk`` bytes or so at a time. A
    line longer than four chunks (a crash's garbage: a record is far smaller) is dropped,
    counted in ``skipped[0]``, so that memory stays a few chunks."""
    left, carry, dropping = size, b"", False
    while left > 0:
        data = fh.read(min(chunk, left))
        if not data:  # the file shrank
            break
        left -= len(data)
        if dropping:  # inside an overlong line: skip to its end
            end = data.find(b"\n")
            if end < 0:
                continue
            data, dropping = data[end + 1 :], False
        data = carry + data
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if len(carry) > 4 * chunk:
            carry, dropping = b"", True
            skipped[0] += 1
        if cut:
            yield data[:cut]
    if carry and not dropping:
        yield carry  # the last line, whole or torn


def out_path(out: str | Path | None, name: str, folder: Path) -> Path:
    """The file to write: ``out``, or in the folder ``out`` names (or here) a name of its own.
    One sentence for a target that is not a file, or that lies in a deployment's folder."""
    given = Path(out) if out is not None else Path.cwd()
    if out is None or given.is_dir() or str(out).endswith(os.sep):
        with contextlib.suppress(OSError):
            given.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        candidates = (given / f"{name}-requests-{stamp}{f'-{i}' if i else ''}.parquet" for i in range(10_000))
        given = next(p for p in candidates if not p.exists())
    target = given.resolve()
    if target.exists() and not target.is_file():
        raise InvalidInputError(f"--out {str(given)!r} exists and is not a file: give a file or a folder.")
    home = folder.resolve().parent
    if target.is_relative_to(home) and target.relative_to(home).parts[:1] != ():
        if (home / target.relative_to(home).parts[0] / "spec.json").exists():
            raise InvalidInputError(f"--out {str(given)!r} is inside a deployment's folder: write it elsewhere.")
    return given


def write_parquet(path: Path, schema: Any, tables: Iterable[Any], dictionary: list[str]) -> None:
    """Write ``tables`` (Arrow tables of ``schema``) to the Parquet file ``path``, streaming.

    Through polars's streaming writer where polars is installed: it encodes the columns on
    every core, where pyarrow's writer encodes them one after the other on one (on 1M rows of
    30 features, 0.23 to 0.32 s against 0.53 to 0.72 s; ``bench/export.py``). Else through
    pyarrow, one row group per table, with dictionaries for the ``dictionary`` columns only
    (on measured floats they cost four times the write and save nothing)."""
    try:
        import polars as pl
        from polars.io.plugins import register_io_source
    except ImportError:
        import pyarrow.parquet as pq

        with pq.ParquetWriter(path, schema, use_dictionary=dictionary) as writer:
            for table in tables:
                writer.write_table(table)
        return

    def frames(with_columns: Any, predicate: Any, n_rows: Any, batch_size: Any) -> Iterator[Any]:
        for table in tables:
            yield pl.from_arrow(table)

    frame_schema = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]
    register_io_source(frames, schema=frame_schema).sink_parquet(path, compression="snappy", statistics=True)
