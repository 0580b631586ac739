"""The chunks of one batch run in flight: handed out in order to the processes' threads,
their answers written in order by the caller's thread (:mod:`.batch`).

At most three chunks per process are read and not yet written, and each process has at most
the chunk it scores and the next one sent to it. The first failure (a chunk the signature
refuses, a model that raises, a process that dies, an input that cannot be read further) ends
the run: every thread sees it, and the writer raises it.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["Run"]


class Run:
    """The chunks in flight: taken in order by the processes' threads, written in order here."""

    def __init__(self, source: Any, workers: int, key: str | None, send_key: bool, progress: Any) -> None:
        self.chunks, self.send_key = source.chunks(), send_key
        self.total, self.key, self.progress, self.workers = source.total, key, progress, workers
        self.lock, self.ready = threading.Lock(), threading.Condition()
        self.room = threading.Semaphore(3 * workers)  # chunks read and not yet written
        self.done: dict[int, Any] = {}
        self.count, self.ended = 0, False  # chunks handed out, input exhausted
        self.error: BaseException | None = None  # the first failure
        self.written = 0  # chunks written

    def next(self) -> tuple[int, int, Any] | None:
        self.room.acquire()
        with self.lock:
            if self.ended or self.error is not None:
                self.room.release()
                return None
            try:
                start, table = next(self.chunks)
            except StopIteration:
                self.ended = True
                start, table = 0, None
            except Exception as exc:  # a file that cannot be read further
                self.fail(exc)
                start, table = 0, None
            if table is None:
                self.room.release()
                with self.ready:
                    self.ready.notify_all()
                return None
            index, self.count = self.count, self.count + 1
            return index, start, table

    def fail(self, error: BaseException) -> None:
        with self.ready:
            first = self.error is None
            if first:
                self.error = error
            self.ready.notify_all()
        if first:  # the threads waiting for room to read a chunk: let them see the failure
            for _ in range(self.workers):
                self.room.release()

    def answer(self, index: int, start: int, table: Any, predicted: Any) -> None:
        import pyarrow as pa

        head = {"row": pa.array(range(start, start + table.num_rows), pa.int64())}
        if self.key is not None:
            head[self.key] = table.column(self.key)
        with self.ready:
            self.done[index] = pa.table({**head, **{n: predicted.column(n) for n in predicted.column_names}})
            self.ready.notify_all()

    def drive(self, process: Any) -> None:
        """Keep one process busy: a thread sends it chunks (one ahead of the one it scores, no
        more), this one takes its answers in the order they were sent."""
        sent: queue.Queue[tuple[int, int, Any] | None] = queue.Queue()
        ahead = threading.Semaphore(2)  # the chunk being scored, and the next one

        def send() -> None:
            try:
                while ahead.acquire() and (item := self.next()) is not None:
                    _, start, table = item
                    process.send(start, table if self.send_key else table.drop_columns([self.key]))
                    sent.put(item)
            except Exception as exc:
                self.fail(exc)
            finally:
                sent.put(None)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            while (item := sent.get()) is not None:
                index, start, table = item
                self.answer(index, start, table, process.receive(start, table.num_rows))
                ahead.release()
        except Exception as exc:  # the first failure ends the run; the writer raises it
            self.fail(exc)
        finally:
            ahead.release()  # a sender waiting to send more: it sees the failure, or the end

    def _writable(self) -> bool:
        return self.error is not None or self.written in self.done or (self.ended and self.written >= self.count)

    def write(self, output: Any) -> int:
        """Write the answers in order as they come; the rows written."""
        self.written, rows = 0, 0
        while True:
            with self.ready:
                self.ready.wait_for(self._writable)
                if self.error is not None:
                    raise self.error
                if self.written not in self.done:
                    return rows
                table = self.done.pop(self.written)
            output.write(table, f"rows {rows:,}-{rows + table.num_rows - 1:,}")
            self.written, rows = self.written + 1, rows + table.num_rows
            self.room.release()
            if self.progress is not None:
                self.progress(rows, self.total)
