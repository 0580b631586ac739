"""Request-log lines to table rows, one block of whole lines at a time (what ``export`` streams).

A block is parsed by Arrow's JSON reader (C++, on every core: about 1.5 times faster than
``json.loads`` per line, and no Python object per value) when every feature of the signature
is a number. A block it refuses (a torn line, a ``NaN``, a string where a number was expected,
a line longer than its block) and the records it cannot flatten (those naming their own
columns, rows of another length) are read line by line in Python, to the same rows.

A record becomes rows when it was answered (status 200), was not a shadow's (whose answer
nobody received), holds inputs, and was answered at ``since`` or later. Each logged row
becomes one row of the table: ``request_id``, ``row`` (its place in the request),
``time`` (seconds), ``variant``, ``model_version``, then the signature's features.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from nbdeploy.monitoring.replay import answer_time

__all__ = ["Counts", "Features", "arrow_records", "block_rows", "empty_rows", "finish"]

NUMERIC = ("double", "float", "long", "integer")
_FINAL = {"double": pa.float64(), "float": pa.float32(), "long": pa.int64(), "integer": pa.int32(),
          "boolean": pa.bool_()}  # fmt: skip
_INT_RANGE = {"long": 2.0**63, "integer": 2.0**31}
_RECORD = pa.schema([
    ("id", pa.string()), ("ts", pa.float64()), ("answered", pa.float64()), ("latency_ms", pa.float64()),
    ("status", pa.int64()), ("version", pa.int64()), ("variant", pa.string()), ("shadow", pa.bool_()),
    ("rows", pa.int64()), ("columns", pa.list_(pa.string())), ("inputs", pa.list_(pa.list_(pa.float64()))),
])  # fmt: skip
_ARROW_BLOCK = 4 << 20  # Arrow parses blocks of this size in parallel; a longer line sends its block to Python


@dataclass(frozen=True)
class Features:
    """The signature's input columns: names and MLflow types."""

    names: list[str]
    types: list[str]

    @property
    def numeric(self) -> bool:
        return all(t in NUMERIC for t in self.types)

    def raw_type(self, kind: str) -> pa.DataType:
        """The column's type while blocks are read (numbers as logged, in float64)."""
        return pa.float64() if kind in NUMERIC else pa.bool_() if kind == "boolean" else pa.string()


@dataclass
class Counts:
    """What an export read: requests and rows exported, rows the log did not keep, lines skipped."""

    requests: int = 0
    rows: int = 0
    not_logged: int = 0  # rows of requests larger than the log keeps per request
    skipped: int = 0  # lines that are not JSON records, and rows that fit no column


def _raw_schema(features: Features) -> pa.Schema:
    head = [("request_id", pa.string()), ("row", pa.int32()), ("time", pa.float64()), ("variant", pa.string()),
            ("model_version", pa.int64())]  # fmt: skip
    return pa.schema(head + [(n, features.raw_type(t)) for n, t in zip(features.names, features.types, strict=True)])


def empty_rows(features: Features) -> pa.Table:
    return _raw_schema(features).empty_table()


def block_rows(block: bytes, features: Features, since: float | None, counts: Counts) -> pa.Table:
    """The rows of the records in ``block`` (whole lines), counted in ``counts``."""
    table = arrow_records(block) if features.numeric else None
    if table is not None:
        return _arrow_rows(table, features, since, counts)
    docs = []
    for line in block.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            docs.append(doc)
        elif line.strip():
            counts.skipped += 1
    return _python_rows(docs, features, since, counts)


def arrow_records(block: bytes) -> pa.Table | None:
    """The records of ``block`` parsed by Arrow (numbers as float64), or ``None`` where it refuses a line."""
    try:
        return pj.read_json(
            io.BytesIO(block),
            read_options=pj.ReadOptions(block_size=_ARROW_BLOCK),
            parse_options=pj.ParseOptions(explicit_schema=_RECORD, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _arrow_rows(table: pa.Table, features: Features, since: float | None, counts: Counts) -> pa.Table:
    latency = pc.divide(pc.fill_null(table["latency_ms"], 0.0), 1000.0)
    when = pc.coalesce(table["answered"], pc.add(table["ts"], latency))
    keep = pc.and_kleene(pc.equal(table["status"], 200), pc.invert(pc.fill_null(table["shadow"], False)))
    keep = pc.and_kleene(keep, pc.and_(pc.is_valid(table["inputs"]), pc.is_valid(when)))
    if since is not None:
        keep = pc.and_kleene(keep, pc.greater_equal(when, since))
    table = table.append_column("when", when).filter(pc.fill_null(keep, False)).combine_chunks()
    outer = table["inputs"].chunk(0) if table.num_rows else pa.array([], _RECORD.field("inputs").type)
    inner = pc.list_flatten(outer)
    misfit = pc.fill_null(pc.not_equal(pc.list_value_length(inner), len(features.names)), True).to_numpy(
        zero_copy_only=False
    )
    odd = np.zeros(table.num_rows, dtype=bool)
    odd[pc.list_parent_indices(outer).to_numpy()[misfit]] = True  # a row of another length: read in Python
    odd |= table["columns"].is_valid().to_numpy(zero_copy_only=False)  # its own columns: matched by name
    plain = table.filter(pa.array(~odd))
    rows = _flatten(plain, features, counts)
    if not odd.any():
        return rows
    python = _python_rows(table.filter(pa.array(odd)).drop_columns(["when"]).to_pylist(), features, since, counts)
    return pa.concat_tables([rows, python])


def _flatten(plain: pa.Table, features: Features, counts: Counts) -> pa.Table:
    """One row per logged row of records whose rows all have the signature's length."""
    outer = plain["inputs"].combine_chunks() if plain.num_rows else pa.array([], _RECORD.field("inputs").type)
    per_request = pc.list_value_length(outer).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(pc.list_flatten(outer)).to_numpy(zero_copy_only=False)
    matrix = values.reshape(-1, len(features.names))
    parent = np.repeat(np.arange(plain.num_rows), per_request)
    starts = np.cumsum(per_request) - per_request
    logged = pc.fill_null(plain["rows"], 0).to_numpy().astype(np.int64)  # the request's rows, logged or not
    counts.not_logged += int(np.maximum(logged - per_request, 0).sum())
    counts.requests += int(np.count_nonzero(per_request))
    counts.rows += matrix.shape[0]
    take = pa.array(parent, pa.int64())
    head = {
        "request_id": plain["id"].take(take),
        "row": pa.array(np.arange(matrix.shape[0]) - np.repeat(starts, per_request), pa.int32()),
        "time": plain["when"].take(take),
        "variant": pc.fill_null(plain["variant"], "champion").take(take),
        "model_version": plain["version"].take(take),
    }
    columns = [pa.array(matrix[:, j], pa.float64()) for j in range(matrix.shape[1])]
    return pa.Table.from_arrays([*head.values(), *columns], schema=_raw_schema(features))


def _python_rows(docs: list[dict[str, Any]], features: Features, since: float | None, counts: Counts) -> pa.Table:
    """The same rows as :func:`_arrow_rows`, from records parsed in Python."""
    names = features.names
    head: dict[str, list[Any]] = {"request_id": [], "row": [], "time": [], "variant": [], "model_version": []}
    values: list[list[Any]] = [[] for _ in names]
    for doc in docs:
        when, inputs = answer_time(doc), doc.get("inputs")
        if doc.get("status") != 200 or doc.get("shadow") is True or not isinstance(inputs, list) or when is None:
            continue
        if since is not None and when < since:
            continue
        own = doc.get("columns")
        where = {str(c): i for i, c in enumerate(own)} if isinstance(own, list) else None
        version = doc.get("version")
        same = {
            "request_id": str(doc.get("id", "")),
            "time": when,
            "variant": str(doc.get("variant") or "champion"),
            "model_version": version if isinstance(version, int) and not isinstance(version, bool) else None,
        }
        kept = 0
        for i, row in enumerate(inputs):
            picked = _pick(row, names, where)
            if picked is None:
                counts.skipped += 1
                continue
            for column, value in zip(values, picked, strict=True):
                column.append(value)
            for key, value in same.items():
                head[key].append(value)
            head["row"].append(i)
            kept += 1
        rows = doc.get("rows")
        counts.not_logged += max(rows - len(inputs), 0) if isinstance(rows, int) else 0
        counts.requests += kept > 0
        counts.rows += kept
    schema = _raw_schema(features)
    arrays = [pa.array(v, schema.field(k).type) for k, v in head.items()]
    arrays += [pa.array([_coerce(v, kind) for v in column], features.raw_type(kind))
               for column, kind in zip(values, features.types, strict=True)]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=schema)


def _pick(row: Any, names: list[str], where: dict[str, int] | None) -> list[Any] | None:
    """A logged row's values in signature order (``None``: a row that fits no column)."""
    if not isinstance(row, list):
        return None
    if where is None:
        return row if len(row) == len(names) else None
    if not any(n in where for n in names):
        return None
    return [row[where[n]] if n in where and where[n] < len(row) else None for n in names]


def _coerce(value: Any, kind: str) -> Any:
    """A logged value as its column's raw type (``None`` when it is not one: a corrupted log)."""
    if value is None:
        return None
    if kind in NUMERIC:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else json.dumps(value)


def finish(rows: pa.Table, features: Features) -> pa.Table:
    """Rows as written: ``time`` a UTC timestamp, each feature in its signature's type (an
    integer column's value that is not a whole number in range becomes null)."""
    micros = pc.cast(pc.round(pc.multiply(rows["time"], 1e6)), pa.int64())
    rows = rows.set_column(2, pa.field("time", pa.timestamp("us", tz="UTC")), micros.cast(pa.timestamp("us", tz="UTC")))
    for name, kind in zip(features.names, features.types, strict=True):
        if kind not in _FINAL or kind in ("double", "boolean"):
            continue
        column = rows[name]
        if kind in _INT_RANGE:
            whole = pc.and_(pc.equal(pc.floor(column), column), pc.less(pc.abs(column), _INT_RANGE[kind]))
            column = pc.if_else(whole, column, pa.scalar(None, pa.float64()))
        where = rows.schema.get_field_index(name)
        rows = rows.set_column(where, pa.field(name, _FINAL[kind]), pc.cast(column, _FINAL[kind], safe=False))
    return rows
