"""Request-log lines to table rows, one block of whole lines at a time (what ``export`` streams).

A block is parsed by Arrow's JSON reader (C++, on every core: about 1.5 times faster than
``json.loads`` per line, and no Python object per value) when every feature of the signature
is a number. A block it refuses (a torn line, text where a number was expected, a line longer
than its block) and the records it cannot flatten (those naming their own columns, rows of
another length, rows of a version whose inputs differed) are read line by line in Python
(:mod:`.export_python`), to the same rows.

A record becomes rows when it was answered (status 200), was not a shadow's (whose answer
nobody received), holds inputs, and was answered at ``since`` or later (at a finite time
before :data:`~.export_schema.MAX_TIME`). Each logged row becomes one row of the table.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from nbdeploy.deployments.export_python import parse_lines, python_rows
from nbdeploy.deployments.export_schema import (
    MAX_TIME,
    RECORD,
    REQUEST,
    ROW,
    TIME,
    VARIANT,
    VERSION,
    Counts,
    Features,
    raw_schema,
)

__all__ = ["arrow_records", "block_rows"]

_RECORD = pa.schema([
    ("id", pa.string()), ("ts", pa.float64()), ("answered", pa.float64()), ("latency_ms", pa.float64()),
    ("status", pa.int64()), ("version", pa.int64()), ("variant", pa.string()), ("shadow", pa.bool_()),
    ("rows", pa.int64()), ("columns", pa.list_(pa.string())), ("inputs", pa.list_(pa.list_(pa.float64()))),
])  # fmt: skip
_INPUTS = _RECORD.field("inputs").type
_ARROW_BLOCK = 4 << 20  # Arrow parses blocks of this size in parallel; a longer line sends its block to Python


def _object_lines(block: bytes) -> int | None:
    """How many lines ``block`` has when every one starts an object (``None`` otherwise: a blank
    line, ``null``, any other value), as every line the server writes does. Arrow reads the
    others unlike Python's reader (a line of two objects as two records, ``null`` as an empty
    one; pyarrow 25 crashes on a block that is only ``null``), so they go to Python."""
    data = np.frombuffer(block, dtype=np.uint8)
    if not data.size or data[0] != ord("{"):
        return None
    starts = np.flatnonzero(data[:-1] == ord("\n")) + 1
    return None if (data[starts] != ord("{")).any() else starts.size + 1


def arrow_records(block: bytes) -> pa.Table | None:
    """The records of ``block`` parsed by Arrow (numbers as float64), one per line, or ``None``
    where it refuses a line or would read one otherwise than Python does."""
    lines = _object_lines(block)
    if lines is None:
        return None
    try:
        table = pj.read_json(
            io.BytesIO(block),
            read_options=pj.ReadOptions(block_size=_ARROW_BLOCK),
            parse_options=pj.ParseOptions(explicit_schema=_RECORD, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == lines else None  # a line of two objects (Python skips it)


def block_rows(block: bytes, features: Features, since: float | None, counts: Counts) -> pa.Table:
    """The rows of the records in ``block`` (whole lines), counted in ``counts``."""
    table = arrow_records(block) if features.numeric else None
    if table is not None:
        return _arrow_rows(table, features, since, counts)
    return python_rows(parse_lines(block, counts), features, since, counts)


def _answered(table: pa.Table, since: float | None) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """When each record was answered, and whether it is a served answer to export."""
    latency = pc.divide(pc.fill_null(table["latency_ms"], 0.0), 1000.0)
    when = pc.coalesce(table["answered"], pc.add(table["ts"], latency))
    keep = pc.and_kleene(pc.equal(table["status"], 200), pc.invert(pc.fill_null(table["shadow"], False)))
    sane = pc.and_(pc.is_finite(when), pc.less(pc.abs(when), MAX_TIME))
    keep = pc.and_kleene(keep, pc.and_kleene(pc.is_valid(table["inputs"]), sane))
    if since is not None:
        keep = pc.and_kleene(keep, pc.greater_equal(when, since))
    return when, pc.fill_null(keep, False)


def _arrow_rows(table: pa.Table, features: Features, since: float | None, counts: Counts) -> pa.Table:
    when, keep = _answered(table, since)
    table = table.append_column("when", when).filter(keep).combine_chunks()
    outer = table["inputs"].chunk(0) if table.num_rows else pa.array([], _INPUTS)
    inner = pc.list_flatten(outer)
    misfit = pc.fill_null(pc.not_equal(pc.list_value_length(inner), len(features.names)), True)
    odd = np.zeros(table.num_rows, dtype=bool)
    odd[pc.list_parent_indices(outer).to_numpy()[misfit.to_numpy(zero_copy_only=False)]] = True  # another length
    odd |= table["columns"].is_valid().to_numpy(zero_copy_only=False)  # its own columns: matched by name
    if features.by_version:  # another version's inputs: matched by name
        other = pa.array(list(features.by_version), pa.int64())
        odd |= pc.fill_null(pc.is_in(table["version"], value_set=other), False).to_numpy(zero_copy_only=False)
    rows = _flatten(table.filter(pa.array(~odd)), features, counts)
    if not odd.any():
        return rows
    docs = table.filter(pa.array(odd)).drop_columns(["when"]).to_pylist()
    return pa.concat_tables([rows, python_rows(docs, features, since, counts)])


def _flatten(plain: pa.Table, features: Features, counts: Counts) -> pa.Table:
    """One row per logged row of records whose rows all have the signature's length."""
    outer = plain["inputs"].combine_chunks() if plain.num_rows else pa.array([], _INPUTS)
    per_request = pc.list_value_length(outer).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(pc.list_flatten(outer)).to_numpy(zero_copy_only=False)  # a JSON null: NaN
    matrix = values.reshape(-1, len(features.names))
    parent = np.repeat(np.arange(plain.num_rows), per_request)
    starts = np.cumsum(per_request) - per_request
    logged = pc.fill_null(plain["rows"], 0).to_numpy().astype(np.int64)  # the request's rows, logged or not
    missed = np.maximum(logged - per_request, 0)
    counts.not_logged += int(missed.sum())
    if counts.at is not None:
        some = missed > 0
        when = plain["when"].to_numpy()[some].tolist()
        counts.at["not_logged"] += list(zip(when, missed[some].tolist(), strict=True))
    counts.requests += int(np.count_nonzero(per_request))
    counts.rows += matrix.shape[0]
    take = pa.array(parent, pa.int64())
    variant = pc.if_else(pc.equal(plain["variant"], ""), pa.scalar(None, pa.string()), plain["variant"])
    head = {
        REQUEST: plain["id"].take(take),
        ROW: pa.array(np.arange(matrix.shape[0]) - np.repeat(starts, per_request), pa.int32()),
        TIME: plain["when"].take(take),
        VARIANT: pc.fill_null(variant, "champion").take(take),
        VERSION: plain["version"].take(take),
        RECORD: pa.array(parent + counts.records, pa.int64()),
    }
    counts.records += plain.num_rows
    columns = [pa.array(matrix[:, j], pa.float64()) for j in range(matrix.shape[1])]
    return pa.Table.from_arrays([*head.values(), *columns], schema=raw_schema(features))
