"""What of a request's inputs reaches the request log: all of it, keyed hashes, or nothing.

>>> p = LogPrivacy("full", ["email"], b"k" * 32, lambda: ("age", "email"))
>>> record = {"inputs": [[41.0, "ann@example.org"]]}
>>> p.apply(record); record["inputs"][0][0], record["inputs"][0][1].startswith("h:"), record["inputs_private"]
(41.0, True, 'redacted')

``--log-inputs hashed`` replaces every input value written to disk by a keyed hash,
``--redact COL`` the values of those columns, ``--log-inputs none`` drops the inputs. The
hash is BLAKE2b keyed with the deployment's ``log.key`` (owner-only, made at serve): equal
values hash equally (a category's counts, a person's records, ``forget --where`` all still
work on it), and without the key nobody can test guesses of a value against it. The live
monitoring windows see the values in memory, so drift works on every column while the
server runs; what is rebuilt from the log after a restart skips records whose inputs are
hashed (``inputs_private`` marks them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LOG_INPUTS", "LOG_KEY", "LogPrivacy", "keeps_private", "key_from_hex", "keyed_hash", "read_key"]

LOG_INPUTS = ("full", "hashed", "none")
LOG_KEY = "log.key"  # in the deployment folder, owner-only


def keeps_private(log_inputs: str, redact: Collection[str]) -> bool:
    """Whether a deployment keeps any input out of its logs in clear."""
    return log_inputs != "full" or bool(redact)


def read_key(folder: Path) -> bytes | None:
    """The deployment's hashing key, or ``None`` when it has none."""
    try:
        return key_from_hex((folder / LOG_KEY).read_text())
    except OSError:
        return None


def key_from_hex(text: str | None) -> bytes | None:
    """A hashing key written as hex (``log.key``, a Ray replica's arguments); ``None`` for none or a damaged one."""
    try:
        return bytes.fromhex((text or "").strip()) or None
    except ValueError:
        return None


def _canonical(value: Any) -> str:
    """One text per value, so that 5, 5.0 and numpy's 5.0 hash alike (rows arrive as floats
    on the fast path and as their JSON types on the table path)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(float(value))
    return str(value)


def keyed_hash(key: bytes, value: Any) -> str:
    return "h:" + hashlib.blake2b(_canonical(value).encode(), key=key, digest_size=8).hexdigest()


class LogPrivacy:
    """Rewrites a record's ``inputs`` in place before it is written."""

    def __init__(self, mode: str, redact: Sequence[str], key: bytes | None,
                 names: Callable[[], Sequence[str]]) -> None:  # fmt: skip
        if mode not in LOG_INPUTS:
            raise ValueError(f"log_inputs {mode!r}")
        if (mode == "hashed" or redact) and not key:
            raise ValueError("hashed or redacted inputs need the deployment's log.key")
        self.mode, self.redact, self.key, self.names = mode, frozenset(redact), key or b"", names

    @property
    def active(self) -> bool:
        return keeps_private(self.mode, self.redact)

    def apply(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        error = record.get("error")
        if isinstance(error, str):
            # the server's sentence is kept; what follows its colon is another's text (the model's
            # exception, a parser's), which may quote an input value
            record["error"] = error.split(": ", 1)[0] + (" (the rest is not logged)" if ": " in error else "")
        rows = record.get("inputs")
        if rows is None:
            return
        if self.mode == "none":
            del record["inputs"]
            record["inputs_private"] = "none"
            return
        key = self.key
        if self.mode == "hashed":  # every cell, whatever the columns are called
            record["inputs"] = [[keyed_hash(key, v) for v in row] if isinstance(row, list) else keyed_hash(key, row)
                                for row in rows]  # fmt: skip
            record["inputs_private"] = "hashed"
            return
        columns = record.get("columns") or self.names()
        hashed = {i for i, c in enumerate(columns) if c in self.redact}
        if not hashed:
            return
        record["inputs"] = [[keyed_hash(key, v) if i in hashed else v for i, v in enumerate(row)]
                            if isinstance(row, list) else row for row in rows]  # fmt: skip
        record["inputs_private"] = "redacted"

    def matches(self, record: dict[str, Any], column: str, value: Any) -> bool:
        """Whether a logged record has a row whose ``column`` is ``value`` (compared with its
        keyed hash where the record keeps one)."""
        rows = record.get("inputs")
        if not isinstance(rows, list):
            return False
        columns = list(record.get("columns") or self.names())
        if column not in columns:
            return False
        i, wanted = columns.index(column), _canonical(value)
        hashed = keyed_hash(self.key, value) if self.key else None
        for row in rows:
            if isinstance(row, list) and i < len(row) and (_canonical(row[i]) == wanted or row[i] == hashed):
                return True
        return False
