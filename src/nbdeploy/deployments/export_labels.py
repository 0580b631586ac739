"""The label column of ``export --labelled``: each logged row joined with the label sent
to ``/feedback`` for that row of that request (``labels[i]`` labels row ``i``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nbdeploy.deployments.export_schema import LABEL, RECORD, REQUEST, ROW

__all__ = ["label_type", "with_labels"]


def label_type(labels: dict[str, list[Any]]) -> pa.DataType:
    """One type for every label sent (numbers, or text when they mix), decided before the
    first block is written, since every row group of the file has the same schema."""
    values = [v for row in labels.values() for v in row if v is not None]
    if not values:
        return pa.null()
    try:
        kind = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.string()
    return kind if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) else pa.string()


def _as(value: Any, kind: pa.DataType) -> Any:
    if value is None or not pa.types.is_string(kind) or isinstance(value, str):
        return value
    return str(value)


def with_labels(rows: pa.Table, labels: dict[str, list[Any]] | None, kind: pa.DataType | None,
                counts: Any = None) -> pa.Table:  # fmt: skip
    """``rows`` with their label, keeping only the rows that have one (``labels`` None:
    ``rows`` unchanged); ``counts`` (requests, rows) are brought down to what is kept."""
    if labels is None or kind is None:
        return rows
    found = []
    for rid, i in zip(rows[REQUEST].to_pylist(), rows[ROW].to_pylist(), strict=True):
        sent = labels.get(rid) if rid is not None else None
        found.append(_as(sent[i], kind) if sent is not None and i < len(sent) else None)
    column = pa.array(found, kind)
    labelled = rows.append_column(LABEL, column).filter(pc.is_valid(column))
    if counts is not None:  # requests are counted by record: two requests may share a client-given id
        counts.rows -= rows.num_rows - labelled.num_rows
        before = pc.count_distinct(rows[RECORD]).as_py() if rows.num_rows else 0
        after = pc.count_distinct(labelled[RECORD]).as_py() if labelled.num_rows else 0
        counts.requests -= before - after
    return labelled
