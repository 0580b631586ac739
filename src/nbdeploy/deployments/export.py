"""``Deployment.export``: the inputs a deployment served, from its request logs to Parquet.

>>> d.export(since="1d", labelled=True, out="recent.parquet")     # doctest: +SKIP
Exported 1,204 rows of 1,204 requests (1,204 labelled), answered since 2026-11-29 10:00 UTC, to recent.parquet.

The logs are read a block at a time (:mod:`.export_rows`) and each block's rows are written as
one Parquet row group, so memory holds one block whatever the logs' length, and the labels of
``--labelled`` (one entry per labelled request). The log files are opened before the first is
read: a rotation meanwhile moves names, not the files being read, so no record is read twice or
missed. The file appears under its name only once complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import InvalidInputError
from nbdeploy.monitoring.replay import log_files, logged_feedback
from nbdeploy.spec import parse_duration

__all__ = ["Exported", "Exporting", "export_logs"]

CHUNK_BYTES = 32 << 20  # the JSON read per block: memory stays a small multiple of it


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote: the file, and how many requests and rows went into it."""

    path: Path
    requests: int
    rows: int
    labelled: int | None  # rows with a label (None: not asked for)
    not_logged: int  # rows of larger requests that the log did not keep
    skipped: int  # unreadable lines and rows
    since: float | None
    log_rows: int

    def __repr__(self) -> str:
        since = f", answered since {_utc(self.since)}" if self.since is not None else ""
        labelled = f" ({self.labelled:,} labelled)" if self.labelled is not None else ""
        text = f"Exported {self.rows:,} rows of {self.requests:,} requests{labelled}{since}, to {self.path}."
        if self.not_logged:
            text += (f" {self.not_logged:,} rows of larger requests are not in it: the log keeps the first "
                     f"{self.log_rows} rows of each request.")  # fmt: skip
        if self.skipped:
            text += f" {self.skipped:,} unreadable log lines or rows were skipped."
        return text

    def frame(self) -> Any:
        """The exported rows as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.path)


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def since_time(since: str | float | dt.datetime | None, now: float | None = None) -> float | None:
    """The earliest answer time to export: ``"1d"`` ago, a number of seconds ago, or a datetime."""
    if since is None:
        return None
    now = time.time() if now is None else now
    if isinstance(since, dt.datetime):
        return since.timestamp()
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        if not 0 < since < 1e11:
            raise InvalidInputError(f"Invalid since {since!r}: give a positive number of seconds, or 1d.")
        return now - float(since)
    try:
        return now - parse_duration(str(since), "since")
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _labels(folder: Path) -> dict[str, list[Any]]:
    """Every request's labels (the last sent for it wins)."""
    labels: dict[str, list[Any]] = {}
    for rid, values in logged_feedback(folder / "feedback.jsonl"):
        labels[rid] = values
    return labels


def _open_logs(folder: Path, since: float | None) -> list[tuple[IO[bytes], int]]:
    """Every request log of the deployment (a local server's, each Ray replica's), rotated
    files included, oldest first, opened now with the size they have now."""
    bases = [folder / "requests.jsonl", *sorted(folder.glob("requests-*.jsonl"))]
    opened: list[tuple[IO[bytes], int]] = []
    for base in bases:
        for path in log_files(base):
            try:
                if since is not None and path.stat().st_mtime < since:  # last written before: nothing to take
                    continue
                fh = path.open("rb")
            except OSError:  # rotated away or never written
                continue
            opened.append((fh, os.fstat(fh.fileno()).st_size))
    return opened


def _blocks(fh: IO[bytes], size: int, chunk: int) -> Any:
    """Whole lines of the first ``size`` bytes of ``fh``, ``chunk`` bytes or so at a time."""
    left, carry = size, b""
    while left > 0:
        data = carry + fh.read(min(chunk, left))
        left -= len(data) - len(carry)
        if left <= 0 or len(data) == len(carry):  # the end (or the file shrank): whatever is left
            left = 0
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield data[:cut]


def export_logs(folder: Path, features: Any, out: Path, since: float | None = None, labelled: bool = False,
                log_rows: int = 100, chunk: int = CHUNK_BYTES) -> Exported:  # fmt: skip
    """Write the rows of the request logs in ``folder`` to the Parquet file ``out``."""
    import pyarrow.parquet as pq

    from nbdeploy.deployments.export_labels import label_type, with_labels
    from nbdeploy.deployments.export_rows import Counts, block_rows, empty_rows, finish

    labels = _labels(folder) if labelled else None
    kind = label_type(labels) if labels is not None else None
    counts, labelled_rows = Counts(), 0
    schema = finish(with_labels(empty_rows(features), labels, kind), features).schema
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    logs = _open_logs(folder, since)
    try:
        # dictionaries only where values repeat: on measured floats they cost 4x the write and save nothing
        with pq.ParquetWriter(partial, schema, use_dictionary=["variant", "model_version"]) as writer:
            for fh, size in logs:
                for block in _blocks(fh, size, chunk):
                    rows = block_rows(block, features, since, counts)
                    if labels is not None:
                        rows = with_labels(rows, labels, kind, counts)
                        labelled_rows += rows.num_rows
                    if rows.num_rows:
                        writer.write_table(finish(rows, features))
        partial.replace(out)
    finally:
        for fh, _ in logs:
            fh.close()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Exported(out, counts.requests, counts.rows, labelled_rows if labelled else None, counts.not_logged,
                    counts.skipped, since, log_rows)  # fmt: skip


class Exporting(HandleParts):
    """The export of a :class:`~nbdeploy.deployments.Deployment`."""

    def export(self, out: str | Path | None = None, since: str | float | dt.datetime | None = None,
               labelled: bool = False) -> Exported:  # fmt: skip
        """Write the inputs this deployment answered (from every request log, rotated files
        included) to a Parquet file: one row per logged row, with ``request_id``, ``row``,
        ``time``, ``variant`` and ``model_version`` before the model's features, and ``label``
        (only the rows with one) when ``labelled``. ``since``: ``"1d"``, seconds, or a datetime.
        ``out``: a file, or a folder for ``NAME-requests-<time>.parquet`` (default: here)."""
        from nbdeploy.deployments.export_rows import Features
        from nbdeploy.model_entry import read_signature

        start = since_time(since)
        spec = self.spec
        try:
            inputs, _ = read_signature(spec.current.model_path)
        except OSError:
            raise InvalidInputError(f"The model files of {self.name!r} are gone ({spec.current.model_path}): "
                                    "serve it again to export.") from None  # fmt: skip
        if not inputs or any("name" not in c for c in inputs):
            raise InvalidInputError(f"{spec.current.ref} has no signature with column names, which name the "
                                    "exported columns: register it with nbdeploy.register.")  # fmt: skip
        features = Features([str(c["name"]) for c in inputs], [str(c.get("type", "string")) for c in inputs])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(out) if out is not None else Path.cwd()
        if path.is_dir():
            path = path / f"{self.name}-requests-{stamp}.parquet"
        return export_logs(self.path, features, path, start, labelled, spec.log_rows)
