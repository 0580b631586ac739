"""Limits on a request that uvicorn's httptools protocol does not have: the size of its head
(request line and headers), its number of header fields, the time the head takes to
arrive, and the longest pause in its body.

uvicorn bounds the head only with h11 (``h11_max_incomplete_event_size``), and has no
timeout for a head that trickles in (its keep-alive timer restarts on every byte). Without
them one client can make the server buffer a 64 MiB header, hold connections open forever a
byte at a time, or stop a body half-way and hold its buffer. Only a read that leaves a head
or a body unfinished starts a timer, so a request that arrives in one read pays for none.
:class:`LimitedHttpToolsProtocol` is uvicorn's own protocol with those checks, answered as
the server answers every refusal: a JSON error, and the connection closed.

The size is checked exactly for the header fields the parser has completed, and per read
for one still arriving (the parser buffers it out of sight): a head is refused at most one
read (256 KiB) after it passes the limit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BODY_IDLE_S", "HEAD_TIMEOUT_S", "LINGER_S", "MAX_HEADERS", "MAX_HEAD_BYTES", "LimitedHttpToolsProtocol"]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 10.0
BODY_IDLE_S = 10.0  # the longest pause in a body (a slow link is fine; a stalled one is not)
LINGER_S = 2.0  # how long a refused connection stays open for its client to read the answer

_TOO_LARGE = "REQUEST_HEADER_FIELDS_TOO_LARGE"
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing heads over :data:`MAX_HEAD_BYTES` or
    :data:`MAX_HEADERS` fields (431) and heads not whole within :data:`HEAD_TIMEOUT_S` (408)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a message's first byte and the end of its headers
        self._began_in_read = False
        self._head_bytes = 0  # the completed parts of the head (exact)
        self._unseen_bytes = 0  # the reads since the head began (the part still in the parser)
        self._fields = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = 0.0
        self._in_body = False  # headers done, body not complete yet
        self._body_seen = 0.0  # the last read that brought body bytes
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():  # answered: dropped (see _refuse)
            return
        self._unset_keepalive_if_required()
        self._began_in_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSockets here, as in uvicorn's own
        except httptools.HttpParserError:
            if not self._refused:  # else a refusal of ours, raised from a callback
                self._refuse(400, "The request is not valid HTTP/1.1.", "BAD_REQUEST")
            return
        if self._in_body:  # a body in more than one read: watched from now on
            self._body_seen = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(BODY_IDLE_S, self._timed_out)
        if not self._in_head:
            return
        if self._head_timer is None:  # a head in more than one read: from now on, it is timed
            remaining = HEAD_TIMEOUT_S - (self.loop.time() - self._head_started)
            self._head_timer = self.loop.call_later(max(0.0, remaining), self._timed_out)
        # the read in which a head began also holds what came before it: count the later ones
        if not self._began_in_read:
            self._unseen_bytes += len(data)
            if self._unseen_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    # parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._began_in_read = True, True
        self._head_bytes, self._unseen_bytes, self._fields = 0, 0, 0
        # no timer yet: most heads arrive in one read, and a timer per request costs
        self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_HEADERS:
            self._refuse(431, f"The request has more than {MAX_HEADERS} header fields.", _TOO_LARGE)
            raise _Refused
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        self._in_body = True  # its time is taken per read, not per chunk (see data_received)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    # refusals ------------------------------------------------------------------------

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()
            raise _Refused

    def _refuse_head(self) -> None:
        self._refuse(431, f"The request line and headers are larger than {MAX_HEAD_BYTES} bytes.", _TOO_LARGE)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._refuse(408, f"The request's headers did not arrive within {HEAD_TIMEOUT_S:g} s.", "REQUEST_TIMEOUT")
        elif self._in_body:
            idle = self.loop.time() - self._body_seen
            if idle < BODY_IDLE_S or self.flow.read_paused:  # bytes came meanwhile, or we stopped reading
                self._head_timer = self.loop.call_later(max(0.1, BODY_IDLE_S - idle), self._timed_out)
                return
            if self.cycle is not None:  # the route reading the body sees a disconnect (answered 408)
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self._refuse(408, f"The body stopped arriving: no byte for {BODY_IDLE_S:g} s.", "REQUEST_TIMEOUT")
        elif self.cycle is None:  # connected, and not a byte since: closed as uvicorn closes an idle one
            self.transport.close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer, then close once the client has had time to read the answer: what it is
        still sending is read and dropped meanwhile, because closing a socket with unread
        data resets it, and the reset would destroy the answer before the client reads it."""
        if self._refused:
            return
        self._refused = True
        self._disarm()
        body = json.dumps({"error_code": code, "message": message}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request (already answered)."""
