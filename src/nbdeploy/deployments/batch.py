"""Batch scoring: a model version over a file or a DataFrame, in parallel chunks, to a file.

>>> nbdeploy.batch("cancer@champion", "customers.parquet", "scores.parquet", workers=2)  # doctest: +SKIP
Scored 1,000,000 rows with cancer/3 in 9.8 s (102,000 rows/s, 2 workers) to scores.parquet.

``workers`` processes (``nbdeploy.serving.batch_worker``) each load the model once. For each
process a thread here sends it the next chunk (one ahead, so that it never waits) and another
takes its answers; this thread writes the answers in input order. At most three chunks per
process are read and not yet written, so memory is bounded by the chunk size, whatever the
input's. The input is checked as the server checks a request, and a chunk that breaks the
signature stops the run with a sentence naming its rows. The output has ``row`` (the input
row's number), the ``--key`` column when given, ``prediction``, and ``proba_<class>`` for a
classifier (unless ``proba=False``).
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy.errors import InvalidInputError
from nbdeploy.spec import BATCH_CHUNK_ROWS

__all__ = ["BatchResult", "batch"]


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote: the file, rows, time, and the MLflow run that records it."""

    path: Path
    rows: int
    model: str
    seconds: float
    workers: int
    chunk_rows: int
    run_id: str | None
    startup_seconds: float = 0.0  # of ``seconds``: until every process had loaded the model

    def __repr__(self) -> str:
        rate = f"{self.rows / self.seconds:,.0f} rows/s, " if self.seconds > 0 and self.rows else ""
        run = f"; MLflow run {self.run_id}" if self.run_id else ""
        return (f"Scored {self.rows:,} rows with {self.model} in {self.seconds:.1f} s ({rate}{self.workers} "
                f"worker{'s' if self.workers != 1 else ''}) to {self.path}{run}.")  # fmt: skip

    def frame(self) -> Any:
        """The predictions as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.path) if self.path.suffix.lower() != ".csv" else pd.read_csv(self.path)


class _Run:
    """The chunks in flight: taken in order by the processes' threads, written in order here."""

    def __init__(self, source: Any, workers: int, key: str | None, progress: Any) -> None:
        self.chunks = source.chunks()
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
            if self.key not in table.column_names:
                raise InvalidInputError(f"--key {self.key!r} is not a column of --data.")
            head[self.key] = table.column(self.key)
        with self.ready:
            self.done[index] = pa.table({**head, **{n: predicted.column(n) for n in predicted.column_names}})
            self.ready.notify_all()

    def drive(self, process: Any) -> None:
        """Keep one process busy: a thread sends it chunks (one ahead of the one it scores),
        this one takes its answers in the order they were sent."""
        sent: queue.Queue[tuple[int, int, Any] | None] = queue.Queue()

        def send() -> None:
            try:
                while (item := self.next()) is not None:
                    process.send(item[1], item[2])
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
        except Exception as exc:  # the first failure ends the run; the writer raises it
            self.fail(exc)

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
            output.write(table)
            self.written, rows = self.written + 1, rows + table.num_rows
            self.room.release()
            if self.progress is not None:
                self.progress(rows, self.total)


def _model_path(ref: str) -> tuple[str, str, str | None]:
    """The local copy of ``ref``'s model (kept under NBDEPLOY_HOME/_batch), its label and version."""
    from nbdeploy import config
    from nbdeploy.deployments.models import fetch

    entry = fetch(ref, config.home() / "_batch")
    return entry.model_path, entry.resolved or ref, str(entry.version) if entry.version is not None else None


def batch(ref: str, data: Any, out: str | Path, *, chunk_rows: int = BATCH_CHUNK_ROWS, workers: int | None = None,
          proba: bool = True, key: str | None = None, progress: Any = None,
          log_run: bool = True) -> BatchResult:  # fmt: skip
    """Score ``data`` (a CSV/Parquet path or a DataFrame) with ``ref`` into ``out`` (.parquet or .csv)."""
    from nbdeploy.deployments.batch_io import Input, Output, ScoringProcess

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = cores if workers is None else workers
    if not 1 <= workers <= 256:
        raise InvalidInputError(f"Invalid worker count {workers}: use 1 to 256.")
    if not 1 <= chunk_rows <= 50_000_000:
        raise InvalidInputError(f"Invalid chunk size {chunk_rows} rows: use 1 to 50,000,000.")
    source, output = Input(data, chunk_rows), Output(Path(out))
    model_path, label, version = _model_path(ref)
    started = time.perf_counter()
    shm = Path("/dev/shm")
    spool = Path(tempfile.mkdtemp(prefix="nbdeploy-batch-", dir=shm if os.access(shm, os.W_OK) else None))
    processes = [ScoringProcess(model_path, proba, max(1, cores // workers), spool) for _ in range(workers)]
    run = _Run(source, workers, key, progress)
    threads = [threading.Thread(target=run.drive, args=(p,), daemon=True) for p in processes]
    try:
        for p in processes:
            p.ready()
        startup = time.perf_counter() - started
        for t in threads:
            t.start()
        rows = run.write(output)
        if output.writer is None:
            raise InvalidInputError("--data has no rows to score.")
        output.commit()
        if progress is not None:
            progress(rows, rows)  # the end, also where the total was not known
    except BaseException as exc:
        run.fail(exc)
        output.discard()
        raise
    finally:
        for p in processes:
            p.stop()
        for t in threads:
            if t.is_alive():
                t.join(timeout=10)
        shutil.rmtree(spool, ignore_errors=True)
    seconds = time.perf_counter() - started
    run_id = None
    if log_run:
        from nbdeploy.registry.batch_runs import record_batch

        run_id = record_batch(label, version, source, output.path, rows, seconds, workers, chunk_rows)
    return BatchResult(output.path, rows, label, seconds, workers, chunk_rows, run_id, startup)
