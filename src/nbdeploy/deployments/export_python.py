"""Request-log records parsed in Python to rows: for the blocks Arrow refuses and the records
it cannot flatten (their own columns, rows of another length, another version's inputs).

It gives the same rows as the Arrow path (tests/test_export.py compares them): a number
column's missing or unreadable value is NaN, a record without an id has a null one, an empty
variant is the champion's.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa

from nbdeploy.deployments.export_schema import (
    MAX_TIME,
    NUMERIC,
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
from nbdeploy.monitoring.replay import answer_time

__all__ = ["parse_lines", "python_rows"]

_INT64 = 2**63


def parse_lines(block: bytes, counts: Counts) -> list[dict[str, Any]]:
    """The JSON objects of ``block``'s lines; every other non-empty line is counted as skipped."""
    docs = []
    for line in block.splitlines():
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):  # torn, not JSON, or nested past the interpreter's depth
            doc = None
        if isinstance(doc, dict):
            docs.append(doc)
        elif line.strip():
            counts.skip()
    return docs


def _answered(doc: dict[str, Any], since: float | None) -> float | None:
    """When the record was answered, if it is a served answer to export (``None`` otherwise)."""
    when, inputs = answer_time(doc), doc.get("inputs")
    if doc.get("status") != 200 or doc.get("shadow") is True or not isinstance(inputs, list) or when is None:
        return None
    if not (math.isfinite(when) and abs(when) < MAX_TIME) or (since is not None and when < since):
        return None
    return when


def _head(doc: dict[str, Any], when: float, record: int) -> dict[str, Any]:
    rid, version, variant = doc.get("id"), doc.get("version"), doc.get("variant")
    good_version = isinstance(version, int) and not isinstance(version, bool) and -_INT64 <= version < _INT64
    return {REQUEST: None if rid is None else str(rid), TIME: when,
            VARIANT: "champion" if variant is None or variant == "" else str(variant),
            VERSION: version if good_version else None, RECORD: record}  # fmt: skip


def _where(doc: dict[str, Any], features: Features) -> dict[str, int] | None:
    """Where each feature is in the record's rows: by its own columns, by the inputs of the
    version that answered it, or (``None``) in the signature's order."""
    own = doc.get("columns")
    if isinstance(own, list):
        return {str(c): i for i, c in enumerate(own)}
    version = doc.get("version")
    names = features.by_version.get(version) if isinstance(version, int) else None
    return {n: i for i, n in enumerate(names)} if names is not None else None


def python_rows(docs: list[dict[str, Any]], features: Features, since: float | None, counts: Counts) -> pa.Table:
    """One row per logged row of the records to export among ``docs``."""
    head: dict[str, list[Any]] = {k: [] for k in (REQUEST, ROW, TIME, VARIANT, VERSION, RECORD)}
    values: list[list[Any]] = [[] for _ in features.names]
    for doc in docs:
        when = _answered(doc, since)
        if when is None:
            continue
        same, where, kept = _head(doc, when, counts.records), _where(doc, features), 0
        counts.records += 1
        inputs = doc["inputs"]
        for i, row in enumerate(inputs):
            picked = _pick(row, features.names, where)
            if picked is None:
                counts.skip(when)
                continue
            for column, value in zip(values, picked, strict=True):
                column.append(value)
            for key, value in same.items():
                head[key].append(value)
            head[ROW].append(i)
            kept += 1
        rows = doc.get("rows")
        counts.miss(when, max(rows - len(inputs), 0) if isinstance(rows, int) and rows < _INT64 else 0)
        counts.requests += kept > 0
        counts.rows += kept
    schema = raw_schema(features)
    arrays = [_array(v, schema.field(k).type) for k, v in head.items()]
    arrays += [_array([_coerce(v, kind) for v in column], features.raw_type(kind))
               for column, kind in zip(values, features.types, strict=True)]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=schema)


def _array(values: list[Any], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, kind)
    except UnicodeEncodeError:  # a lone surrogate written as "\ud800": JSON reads it, UTF-8 cannot hold it
        return pa.array([v.encode("utf-8", "replace").decode() if isinstance(v, str) else v for v in values], kind)


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
    """A logged value as its column's raw type: a number column's missing or unreadable value is
    NaN (as Arrow reads a JSON null), another column's is null."""
    if kind in NUMERIC:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer of hundreds of digits: infinite, as Arrow reads it
                return math.inf if value > 0 else -math.inf
        return math.nan
    if value is None:
        return None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else json.dumps(value)
