"""What a shadow that reads the request log predicts and writes: a batch of logged requests as
the frame its model takes, and its record of each as a log line.

A request's rows are the log's: its first ``--log-rows`` rows, as JSON carries them. A
request sent as a table of named columns gives the signature's columns, in its order.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import orjson
import pandas as pd

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.serving.responses import error_answer

__all__ = ["dropped", "frame", "line", "record"]

# a record as the server's json.dumps writes it, in a tenth of the time (but NaN and Infinity
# are written null, a datetime with a T; json writes what orjson refuses)
_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def frame(batch: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    """The logged rows of ``batch`` in one frame. Rows of numbers become one array first: a
    frame built from lists, or one per request, cost the shadow's process half its time."""
    if any(isinstance(r.get("columns"), list) for r in batch):
        return pd.concat([_table(r, names) for r in batch], ignore_index=True)
    rows = [row for r in batch for row in r["inputs"]]
    values = np.asarray(rows)  # a row of another width raises: the batch is predicted one request at a time
    return pd.DataFrame(values if values.dtype.kind in "biuf" else rows, columns=names)


def dropped(r: dict[str, Any], why: str, spec: ExperimentSpec) -> dict[str, Any]:
    """The record of a mirror of request ``r`` the shadow gave up, as a server writes one
    (:mod:`~nbdeploy.serving.variants`): a Ray hub and a later replay count it from there."""
    out: dict[str, Any] = {"ts": r.get("ts"), "id": r.get("id"), "variant": spec.label}
    out.update(version=spec.challenger.version, shadow=True, rows=len(r["inputs"]), dropped=True, status=503)
    out.update(error=f"Not mirrored: {why}.", latency_ms=0.0, answered=time.time())
    return out


def record(r: dict[str, Any], outcome: list[Any] | BaseException, latency_ms: float, spec: ExperimentSpec,
           log_rows: int) -> dict[str, Any]:  # fmt: skip
    """The shadow's log record of request ``r`` (no inputs: the champion's record has them)."""
    out: dict[str, Any] = {"ts": r.get("ts"), "id": r.get("id"), "variant": spec.label}
    out.update(version=spec.challenger.version, shadow=True, rows=len(r["inputs"]))
    if isinstance(outcome, BaseException):
        status, body = error_answer(outcome)
        out.update(error=body["message"], status=status)
    else:
        out.update(predictions=outcome[:log_rows], status=200)
    out.update(latency_ms=latency_ms, answered=time.time())
    return out


def line(doc: dict[str, Any]) -> bytes:
    """``doc`` as one JSON line."""
    try:
        return orjson.dumps(doc, default=str, option=_ORJSON) + b"\n"
    except TypeError:  # an integer past 64 bits
        return (json.dumps(doc, separators=(",", ":"), default=str) + "\n").encode()


def _table(r: dict[str, Any], names: list[str]) -> pd.DataFrame:
    """A request sent as a table, as logged: the signature's columns in its order when it has
    them all (an optional column left out, or no signature: the columns as they came)."""
    columns = r.get("columns")
    table = pd.DataFrame(r["inputs"], columns=columns if isinstance(columns, list) else names or None)
    return table[names] if names and all(n in table.columns for n in names) else table
