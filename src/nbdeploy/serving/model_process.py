"""A challenger's model served from a process of its own.

In the server's process a second model would predict on a second thread, and both threads
would take turns on one interpreter lock: a shadow's predictions then delayed the champion's
answers (client p99 2.8 times as long with a shadowed forest, one connection), and a canary's small
batches cut throughput to 0.6 times (16 connections). In a process of its own the challenger predicts on the other
core; a shadow's process also runs under ``SCHED_IDLE``, so that when the machine is busy
the champion's clients come first and the shadow gets what is left (it never preempts them).

The process is spawned (never forked from a server that runs threads), dies with the server
however the server dies (``PR_SET_PDEATHSIG``), and is replaced once if it dies while the
server lives (its model loaded again).
"""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import socket
import struct
import termios
import threading
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from nbdeploy._process import die_with, run_idle

__all__ = ["InProcessModel", "ModelProcess", "portable", "spawn_worker", "start_worker", "stop_worker"]

_PIPE_ERRORS = (EOFError, BrokenPipeError, ConnectionResetError, OSError)
_SEND_ON_LOOP = 16 * 1024  # bytes: a pipe's buffer holds at least this much (Linux: 64 KiB)
_READ_ON_LOOP = 16 * 1024  # an answer up to this size is read on the loop once it is all in


def start_worker(parent: int, idle: bool) -> None:
    """A worker's first step: die with the server; a shadow's (``idle``) gets only the CPU left over."""
    die_with(parent)
    if idle:
        run_idle()


def _serve(conn: Connection, parent: int, idle: bool, path: str) -> None:
    """The worker: load the model, then answer each batch sent on ``conn`` until it closes."""
    start_worker(parent, idle)
    from nbdeploy.serving.loader import load

    try:
        model = load(path)
    except BaseException as exc:
        conn.send(("error", portable(exc)))
        return
    from nbdeploy.serving.batching import frame, predictions

    conn.send(("ok", sorted(model.methods)))
    while True:
        try:
            rows, names, method = conn.recv()
        except EOFError:  # the server closed the pipe: stop
            return
        try:  # the DataFrame is built here and the output listed here: work off the server's process
            answer: tuple[str, Any] = ("ok", predictions(model.call(frame(rows, names), method)))
        except Exception as exc:
            answer = ("error", portable(exc))
        conn.send(answer)


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it can cross the pipe, else a RuntimeError that says what it was."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class ModelProcess:
    """``await predict(rows, names)`` by the model at ``path``, loaded in a worker process.

    One pipe, used by the challenger's batcher on the event loop: the batch is written and
    the answer read there, with no thread of ours between (a ``ProcessPoolExecutor`` adds a
    feeder and a result thread, and each hop waits for the interpreter lock of a busy
    server: a canary's requests took twice as long at 16 connections). The worker builds
    the DataFrame and lists the predictions, so that work is off the server's process.
    :meth:`stop` follows the batcher's stop, so no read is pending on the pipe it closes."""

    def __init__(self, path: str, idle: bool = False) -> None:
        self.path, self.idle = path, idle
        self._proc: Any = None
        self._conn: Connection | None = None
        self._peek: socket.socket | None = None
        self._failure: str | None = None  # why the worker could not be started again
        self.methods: frozenset[str] = frozenset({"predict"})  # the model's, as its worker reports them
        self._lock = threading.Lock()  # spawning, closing and a write from a thread: one at a time
        self._stopped = False

    @property
    def pid(self) -> int | None:
        """The worker's process id (``None`` before it starts): its CPU and memory are the challenger's."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 300.0) -> None:
        """Spawn the worker and load the model in it; the loader's error as raised there."""
        with self._lock:
            self._spawn(timeout)

    def _spawn(self, timeout: float) -> None:
        self._proc, self._conn, value = spawn_worker(_serve, (self.idle, self.path), timeout, "the challenger")
        self._peek = socket.socket(fileno=os.dup(self._conn.fileno()))  # to look at an answer before reading it
        self.methods = frozenset(value)

    async def predict(self, rows: Any, names: tuple[str, ...], method: str = "predict") -> list[Any]:
        """The predictions for ``rows`` (an array or a DataFrame), one entry per row. Sent from
        the event loop (a large batch from a thread: the worker may be slow to read it, and
        the loop never waits on it); the answer is read once it is all in (:meth:`_receive`)."""
        loop = asyncio.get_running_loop()
        payload = bytes(ForkingPickler.dumps((rows, names, method)))
        for _attempt in range(2):
            conn = self._conn
            if conn is None:
                break
            try:
                if len(payload) <= _SEND_ON_LOOP:  # fits in the empty pipe's buffer: never blocks
                    conn.send_bytes(payload)
                else:
                    await asyncio.to_thread(self._send_locked, conn, payload)
                kind, value = await self._receive(loop, conn)
            except _PIPE_ERRORS:  # killed (the OOM killer, a signal): load it again, once
                if self._stopped:
                    break
                await asyncio.to_thread(self._respawn)  # joining the dead worker and loading: off the loop
                continue
            if kind == "error":
                raise value
            return list(value)
        if self._failure and not self._stopped:
            raise RuntimeError(f"the challenger's process died and could not be started again ({self._failure})")
        raise RuntimeError("the challenger's process is stopped" if self._stopped or self._conn is None else
                           "the challenger's process died twice in a row")  # fmt: skip

    async def _receive(self, loop: asyncio.AbstractEventLoop, conn: Connection) -> Any:
        """The worker's next answer, read without ever blocking the loop: read there once the
        whole answer is in the pipe; a large one (which may not fit in the pipe's buffer, so
        the worker must go on writing while it is read) is read from a thread."""
        peek = self._peek
        while True:
            await _readable(loop, conn.fileno())
            size = _frame_size(peek) if peek is not None else 0
            if size is not None and size > _READ_ON_LOOP:
                return await asyncio.to_thread(self._recv_locked, conn)
            if size is not None and _available(peek) >= size:
                return conn.recv()
            if self._proc is not None and not self._proc.is_alive():  # died mid-answer: it will never complete
                raise EOFError("the challenger's process died while it answered")
            await asyncio.sleep(0.001)  # the rest of a small answer is on its way

    def _recv_locked(self, conn: Connection) -> Any:
        with self._lock:  # stop() closes the pipe only once this read has ended
            return conn.recv()

    def _send_locked(self, conn: Connection, payload: bytes) -> None:
        with self._lock:  # stop() closes the pipe only once this write has ended
            conn.send_bytes(payload)

    def _respawn(self) -> None:
        with self._lock:
            self._shutdown()
            if self._stopped or self._failure:
                return
            try:
                self._spawn(300.0)
            except Exception as exc:  # every later batch says why, without trying again
                self._failure = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()  # a batch still waiting on it ends now, with an error
        with self._lock:
            self._shutdown()

    def _shutdown(self) -> None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        peek, self._peek = self._peek, None
        if peek is not None:
            peek.close()
        stop_worker(conn, proc)


def spawn_worker(target: Any, args: tuple[Any, ...], timeout: float, what: str) -> tuple[Any, Connection, Any]:
    """Spawn ``target(conn, server_pid, *args)`` and wait for its first message, ``("ok",
    value)``: ``(process, connection, value)``. Its ``("error", exc)`` is raised here, as is a
    ``TimeoutError`` after ``timeout``; either way the process is stopped first."""
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, os.getpid(), *args), daemon=True)
    proc.start()
    child.close()
    try:
        if not conn.poll(timeout):
            raise TimeoutError(f"{what} did not load within {timeout:.0f} s")
        kind, value = conn.recv()
    except BaseException:
        stop_worker(conn, proc)
        raise
    if kind == "error":
        stop_worker(conn, proc)
        raise value
    return proc, conn, value


def stop_worker(conn: Connection | None, proc: Any) -> None:
    """Close the pipe to a worker, and join it (killed if it has not ended within 5 s)."""
    if conn is not None:
        conn.close()
    if proc is not None:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def _frame_size(peek: socket.socket) -> int | None:
    """The size of the next message on the pipe, its header included (``multiprocessing``
    frames a message with its length: 4 bytes, or 4 + 8 past 2 GiB); 0 at the end of the
    pipe (the read that follows raises ``EOFError``); ``None`` while the header is not in."""
    try:
        head = peek.recv(12, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    if not head:
        return 0
    if len(head) < 4:
        return None
    (size,) = struct.unpack("!i", head[:4])
    if size != -1:
        return 4 + size
    return 12 + struct.unpack("!Q", head[4:12])[0] if len(head) == 12 else None


def _available(peek: socket.socket | None) -> int:
    """Bytes waiting in the pipe."""
    if peek is None:
        return 0
    return int(struct.unpack("i", fcntl.ioctl(peek.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Return once ``fd`` has something to read (or is closed)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class InProcessModel:
    """The challenger loaded in the server's own process, for servers that start no processes
    of their own (a Ray replica: Ray places and restarts processes, not nbdeploy). It predicts
    on its batcher's thread and takes turns with the champion on the interpreter lock."""

    def __init__(self, path: str, idle: bool = False) -> None:
        self.path = path
        self._model: Any = None
        self.methods: frozenset[str] = frozenset({"predict"})

    def start(self) -> None:
        from nbdeploy.serving.loader import load

        self._model = load(self.path)
        self.methods = frozenset(self._model.methods)

    def predict(self, X: Any, method: str = "predict") -> Any:
        if self._model is None:
            raise RuntimeError("the challenger is stopped")
        return self._model.call(X, method)

    def stop(self) -> None:
        self._model = None
