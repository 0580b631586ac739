"""MLflow's scoring protocol: request bodies in, model inputs out, with errors naming the field.

Accepted (``POST /invocations``): JSON ``{"dataframe_split": {...}}``,
``{"dataframe_records": [...]}``, ``{"instances": [...]}``, ``{"inputs": ...}``, each with an
optional ``"params"``; or ``text/csv``. A :class:`Parsed` request is either a float matrix in
signature order (the fast path, when every input column is numeric) or a DataFrame.

>>> schema = Schema.from_signature([{"name": "x", "type": "double"}])
>>> parse(b'{"dataframe_split": {"columns": ["x"], "data": [[1.5]]}}', "application/json", schema).rows
1
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.spec import PREDICT_METHODS

__all__ = ["Parsed", "ProtocolError", "Schema", "check_method", "parse"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_PARAMS_BYTES = 64 * 1024  # MLflow's params are a few scalars: a larger object is no inference parameter
_NUMERIC = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}
_OTHER = {"string": "object", "boolean": "bool", "datetime": "datetime64[ns]", "binary": "object"}


class ProtocolError(Exception):
    """A request the server answers with ``status`` and a JSON error naming the field at fault."""

    MAX_MESSAGE = 300  # a message never echoes a client's data at length (nor into the request log)

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST") -> None:
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE - 1] + "…"
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}

    def __reduce__(self) -> tuple[Any, ...]:  # raised in the parsing process, answered in the server's
        return (type(self), (self.status, self.message, self.error_code))


@dataclass(frozen=True)
class Schema:
    """Column-based model signature: names, MLflow types and which columns are required."""

    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    required: tuple[bool, ...] = ()

    @classmethod
    def from_signature(cls, inputs: list[dict[str, Any]] | None) -> Schema:
        cols = [c for c in inputs or [] if "name" in c and "type" in c]
        return cls(
            tuple(str(c["name"]) for c in cols),
            tuple(str(c["type"]) for c in cols),
            tuple(bool(c.get("required", True)) for c in cols),
        )

    @property
    def numeric(self) -> bool:
        """True when every column is numeric, so requests can travel as one float matrix."""
        return bool(self.names) and all(t in _NUMERIC for t in self.types)

    @property
    def max_columns(self) -> int:
        """The most columns a request may name: a body a thousand times wider than the model
        would cost the server seconds and memory to parse before it could refuse it."""
        return max(1024, 4 * len(self.names))

    def check_width(self, count: int, where: str) -> None:
        if count > self.max_columns:
            raise _bad(
                f"The {where} has {count} columns; the model takes {len(self.names)} "
                f"(a request may name at most {self.max_columns})."
            )


@dataclass
class Parsed:
    """One request's input: ``values`` (float matrix in schema order) or ``frame``."""

    rows: int
    columns: tuple[str, ...]
    values: np.ndarray | None = None
    frame: pd.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)
    params_key: str = "{}"  # the params as sorted JSON, computed once where the body is parsed

    @property
    def method(self) -> str:
        """The model's method that answers (MLflow's ``params`` convention ``predict_method``)."""
        return str(self.params.get("predict_method", "predict"))

    @functools.cached_property
    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one ``predict`` call (computed once: the batcher
        compares it for every queued request)."""
        return (self.values is not None, self.columns, self.params_key)


def check_method(method: str, methods: Any, who: str) -> None:
    """A 400 when ``who`` (a model, named for the client) lacks ``method``."""
    if method not in methods:
        raise ProtocolError(400, f"The params field 'predict_method' asks for {method}, which {who} does not "
                                 f"have; it has {', '.join(sorted(methods))}.")  # fmt: skip


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"The body is not valid JSON: {exc}.") from None
    except RecursionError:  # json.loads raises it, not ValueError, on deep nesting
        raise _bad("The body is not valid JSON: it nests too deeply.") from None
    if not isinstance(doc, dict):
        raise _bad(f"The JSON body must be an object with one of the keys {', '.join(FORMATS)}.")
    keys = [k for k in doc if k in FORMATS]
    if len(keys) != 1:
        found = ", ".join(map(repr, list(doc)[:5])) + (f" and {len(doc) - 5} more" if len(doc) > 5 else "") or "none"
        raise _bad(f"The JSON body must have exactly one of the keys {', '.join(FORMATS)}; found: {found}.")
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise _bad("The field 'params' must be a JSON object.")
    method = params.get("predict_method", "predict")
    if method not in PREDICT_METHODS:
        shown = repr(method)[:60] if isinstance(method, str) else f"a JSON {type(method).__name__}"
        raise _bad(f"The params field 'predict_method' must be one of {', '.join(PREDICT_METHODS)}; got {shown}.")
    try:  # here, once: the batcher compares it, on a deeper stack than this parse may have had
        params_key = json.dumps(params, sort_keys=True, default=str)
    except (RecursionError, ValueError, TypeError):
        raise _bad("The field 'params' nests too deeply: give it scalars or flat lists.") from None
    if len(params_key) > MAX_PARAMS_BYTES:
        raise _bad(f"The field 'params' is {len(params_key)} bytes as JSON; at most {MAX_PARAMS_BYTES} are taken.")
    return {"format": keys[0], "data": doc[keys[0]], "params": params, "params_key": params_key}


def _records_table(data: Any, field_name: str) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows from a list of records (``dataframe_records`` / ``instances``)."""
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise _bad(f"The field {field_name!r} must be a list of objects, one per row.")
    columns: dict[str, None] = {}
    for record in data:
        columns.update(dict.fromkeys(record))
    names = list(columns)
    return names, [[r.get(c) for c in names] for r in data]


def _table(fmt: str, data: Any) -> tuple[list[str] | None, list[Any]]:
    if fmt == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise _bad("The field 'dataframe_split' must be an object with 'columns' and 'data' lists.")
        columns = data.get("columns")
        if columns is not None and not isinstance(columns, list):
            raise _bad("The field 'dataframe_split.columns' must be a list of column names.")
        rows = data["data"]
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        return (None if columns is None else [str(c) for c in columns]), rows
    if fmt in ("dataframe_records", "instances"):
        if fmt == "instances" and isinstance(data, list) and data and not isinstance(data[0], dict):
            return None, data if isinstance(data[0], list) else [data]
        return _records_table(data, fmt)
    if isinstance(data, dict):  # "inputs" in columnar form: {"col": [values...]}
        names = [str(k) for k in data]
        cols = [v if isinstance(v, list) else [v] for v in data.values()]
        if len({len(c) for c in cols}) > 1:
            raise _bad("Every column in 'inputs' must have the same number of values.")
        return names, [list(r) for r in zip(*cols, strict=True)]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return _records_table(data, fmt)
    if isinstance(data, list):
        return None, data if (not data or isinstance(data[0], list)) else [data]
    raise _bad("The field 'inputs' must be an object of columns or a list of rows.")


def _check_columns(columns: list[str], schema: Schema) -> None:
    present = set(columns)
    missing = [n for n, req in zip(schema.names, schema.required, strict=True) if req and n not in present]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise _bad(f"The input is missing {len(missing)} required column(s): {shown}.")


def _to_matrix(columns: list[str], rows: list[Any], schema: Schema) -> np.ndarray:
    if tuple(columns) != schema.names:  # reorder, and drop extra columns before converting
        if not set(schema.names) <= set(columns):  # an optional column is absent: fill it with NaN
            rows = [[*row, None] for row in rows]
            columns = [*columns, ""]
        order = [columns.index(n) if n in columns else len(columns) - 1 for n in schema.names]
        try:
            rows = [[row[i] for i in order] for row in rows]
        except (IndexError, TypeError, KeyError):
            raise _bad(f"Every row must have {len(columns)} values, one per column.") from None
        columns = list(schema.names)
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer of hundreds of digits
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.shape[1] != len(columns):
        for row in rows:
            if not isinstance(row, list) or len(row) != len(columns):
                raise _bad(f"Every row must have {len(columns)} values, one per column.")
            for name, value in zip(columns, row, strict=True):
                if name in schema.names and not isinstance(value, (int, float, type(None))):
                    expected = schema.types[schema.names.index(name)]
                    raise _bad(f"Column {name!r} expects {expected} values but got {type(value).__name__}.")
        raise _bad("The input rows could not be read as numbers.")
    for j, (name, kind) in enumerate(zip(schema.names, schema.types, strict=True)):
        if kind in ("long", "integer") and not np.all(np.isnan(matrix[:, j]) | (matrix[:, j] % 1 == 0)):
            raise _bad(f"Column {name!r} expects {kind} values but got a fractional number.")
    return matrix


def enforce_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Select the signature's columns in order and cast them, naming every column that fails."""
    if not schema.names:
        return frame
    _check_columns([str(c) for c in frame.columns], schema)
    out, wrong = {}, []
    for name, kind in zip(schema.names, schema.types, strict=True):
        if name not in frame.columns:
            continue
        col = frame[name]
        target = _NUMERIC.get(kind) or _OTHER.get(kind, "object")
        try:
            if kind in _NUMERIC and not pd.api.types.is_numeric_dtype(col):
                raise ValueError
            if kind == "string" and not col.map(lambda v: v is None or isinstance(v, str) or v != v).all():
                raise ValueError  # a number in a string column: the model would fail on it, unnamed
            out[name] = col.astype(target) if target != "object" else col
        except (ValueError, TypeError, OverflowError):
            wrong.append(f"{name!r} expects {kind} values but got {col.dtype} values")
    if wrong:
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        raise _bad(f"Column {'; column '.join(wrong[:5])}{more}.")
    return pd.DataFrame(out)


def parse(body: bytes, content_type: str | None, schema: Schema) -> Parsed:
    """Parse one ``/invocations`` body; raise :class:`ProtocolError` (4xx) on bad input."""
    if not content_type:
        raise ProtocolError(
            415, "The request has no Content-Type header: use application/json or text/csv.", "UNSUPPORTED"
        )
    mime, _, options = content_type.partition(";")
    mime = mime.strip().lower()
    if options and "charset" in options.lower() and "utf-8" not in options.lower():
        raise ProtocolError(415, "The scoring server only supports UTF-8 bodies.", "UNSUPPORTED")
    if not body:
        raise _bad("The request body is empty.")
    if mime == "text/csv":
        header = body[: body.find(b"\n")] if b"\n" in body else body
        schema.check_width(header.count(b",") + 1, "CSV header")  # counted before pandas reads a byte
        try:
            frame = pd.read_csv(io.BytesIO(body), index_col=False)  # a trailing comma must not shift the columns
        except Exception as exc:
            raise _bad(f"The body is not valid CSV: {exc}.") from None
        return Parsed(len(frame), tuple(map(str, frame.columns)), frame=enforce_frame(frame, schema))
    if mime != "application/json":
        raise ProtocolError(415, f"Unsupported Content-Type {mime!r}: use application/json or text/csv.", "UNSUPPORTED")
    doc = _json_body(body)
    columns, rows = _table(doc["format"], doc["data"])
    width = len(columns) if columns is not None else len(rows[0]) if rows and isinstance(rows[0], list) else 0
    schema.check_width(width, f"field {doc['format']!r}")
    if columns is None:
        if not schema.names:
            raise _bad(f"The field {doc['format']!r} has no column names and the model has no signature.")
        columns = list(schema.names)
    if not rows:
        raise _bad(f"The field {doc['format']!r} has no rows.")
    if schema.numeric:
        _check_columns(columns, schema)
        values = _to_matrix(columns, rows, schema)
        return Parsed(len(rows), schema.names, values=values, params=doc["params"], params_key=doc["params_key"])
    try:
        frame = pd.DataFrame(rows, columns=columns)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _bad(f"The rows do not match the {len(columns)} columns: {exc}.") from None
    frame = enforce_frame(frame, schema)
    return Parsed(len(rows), tuple(columns), frame=frame, params=doc["params"], params_key=doc["params_key"])
