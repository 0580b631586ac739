"""``Deployment.export``: the inputs a deployment served, from its request logs to Parquet.

>>> d.export(since="1d", labelled=True, out="recent.parquet")     # doctest: +SKIP
Exported 1,204 rows of 1,204 requests (1,204 labelled), answered since 2026-11-29 10:00 UTC, to recent.parquet.

Each log file's rows are read from its columnar copy (:mod:`.log_columns`, kept by the
server's converter) as far as the copy goes, and the rest is parsed a block at a time
(:mod:`.export_rows`); the pieces stream to a Parquet writer, so memory holds one piece
whatever the logs' length, and the labels of ``--labelled`` (one entry per labelled request).
The log files are opened before the first is read: a rotation meanwhile moves names, not the
files being read, so no record is read twice or missed. The file appears under its name only
once complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import Docs, InvalidInputError, require
from nbdeploy.monitoring.replay import logged_feedback
from nbdeploy.reprs import fit
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
    unreadable: list[str] = field(default_factory=list)  # log files that could not be read, and why
    renamed: dict[str, str] = field(default_factory=dict)  # columns renamed because a feature has their name

    def __repr__(self) -> str:
        since = f", answered since {_utc(self.since)}" if self.since is not None else ""
        labelled = f" ({self.labelled:,} labelled)" if self.labelled is not None else ""
        text = f"Exported {self.rows:,} rows of {self.requests:,} requests{labelled}{since}, to {self.path}."
        if self.not_logged:
            text += (f" {self.not_logged:,} rows of larger requests are not in it: the log keeps the first "
                     f"{self.log_rows} rows of each request.")  # fmt: skip
        if self.skipped:
            text += f" {self.skipped:,} unreadable log lines or rows were skipped."
        if self.unreadable:
            text += f" Logs that could not be read: {'; '.join(self.unreadable[:3])}."
        for column, name in self.renamed.items():
            text += f" A feature is named {column!r}: that column is {name!r}."
        return fit(text)

    def _repr_html_(self) -> str:
        from nbdeploy.reprs import card, esc

        return card(f"Export of {esc(self.path.name)}", f"<p>{esc(repr(self))}</p>")

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
    return dict(logged_feedback(folder / "feedback.jsonl"))


def export_logs(folder: Path, features: Any, out: Path, since: float | None = None, labelled: bool = False,
                log_rows: int = 100, chunk: int = CHUNK_BYTES, columns: bool = True) -> Exported:  # fmt: skip
    """Write the rows of the request logs in ``folder`` to the Parquet file ``out``; the rows
    the logs' columnar copy holds are read from it (``columns``), the others parsed."""
    from nbdeploy.deployments.export_files import open_logs, write_parquet
    from nbdeploy.deployments.export_labels import label_type, with_labels
    from nbdeploy.deployments.export_schema import LABEL, VARIANT, VERSION, Counts, empty_rows, finish, public_names

    labels = _labels(folder) if labelled else None
    kind = label_type(labels) if labels is not None else None
    counts, labelled_rows, long_lines = Counts(), 0, [0]
    schema = finish(with_labels(empty_rows(features), labels, kind), features).schema
    names = public_names(features)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    logs = open_logs(folder, since)

    def finished() -> Iterator[Any]:
        nonlocal labelled_rows
        for rows in _rows(folder, logs, features, since, counts, chunk, long_lines, columns):
            if labels is not None:
                rows = with_labels(rows, labels, kind, counts)
                labelled_rows += rows.num_rows
            if rows.num_rows:
                yield finish(rows, features)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(partial, schema, finished(), [names[VARIANT], names[VERSION]])
        partial.replace(out)
    except OSError as exc:  # the output's folder or file, or a log that failed while read
        where = f" {exc.filename}" if exc.filename else ""
        raise InvalidInputError(f"Cannot write the export{where}: {exc.strerror or exc}.") from None
    finally:
        logs.close()
        with contextlib.suppress(OSError):
            partial.unlink()
    renamed = {k[1:]: v for k, v in names.items() if v != k[1:] and (k != LABEL or labelled)}
    return Exported(out, counts.requests, counts.rows, labelled_rows if labelled else None, counts.not_logged,
                    counts.skipped + long_lines[0], since, log_rows, logs.unreadable, renamed)  # fmt: skip


def _rows(folder: Path, logs: Any, features: Any, since: float | None, counts: Any, chunk: int,
          long_lines: list[int], columns: bool) -> Iterator[Any]:  # fmt: skip
    """Each log file's rows: first what its columnar copy holds, then its bytes past the copy, parsed."""
    import pyarrow as pa

    from nbdeploy.deployments.export_files import blocks
    from nbdeploy.deployments.export_rows import block_rows
    from nbdeploy.deployments.log_columns import cached_rows, segments

    found = segments(folder) if columns else {}
    for fh, size in logs.files:
        pos = 0
        for cached in cached_rows(found, fh.fileno(), size, features):
            try:
                rows = cached.rows(since, counts)
            except (OSError, pa.ArrowException):  # merged away since it was checked, or damaged: parse from here
                break
            yield rows
            pos = cached.segment.end
        fh.seek(pos)
        for block in blocks(fh, size - pos, chunk, long_lines):
            yield block_rows(block, features, since, counts)


def _features(spec: Any) -> Any:
    """The served model's inputs, and those of the other versions it served that differ."""
    from nbdeploy.deployments.export_schema import Features
    from nbdeploy.model_entry import read_signature

    def names(entry: Any) -> list[dict[str, Any]] | None:
        try:
            inputs, _ = read_signature(entry.model_path)
        except (OSError, ValueError):
            return None
        return inputs if inputs and all("name" in c for c in inputs) else None

    current = names(spec.current)
    if current is None:
        raise InvalidInputError(f"{spec.current.ref} has no signature with column names here (its files may be "
                                "gone): they name the exported columns; serve a version registered with "
                                "nbdeploy.register.")  # fmt: skip
    if spec.log_inputs == "none":
        raise InvalidInputError(f"Deployment {spec.name!r} logs no inputs (--log-inputs none): there are no rows "
                                "to export.", docs=Docs.PRIVATE_LOGS)  # fmt: skip
    # a hashed column is exported as its keyed hashes, as text (nbdeploy.privacy)
    hashed = {str(c["name"]) for c in current if spec.log_inputs == "hashed" or c["name"] in spec.redact}
    kinds = ["string" if c["name"] in hashed else str(c.get("type", "string")) for c in current]
    features = Features([str(c["name"]) for c in current], kinds)
    entries = [*spec.history] + ([spec.experiment.challenger] if spec.experiment is not None else [])
    for entry in entries:  # the latest entry of a version wins
        inputs = names(entry) if entry.version is not None else None
        if inputs is not None and [str(c["name"]) for c in inputs] != features.names:
            features.by_version[entry.version] = [str(c["name"]) for c in inputs]
        elif inputs is not None:
            features.by_version.pop(entry.version, None)
    return features


class Exporting(HandleParts):
    """The export of a :class:`~nbdeploy.deployments.Deployment`."""

    def export(self, out: str | Path | None = None, since: str | float | dt.datetime | None = None,
               labelled: bool = False) -> Exported:  # fmt: skip
        """Write the inputs this deployment answered (from every request log, rotated files
        included) to a Parquet file: one row per logged row, with ``request_id``, ``row``,
        ``time``, ``variant`` and ``model_version`` before the model's features, and ``label``
        (only the rows with one) when ``labelled``. ``since``: ``"1d"``, seconds, or a datetime.
        ``out``: a file, or a folder for ``NAME-requests-<time>.parquet`` (default: here)."""
        from nbdeploy.deployments.export_files import out_path

        require("pyarrow", "batch", "Exporting requests to Parquet")
        start = since_time(since)
        spec = self.spec
        return export_logs(self.path, _features(spec), out_path(out, self.name, self.path), start, labelled,
                           spec.log_rows)  # fmt: skip

    def export_file(self, out: Path, since: float | None, labelled: bool = True) -> Exported:
        """:meth:`export` to exactly ``out``, wherever it is (answered since the time ``since``):
        a retraining job writes the traffic it trains on in its own folder, inside this one's."""
        spec = self.spec
        return export_logs(self.path, _features(spec), out, since, labelled, spec.log_rows)
