"""A request's head is bounded in size, in fields and in time (a real server, raw sockets),
and ordinary HTTP/1.1 (keep-alive, pipelining) still works through the limits."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import Any

import httpx

from nbdeploy.serving.http_limits import BODY_IDLE_S, HEAD_TIMEOUT_S, MAX_HEAD_BYTES, MAX_HEADERS
from nbdeploy.serving.requestlog import read_records
from tests.helpers import eventually


def _connect(dep: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", dep.port), timeout=30)


def _answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the one answer on ``sock`` (the server closes after it)."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _stream_until_answered(sock: socket.socket, start: bytes, filler: bytes, total: int) -> int:
    """Send ``start`` then ``filler`` until ``total`` bytes or until the server answers;
    returns how many bytes were sent."""
    sock.sendall(start)
    sent = len(start)
    while sent < total:
        if select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(filler)
    return sent


def test_a_64_mib_header_is_refused_early(dep: Any) -> None:
    with _connect(dep) as sock:
        sent = _stream_until_answered(sock, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, 64 << 20)
        status, body = _answer(sock)
    assert (status, body["error_code"]) == (431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
    assert str(MAX_HEAD_BYTES) in body["message"]
    assert sent < 16 << 20  # refused long before the 64 MiB were sent (socket buffers hold a few MiB)
    assert httpx.get(f"{dep.url}/ping").status_code == 200


def test_too_many_header_fields_or_a_long_url_are_refused(dep: Any) -> None:
    fields = "".join(f"X-F{i}: 1\r\n" for i in range(MAX_HEADERS + 1))
    with _connect(dep) as sock:
        sock.sendall(f"GET /ping HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        status, body = _answer(sock)
    assert status == 431 and str(MAX_HEADERS) in body["message"]
    with _connect(dep) as sock:
        sock.sendall(b"GET /ping?" + b"q" * (MAX_HEAD_BYTES + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(sock)[0] == 431
    with _connect(dep) as sock:  # just under the limits: served
        most = "".join(f"X-F{i}: 1\r\n" for i in range(MAX_HEADERS - 2))  # with Host and Connection
        sock.sendall(f"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{most}\r\n".encode())
        assert sock.makefile("rb").readline().split()[1] == b"200"


def test_malformed_http_is_one_json_sentence(dep: Any) -> None:
    with _connect(dep) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        status, body = _answer(sock)
    assert (status, body["error_code"]) == (400, "BAD_REQUEST")


def test_a_head_that_trickles_in_or_never_comes_is_cut_off(dep: Any) -> None:
    results: dict[str, Any] = {}

    def trickle() -> None:
        with _connect(dep) as sock:
            started = time.monotonic()
            for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                if select.select([sock], [], [], 0.5)[0]:
                    break
                sock.sendall(bytes([byte]))
            results["trickle"] = (_answer(sock), time.monotonic() - started)

    def idle() -> None:
        with _connect(dep) as sock:
            results["idle"] = sock.recv(1)  # b"": closed by the server

    def stalled_body() -> None:
        with _connect(dep) as sock:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"inputs\": ")  # fmt: skip
            results["stalled body"] = _answer(sock)

    threads = [threading.Thread(target=t) for t in (trickle, idle, stalled_body)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=HEAD_TIMEOUT_S * 4)
    (status, body), took = results["trickle"]
    assert (status, body["error_code"]) == (408, "REQUEST_TIMEOUT")
    assert took >= HEAD_TIMEOUT_S - 1  # not before its time: the bytes kept coming
    assert results["idle"] == b""
    status, body = results["stalled body"]
    assert (status, body["error_code"]) == (408, "REQUEST_TIMEOUT") and str(BODY_IDLE_S)[:2] in body["message"]
    logged = eventually(lambda: [r for r in read_records(dep.path / "requests.jsonl") if r["status"] == 408])
    assert len(logged) == 1  # the client's doing: a 4xx, never a 5xx nor an error of the server's
    assert dep.snapshot("1m")["windows"]["1m"]["error_rate"] == 0.0


def test_a_client_that_leaves_mid_body_is_a_4xx_not_a_server_error(dep: Any) -> None:
    for _ in range(3):
        with _connect(dep) as sock:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"inputs\": [")  # fmt: skip
            time.sleep(0.2)
    statuses = eventually(lambda: [r["status"] for r in read_records(dep.path / "requests.jsonl")],
                          lambda found: len(found) == 3)  # fmt: skip
    assert statuses == [408, 408, 408]
    window = dep.snapshot("1m")["windows"]["1m"]
    assert window["status_classes"]["5xx"] == 0 and window["error_rate"] == 0.0  # no false alert


def test_keep_alive_and_pipelining_still_work(dep: Any) -> None:
    one = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(dep) as sock:
        sock.sendall(one * 3 + b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.count(b"HTTP/1.1 200") == 4
    with httpx.Client(timeout=10) as client:  # one connection, many requests
        assert {client.get(f"{dep.url}/ping").status_code for _ in range(50)} == {200}
