"""The frames a batch-scoring process and the kernel exchange on its stdin and stdout: a tag
byte, an 8-byte length, a payload (see :mod:`nbdeploy.serving.batch_worker`). Defined once here
for both sides, which may not import each other."""

from __future__ import annotations

import struct
from typing import IO

__all__ = ["START", "read_frame", "write_frame"]

_HEAD = struct.Struct(">cQ")
START = struct.Struct(">Q")  # a data frame's first row number, before the name of its rows' file


def read_frame(stream: IO[bytes], limit: int = 1 << 40) -> tuple[bytes, bytes] | None:
    """The next ``(tag, payload)`` of ``stream``, or ``None`` at its end (or a frame cut short);
    a frame of more than ``limit`` bytes is not one of ours: ``(tag, b"")``, for the caller to refuse."""
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    tag, size = _HEAD.unpack(head)
    if size > limit:
        return b"?", b""
    payload = stream.read(size)
    return (tag, payload) if len(payload) == size else None


def write_frame(stream: IO[bytes], tag: bytes, payload: bytes) -> None:
    stream.write(_HEAD.pack(tag, len(payload)) + payload)
    stream.flush()
