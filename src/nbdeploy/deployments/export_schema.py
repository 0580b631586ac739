"""What an export's rows are made of: the signature's features, the counts, the columns.

While blocks are read, rows carry internal column names (``\\x00time``…) that no feature can
take; :func:`finish` gives them their public names (``request_id``, ``row``, ``time``,
``variant``, ``model_version``, ``label``), each prefixed with ``_`` where a feature has that
name already, and the features their signature's types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["HEAD", "LABEL", "NUMERIC", "RECORD", "REQUEST", "ROW", "TIME", "VARIANT", "VERSION", "Counts", "Features",
           "empty_rows", "finish", "public_names", "raw_schema"]  # fmt: skip

NUMERIC = ("double", "float", "long", "integer")
REQUEST, ROW, TIME, VARIANT, VERSION = "\0request_id", "\0row", "\0time", "\0variant", "\0model_version"
RECORD = "\0record"  # the record's number in this export: requests are counted by it, then it is dropped
LABEL = "\0label"
HEAD = {REQUEST: pa.string(), ROW: pa.int32(), TIME: pa.float64(), VARIANT: pa.string(), VERSION: pa.int64(),
        RECORD: pa.int64()}  # fmt: skip
_FINAL = {"double": pa.float64(), "float": pa.float32(), "long": pa.int64(), "integer": pa.int32(),
          "boolean": pa.bool_()}  # fmt: skip
_INT_RANGE = {"long": 2.0**63, "integer": 2.0**31}
MAX_TIME = 1e11  # seconds since 1970 (the year 5138): a time past it is a corrupted record


@dataclass(frozen=True)
class Features:
    """The served model's input columns (names and MLflow types), and the names of the other
    versions the deployment served whose inputs differed: their rows are matched by name."""

    names: list[str]
    types: list[str]
    by_version: dict[int, list[str]] = field(default_factory=dict)

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
    records: int = 0  # records numbered so far (RECORD)
    # (answer time, count) of each not_logged and skipped, kept only for the log's columnar copy
    # (nbdeploy.deployments.log_columns), whose counts an export with --since takes from them;
    # a line that is no record has no time: +inf, counted whatever --since
    at: dict[str, list[tuple[float, int]]] | None = None

    def skip(self, when: float = float("inf"), n: int = 1) -> None:
        self.skipped += n
        if self.at is not None:
            self.at["skipped"].append((when, n))

    def miss(self, when: float, n: int) -> None:
        """``n`` rows of a request answered at ``when`` that the log did not keep."""
        self.not_logged += n
        if self.at is not None and n:
            self.at["not_logged"].append((when, n))


def raw_schema(features: Features) -> pa.Schema:
    return pa.schema([*HEAD.items(), *((n, features.raw_type(t)) for n, t in zip(features.names, features.types,
                                                                                 strict=True))])  # fmt: skip


def empty_rows(features: Features) -> pa.Table:
    return raw_schema(features).empty_table()


def public_names(features: Features) -> dict[str, str]:
    """Each internal column's name in the file: ``time``, or ``_time`` when a feature is ``time``."""
    taken, names = set(features.names), {}
    for internal in (REQUEST, ROW, TIME, VARIANT, VERSION, LABEL):
        name = internal[1:]
        while name in taken:
            name = "_" + name
        names[internal] = name
        taken.add(name)
    return names


def finish(rows: pa.Table, features: Features) -> pa.Table:
    """Rows as written: ``time`` a UTC timestamp, each feature in its signature's type (an
    integer column's value that is not a whole number in range becomes null), public names."""
    utc = pa.timestamp("us", tz="UTC")
    micros = pc.cast(pc.round(pc.multiply(rows[TIME], 1e6)), pa.int64())  # finite and in range: block_rows
    rows = rows.set_column(rows.schema.get_field_index(TIME), pa.field(TIME, utc), micros.cast(utc))
    for name, kind in zip(features.names, features.types, strict=True):
        if kind not in _FINAL or kind in ("double", "boolean"):
            continue
        column = rows[name]
        if kind in _INT_RANGE:
            whole = pc.and_(pc.equal(pc.floor(column), column), pc.less(pc.abs(column), _INT_RANGE[kind]))
            column = pc.if_else(whole, column, pa.scalar(None, pa.float64()))
        where = rows.schema.get_field_index(name)
        rows = rows.set_column(where, pa.field(name, _FINAL[kind]), pc.cast(column, _FINAL[kind], safe=False))
    rename = public_names(features)
    rows = rows.drop_columns([RECORD])
    return rows.rename_columns([rename.get(n, n) for n in rows.column_names])
