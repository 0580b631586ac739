"""What batch scoring reads and writes: chunks of the input (a Parquet or CSV file streamed, or
a DataFrame sliced), and the output file.

Chunks are Arrow tables of at most ``chunk_rows`` rows: a file is never read whole. The input's
columns are known before the first chunk (Parquet's schema, the CSV's header, the DataFrame's
columns), so a missing column or ``--key`` is one sentence before any process starts. The
``--key`` column keeps one type throughout (a CSV's is read as text: ``00042`` stays ``00042``).
The output appears under its name only once complete (:meth:`Output.commit`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from nbdeploy.errors import InvalidInputError

__all__ = ["SUFFIXES", "Input", "Output", "output_column"]

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_INDEX = "Unnamed: 0"  # the index pandas' to_csv() writes: not a feature


def output_column(name: str) -> bool:
    """Whether the output has a column of this name already (a ``--key`` may not take it)."""
    return name in ("row", "prediction") or name.startswith(("proba_", "prediction_"))


def _kind(path: Path, option: str) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(f"{option} {str(path)!r} is neither .csv nor .parquet.")
    return kind


class Input:
    """The rows to score, ``chunk_rows`` at a time, with their total when it is known."""

    def __init__(self, data: Any, chunk_rows: int, key: str | None = None) -> None:
        self.data, self.chunk_rows, self.key = data, chunk_rows, key
        self.path = Path(data) if isinstance(data, (str, Path)) else None
        self.total: int | None = None
        if self.path is not None:
            self.kind = _kind(self.path, "--data")
            if not self.path.is_file():
                raise InvalidInputError(f"--data {str(self.path)!r} is not a file.")
        else:
            self.kind = "frame"
            if not hasattr(data, "iloc") or not hasattr(data, "columns"):
                raise InvalidInputError(f"--data must be a DataFrame or a file, not {type(data).__name__}.")
            self.total = len(data)
        self.columns = self._arrow(self._columns)
        repeated = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if repeated:
            raise InvalidInputError(f"--data has more than one column named {repeated[0]!r}: rename them first.")
        if key is not None and key not in self.columns:
            raise InvalidInputError(f"--key {key!r} is not a column of --data.")
        if key is not None and output_column(key):
            raise InvalidInputError(f"--key {key!r} is also a column of the output: rename it in --data first.")

    def _where(self) -> str:
        return f"--data {str(self.path)!r}" if self.path is not None else "--data"

    def _arrow(self, read: Any) -> Any:
        """``read()``, with what a file or a frame raises as one sentence."""
        try:
            return read()
        except (pa.ArrowException, OSError, ValueError, OverflowError, TypeError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(f"{self._where()} could not be read: {why}".rstrip(".") + ".") from None

    def _columns(self) -> list[str]:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(self.path).metadata
            self.total = meta.num_rows
            return [str(n) for n in meta.schema.to_arrow_schema().names]
        if self.kind == "csv":
            import pandas as pd

            names = [str(c) for c in pd.read_csv(self.path, nrows=0, index_col=False).columns]
            return names[1:] if names[:1] == [_INDEX] else names
        return [str(c) for c in self.data.columns]

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
            frames = self._arrow(self._frames)
            while (part := self._arrow(lambda: next(frames, None))) is not None:
                yield self._arrow(lambda part=part: self._table(part))
            return
        import pyarrow.parquet as pq

        # a buffered stream, page by page: by default a whole row group (often the whole file) is read at once
        batches = self._arrow(lambda: pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20).iter_batches(
            batch_size=self.chunk_rows, use_threads=False))  # fmt: skip
        while (batch := self._arrow(lambda: next(batches, None))) is not None:
            yield pa.Table.from_batches([batch])

    def _frames(self) -> Iterator[Any]:
        if self.kind == "frame":
            return (self.data.iloc[i : i + self.chunk_rows] for i in range(0, len(self.data), self.chunk_rows))
        import pandas as pd

        # pandas, not Arrow's CSV reader: a column with a value that is not a number becomes text
        # in that chunk only, and the scoring process names the rows; Arrow fails the file unnamed.
        # index_col=False: a trailing comma on each row must not shift every column by one
        chunks = pd.read_csv(self.path, chunksize=self.chunk_rows, index_col=False,
                             dtype={self.key: str} if self.key is not None else None)  # fmt: skip
        return (c.drop(columns=[_INDEX]) if _INDEX in c.columns[:1] else c for c in chunks)

    def _table(self, part: Any) -> pa.Table:
        """A DataFrame chunk as Arrow; a column of mixed values (numbers and text) goes as text,
        for the scoring process to name the rows that are not numbers; the key as text unless
        it is a column of numbers (its type must not change from one chunk to the next)."""
        if self.key is not None and part[self.key].dtype == object:
            part = part.assign(**{self.key: part[self.key].map(_text)})
        try:
            return pa.Table.from_pandas(part, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            mixed = {c: part[c].map(_text) for c in part.columns if part[c].dtype == object}
            return pa.Table.from_pandas(part.assign(**mixed), preserve_index=False)


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:
        return None
    return repr(value) if isinstance(value, float) else str(value)


class Output:
    """The predictions file (Parquet or CSV by its suffix), written chunk by chunk under a
    temporary name (with this process's id: one left by a killed kernel is swept by the next
    run), renamed when complete."""

    def __init__(self, path: Path, data: Input) -> None:
        self.path, self.kind = path, _kind(path, "--out")
        if data.path is not None and path.resolve() == data.path.resolve():
            raise InvalidInputError(f"--out {str(path)!r} is the --data file: write the predictions elsewhere.")
        if path.is_dir():
            raise InvalidInputError(f"--out {str(path)!r} is a folder: give a file name ending in .parquet or .csv.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"--out {str(path)!r} cannot be written: {exc.strerror or exc}.") from None
        self.partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self._sweep()
        self.writer: Any = None
        self.schema: pa.Schema | None = None

    def _sweep(self) -> None:
        """Remove what runs killed before they could clean up left beside this output."""
        for left in self.path.parent.glob(f".{self.path.name}.*.partial"):
            pid = left.name[len(self.path.name) + 2 : -len(".partial")]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    left.unlink()

    def write(self, table: pa.Table, rows: str) -> None:
        try:
            if self.writer is None:
                self.schema = table.schema
                if self.kind == "parquet":
                    import pyarrow.parquet as pq

                    self.writer = pq.ParquetWriter(self.partial, table.schema)
                else:
                    import pyarrow.csv as csv

                    self.writer = csv.CSVWriter(str(self.partial), table.schema)
            self.writer.write_table(table.cast(self.schema))
        except (pa.ArrowException, ValueError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(f"The answers for {rows} cannot be written with those before them "
                                    f"({why}).") from None  # fmt: skip
        except OSError as exc:
            raise InvalidInputError(f"--out {str(self.path)!r} cannot be written: {exc.strerror or exc}.") from None

    def commit(self) -> None:
        try:
            self.writer.close()
            self.partial.replace(self.path)
        except OSError as exc:
            raise InvalidInputError(f"--out {str(self.path)!r} cannot be written: {exc.strerror or exc}.") from None

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()
