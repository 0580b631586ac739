"""Reading a request's body within its limit, and parsing it without stalling other clients.

:func:`read_body` refuses a body past the limit (413) before it is read whole.
:func:`parse_body` parses a small body on the event loop (a thread hop would cost more than
the parse), a larger one in a worker thread, and a large one in a separate process.

A worker thread is not enough: ``json.loads`` and pandas' CSV reader hold the GIL for the
whole parse, so a 13 MiB JSON object of a million keys, parsed in a thread, kept ``/ping``
from answering for 0.7 s. A process of its own parses instead, and sends back what the
batcher needs (the input as a numpy array or a DataFrame, or the 4xx to answer), which
crosses the pipe as a few buffers.

>>> pool = ParsePool()                                                # doctest: +SKIP
>>> pool.start()                                                      # in the app's lifespan
>>> parsed = await pool.run(parse, body, content_type, schema)        # ProtocolError as raised
>>> pool.stop()

The worker is spawned (never forked from a server that runs threads), in the server's
process group, so stopping the deployment stops it too, and it dies with the server even
when only the server is killed. A worker that died (the kernel's OOM killer, say) is
replaced and the body parsed again by the new one; a body that kills that one too is
answered 400 (it could not be parsed), never 5xx.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from nbdeploy._process import die_with
from nbdeploy.serving.protocol import ProtocolError

__all__ = ["PARSE_OFF_PROCESS_BYTES", "PARSE_ON_LOOP_BYTES", "ParsePool", "die_with", "parse_body", "read_body"]

T = TypeVar("T")



class ParsePool:
    """One worker process that parses bodies; :meth:`run` awaits its answer off the event loop.

    The worker is spawned at the first large body, not before: a server that only ever gets
    small requests (most do) never pays its memory (about 120 MB with pandas)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._enabled = False

    def start(self) -> None:
        """Parse large bodies in the worker from now on (spawned when first needed)."""
        self._enabled = True

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def run(self, parser: Callable[..., T], *args: Any) -> T:
        if not self._enabled:  # not started (an app driven without its lifespan): a thread
            return await asyncio.to_thread(parser, *args)
        for _attempt in range(2):
            try:
                return await asyncio.get_running_loop().run_in_executor(self._executor(), parser, *args)
            except BrokenProcessPool:  # the worker died: maybe before this body, maybe of it
                self._shutdown()
        raise ProtocolError(400, "The body could not be parsed: its parser ran out of resources.")

    def stop(self) -> None:
        self._enabled = False
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


PARSE_ON_LOOP_BYTES = 64 << 10
PARSE_OFF_PROCESS_BYTES = 256 << 10  # past this, a parse holding the GIL would stall others (~50 ms/MiB)


async def parse_body(
    body: bytes, parser: Callable[..., T], *args: Any, process: Callable[..., Awaitable[Any]] | None = None
) -> T:
    """``parser(body, *args)``: on the event loop for a small body, in a worker thread for a
    larger one, and through ``process`` (:meth:`ParsePool.run`) for a large one."""
    if len(body) < PARSE_ON_LOOP_BYTES:
        return parser(body, *args)
    if process is not None and len(body) >= PARSE_OFF_PROCESS_BYTES:
        return await process(parser, body, *args)
    return await asyncio.to_thread(parser, body, *args)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it passes ``limit`` bytes (before it is read whole)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    # ASGI messages read directly: Request.stream() is an async generator, and creating,
    # registering and finalising one per request cost about 1% of the server's CPU
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # what Request.body() would have kept, so a later read sees it
    return body


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(413, f"The body is larger than the limit of {limit} bytes.", "REQUEST_TOO_LARGE")
