"""Writing state files: atomically (a reader never sees half of one), and never through a
symbolic link (a link in a state folder is replaced by a file, never followed).

>>> write_atomic(Path("/tmp/demo.json"), "{}")          # doctest: +SKIP
>>> write_atomic(Path("/tmp/token"), "s3cret", private=True)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["append_private", "flocked", "open_log", "open_owned", "read_small", "write_atomic"]


def write_atomic(path: Path, text: str, *, private: bool = False) -> None:
    """Replace ``path`` with ``text`` in one rename: readers see the old file or the new one.

    ``private`` creates the file owner-only (``0o600``) before a byte is written, for tokens.
    """
    # a name of its own per call: two threads or processes writing one file never share a temp file
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        if not private:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_owned(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode: int = 0o600) -> int:
    """``os.open(path, flags)`` that never follows a symbolic link at ``path``: a link is
    removed and a file created in its place. A state folder is nbdeploy's; whatever a link in
    it points to is not, and writing (or truncating, or chmod-ing) it would be an attack's
    success, so the link goes."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    path.unlink()
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def open_log(path: Path, text: bool = False) -> IO[Any]:
    """A log file of a state folder opened to append (see :func:`open_owned`)."""
    return os.fdopen(open_owned(path), "a" if text else "ab")


def append_private(path: Path, text: str | bytes) -> None:
    """Append ``text`` with one ``write`` to an owner-only file (lines of concurrent writers
    never interleave: ``O_APPEND`` writes of a few KB land whole; a write the kernel cut short
    is finished by more). After a torn last line (a writer killed mid-way) the text starts on a
    line of its own, so it is not lost with it."""
    data = text.encode() if isinstance(text, str) else text
    fd = open_owned(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        view = memoryview(b"\n" + data if size > 0 and os.pread(fd, 1, size - 1) != b"\n" else data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def open_to_read(path: Path) -> int:
    """``os.open`` to read a file another process may have put in place: never through a
    symbolic link (``ELOOP``), never blocking on a FIFO. The caller checks with ``fstat``
    what it opened (a regular file, whose)."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def read_small(path: Path) -> str | None:
    """A small state file's text (undecodable bytes replaced: damage is judged by the
    caller), or ``None`` when it is missing, empty or unreadable."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace").strip() or None
    except OSError:
        return None


@contextlib.contextmanager
def flocked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold a ``flock`` on the owner-only file ``path`` (created when missing): exclusive, or
    ``shared`` with other shared holders."""
    with os.fdopen(open_owned(path, os.O_WRONLY | os.O_CREAT), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
