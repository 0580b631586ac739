"""Records taken out of JSON-lines logs in place, while a server may be appending to them.

>>> removed = filter_file(path, keep=lambda record: record.get("id") != "r1")   # doctest: +SKIP

:func:`filter_file` writes the kept lines of a file's first ``size`` bytes to a temporary
file beside it (the slow part, done without any lock); the caller then swaps it in under
its own lock, copying over whatever was appended since (:func:`swap_in`). A line that is
not a JSON object (a torn last line) is kept as it is: only records ``keep`` rejects go.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "LOGS_LOCK", "Filtered", "drop_columns", "filter_file", "first_record", "not_of", "swap_in",
           "sweep"]  # fmt: skip

Keep = Callable[[dict[str, Any]], bool]
LOGS_LOCK = ".logs.lock"  # held exclusive to swap a filtered file in, shared by an export opening the logs
COLUMNS = ".log-columns"  # the logs' rows parsed ahead of an export (nbdeploy.deployments.log_columns)


@dataclass
class Filtered:
    """The kept lines of ``path`` up to ``size``, in ``temp``; ``removed`` records left out."""

    path: Path
    temp: Path
    size: int
    inode: int
    removed: int
    keep: Keep | None = None  # applied to what is appended before the swap too

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


def not_of(ids: set[str]) -> Keep:
    """Keeps the records of requests other than ``ids`` (what a forget leaves)."""
    return lambda record: str(record.get("id")) not in ids


def filter_file(path: Path, keep: Keep) -> Filtered | None:
    """The kept lines of ``path`` in a temporary file, or ``None`` when nothing goes (or the
    file is gone)."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return None
    removed = 0
    with fh:
        st = os.fstat(fh.fileno())
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".forget")
        with os.fdopen(fd, "wb") as out:
            size = 0
            for line in fh:
                if not line.endswith(b"\n"):  # still being written: left to the swap's copy
                    break
                size += len(line)
                try:
                    doc = json.loads(line)
                except (ValueError, RecursionError):  # torn, or nested too deep: kept as it is
                    doc = None
                if isinstance(doc, dict) and not keep(doc):
                    removed += 1
                    continue
                out.write(line)
    filtered = Filtered(path, Path(name), size, st.st_ino, removed, keep)
    if not removed:
        filtered.discard()
        return None
    return filtered


def swap_in(filtered: Filtered) -> bool:
    """Replace the file by its filtered copy plus what was appended after ``size``; ``False``
    (nothing changed) when the file was replaced meanwhile (a rotation): filter it again."""
    try:
        st = os.stat(filtered.path)
    except FileNotFoundError:
        filtered.discard()
        return False
    if st.st_ino != filtered.inode or not filtered.temp.exists():  # rotated, or the copy swept away
        filtered.discard()
        return False
    with filtered.path.open("rb") as fh, filtered.temp.open("ab") as out:
        fh.seek(filtered.size)
        appended = fh.read()  # what arrived during the filtering: a few seconds' worth at most
        # a record appended meanwhile by another writer of the log (a shadow's record of a
        # request being forgotten) goes too
        out.write(_kept(appended, filtered) if filtered.keep is not None else appended)
    os.chmod(filtered.temp, 0o600)
    os.replace(filtered.temp, filtered.path)
    drop_columns(filtered.path.parent, st.st_dev, st.st_ino)  # they hold the rows taken out
    return True


def drop_columns(folder: Path, dev: int, ino: int) -> None:
    """Delete the columnar copy of the log file ``(dev, ino)``, which left the logs. Called
    under the exclusive :data:`LOGS_LOCK` by a swap, so that a copy being written (published
    under the shared lock, only while its file is still linked) is never left behind."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder / COLUMNS):
            if name.startswith((f"{dev}-{ino}-", f".{dev}-{ino}-")):  # and one a killed converter left half-written
                with contextlib.suppress(OSError):
                    os.unlink(folder / COLUMNS / name)


def _kept(block: bytes, filtered: Filtered) -> bytes:
    """The lines of ``block`` that ``filtered.keep`` keeps (a line that is not a JSON object,
    or not ended yet, is kept as it is)."""
    assert filtered.keep is not None
    out = []
    for line in block.splitlines(keepends=True):
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict) and line.endswith(b"\n") and not filtered.keep(doc):
            filtered.removed += 1
            continue
        out.append(line)
    return b"".join(out)


def first_record(path: Path) -> dict[str, Any] | None:
    """The first JSON object of a log file (``None`` when it has none or cannot be read)."""
    try:
        with path.open("rb") as fh:
            for line in fh:
                try:
                    doc = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                return doc if isinstance(doc, dict) else None
    except OSError:
        return None
    return None


def sweep(folder: Path) -> int:
    """Remove the temporary files a filtering (``.NAME.*.forget``) or a converter of the
    columnar copy (``.log-columns/.*.tmp``) killed mid-way left: they hold copies of log
    records. Call it when neither runs (a server starting, a stopped deployment's forget)."""
    removed = 0
    for leftover in [*folder.glob(".*.forget"), *(folder / COLUMNS).glob(".*.tmp")]:
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
