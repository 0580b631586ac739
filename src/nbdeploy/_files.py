"""Writing state files so that a reader never sees half of one: the one atomic-write helper.

>>> write_atomic(Path("/tmp/demo.json"), "{}")          # doctest: +SKIP
>>> write_atomic(Path("/tmp/token"), "s3cret", private=True)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["append_private", "write_atomic"]


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


def append_private(path: Path, text: str) -> None:
    """Append ``text`` with one ``write`` to an owner-only file (lines of concurrent writers
    never interleave: ``O_APPEND`` writes of a few KB land whole)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
