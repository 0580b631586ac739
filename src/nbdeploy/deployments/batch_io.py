"""What batch scoring reads, writes and talks to: chunks of the input (a Parquet or CSV file
streamed, or a DataFrame sliced), the output file, and one scoring process.

Chunks are Arrow tables of at most ``chunk_rows`` rows: a file is never read whole. The
output appears under its name only once complete (:meth:`Output.commit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from nbdeploy._frames import START, read_frame, write_frame
from nbdeploy.errors import DeploymentError, InvalidInputError

__all__ = ["Input", "Output", "ScoringProcess"]

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def _kind(path: Path, option: str) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(f"{option} {str(path)!r} is neither .csv nor .parquet.")
    return kind


class Input:
    """The rows to score, ``chunk_rows`` at a time, with their total when it is known."""

    def __init__(self, data: Any, chunk_rows: int) -> None:
        self.data, self.chunk_rows = data, chunk_rows
        self.path = Path(data) if isinstance(data, (str, Path)) else None
        self.total: int | None = None
        if self.path is not None:
            self.kind = _kind(self.path, "--data")
            if not self.path.is_file():
                raise InvalidInputError(f"--data {str(self.path)!r} is not a file.")
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                self.total = self._arrow(lambda: pq.ParquetFile(self.path).metadata.num_rows)
        else:
            self.kind = "frame"
            if not hasattr(data, "iloc") or not hasattr(data, "columns"):
                raise InvalidInputError(f"--data must be a DataFrame or a file, not {type(data).__name__}.")
            self.total = len(data)

    def _arrow(self, read: Any) -> Any:
        try:
            return read()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidInputError(f"--data {str(self.path)!r} could not be read: {exc}".rstrip(".") + ".") from None

    def chunks(self) -> Iterator[tuple[int, pa.Table]]:
        """``(first row number, rows)`` of each chunk, in order."""
        start = 0
        for table in self._tables():
            for offset in range(0, table.num_rows, self.chunk_rows):
                part = table.slice(offset, self.chunk_rows)
                yield start, part
                start += part.num_rows

    def _tables(self) -> Iterator[pa.Table]:
        if self.kind != "parquet":  # a DataFrame, or a CSV file read by pandas a chunk at a time
            frames = self._frames()
            while (part := self._arrow(lambda: next(frames, None))) is not None:
                yield _table(part)
            return
        import pyarrow.parquet as pq

        # a buffered stream, page by page: by default a whole row group (often the whole file) is read at once
        batches = self._arrow(lambda: pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20).iter_batches(
            batch_size=self.chunk_rows, use_threads=False))  # fmt: skip
        while True:
            batch = self._arrow(lambda: next(batches, None))
            if batch is None:
                return
            yield pa.Table.from_batches([batch])


    def _frames(self) -> Iterator[Any]:
        if self.kind == "frame":
            return (self.data.iloc[i : i + self.chunk_rows] for i in range(0, len(self.data), self.chunk_rows))
        import pandas as pd

        # pandas, not Arrow's CSV reader: a column with a value that is not a number becomes text
        # in that chunk only, and the scoring process names the rows; Arrow fails the file unnamed
        return iter(pd.read_csv(self.path, chunksize=self.chunk_rows))


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:
        return None
    return repr(value) if isinstance(value, float) else str(value)


def _table(part: Any) -> pa.Table:
    """A DataFrame chunk as Arrow; a column of mixed values (numbers and text) goes as text, for
    the scoring process to name the rows that are not numbers."""
    try:
        return pa.Table.from_pandas(part, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        mixed = {c: part[c].map(_text) for c in part.columns if part[c].dtype == object}
        return pa.Table.from_pandas(part.assign(**mixed), preserve_index=False)


class Output:
    """The predictions file (Parquet or CSV by its suffix), written chunk by chunk under a
    temporary name, renamed when complete."""

    def __init__(self, path: Path) -> None:
        self.path, self.kind = path, _kind(path, "--out")
        self.partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self.writer: Any = None
        self.schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(self.partial, table.schema)
            else:
                import pyarrow.csv as csv

                self.writer = csv.CSVWriter(str(self.partial), table.schema)
        self.writer.write_table(table.cast(self.schema))

    def commit(self) -> None:
        self.writer.close()
        self.partial.replace(self.path)

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()


def _rows(start: int, count: int) -> str:
    return f"rows {start:,}-{start + count - 1:,}"


class ScoringProcess:
    """One ``nbdeploy.serving.batch_worker`` process: the model loaded once, chunks sent and
    answered in turn. A chunk goes as an Arrow file in ``spool`` (a pipe copies it twice and
    takes longer than the chunk's prediction); the pipe carries its name and the answer. The
    process dies with this one; :meth:`stop` ends it and waits."""

    def __init__(self, model_path: str, proba: bool, threads: int, spool: Path) -> None:
        self.spool = spool  # where the chunks are written for the process to read
        argv = [sys.executable, "-m", "nbdeploy.serving.batch_worker", model_path, "--parent", str(os.getpid())]
        # each process gets its share of the cores: BLAS and OpenMP would otherwise each take them all
        env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                          "MKL_NUM_THREADS")}}  # fmt: skip
        self.err = tempfile.TemporaryFile()  # a file, not a pipe: warnings per chunk would fill a pipe and block
        self.proc = subprocess.Popen([*argv, *(["--proba"] if proba else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env=env)  # fmt: skip
        self.methods: list[str] = []

    def ready(self) -> None:
        """Wait for the model to load; DeploymentError with the reason when it does not."""
        answer = self._read()
        if answer is None or answer[0] != b"R":
            raise DeploymentError(self._why(answer, "could not start"))
        self.methods = json.loads(answer[1])["methods"]

    def _read(self) -> tuple[bytes, bytes] | None:
        assert self.proc.stdout is not None
        return read_frame(self.proc.stdout)

    def _why(self, answer: tuple[bytes, bytes] | None, what: str) -> str:
        if answer is not None and answer[0] in (b"E", b"F"):
            return answer[1].decode(errors="replace")
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.err.seek(0)
        tail = self.err.read()[-4000:].decode(errors="replace").strip()
        last = tail.splitlines()[-1] if tail else f"exit code {code}"
        return f"The scoring process {what} ({last})."

    def send(self, start: int, table: pa.Table) -> None:
        """Send a chunk (this blocks while the process is busy with the one before: the pipe holds
        the next chunk ready, so the process never waits for this one)."""
        path = self.spool / f"{start}.arrow"  # in memory (/dev/shm): the process maps it, nothing is copied
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        assert self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, b"D", START.pack(start) + str(path).encode())
        except (BrokenPipeError, OSError, ValueError):  # ValueError: stopped meanwhile (stdin closed)
            raise DeploymentError(self._why(None, f"ended while scoring {_rows(start, table.num_rows)}")) from None

    def receive(self, start: int, rows: int) -> pa.Table:
        """The answer to the oldest chunk sent; InvalidInputError for input the signature
        refuses, DeploymentError when the model fails or the process ends."""
        answer = self._read()
        if answer is not None and answer[0] == b"E":
            raise InvalidInputError(answer[1].decode(errors="replace"))
        if answer is None or answer[0] != b"D":
            raise DeploymentError(self._why(answer, f"ended while scoring {_rows(start, rows)}"))
        return pa.ipc.open_stream(answer[1]).read_all()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()
