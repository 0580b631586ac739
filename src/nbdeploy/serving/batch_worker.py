"""A batch-scoring worker: one process that loads a model once and scores the chunks it is sent.

    python -m nbdeploy.serving.batch_worker MODEL_FOLDER [--proba]

Started by :mod:`nbdeploy.deployments.batch` (any number side by side), it speaks frames on
stdin and stdout: a tag byte, an 8-byte length, a payload. It answers ``R`` (ready: a JSON
document of the model's methods) once the model is loaded, then for each ``D`` frame (the
chunk's first row number in 8 bytes, then the path of an Arrow file of its rows, which it
maps, reads and deletes) a ``D`` frame of
the chunk's ``prediction`` (and ``proba_<class>`` columns with ``--proba``), an ``E`` frame
(one sentence naming the rows of the input, numbered from 0, where it breaks the signature,
as the server would refuse it) or an ``F`` frame (the model failed on the chunk's rows). It
dies with its parent (``PR_SET_PDEATHSIG``), and ends when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nbdeploy._frames import START, read_frame, write_frame
from nbdeploy.serving.bodies import die_with
from nbdeploy.serving.loader import LoadedModel, load
from nbdeploy.serving.protocol import ProtocolError, Schema, enforce_frame

__all__ = ["bad_rows", "main", "score"]

_NUMBERS = ("double", "float", "long", "integer")


def _rows(positions: Any, start: int) -> str:
    shown = ", ".join(f"{int(p) + start:,}" for p in positions[:5])
    return shown + (f" and {len(positions) - 5:,} more" if len(positions) > 5 else "")


def bad_rows(frame: pd.DataFrame, schema: Schema, start: int = 0) -> str | None:
    """The first column whose values break the signature, with the rows (``start`` the
    frame's first) where they do."""
    for name, kind in zip(schema.names, schema.types, strict=True):
        if name not in frame.columns:
            continue
        column = frame[name]
        if kind in _NUMBERS:
            numbers = pd.to_numeric(column, errors="coerce")
            wrong = np.flatnonzero(numbers.isna().to_numpy() & column.notna().to_numpy())
            if wrong.size:
                return f"Column {name!r} expects {kind} values; rows {_rows(wrong, start)} are not numbers."
            if kind in ("long", "integer"):
                values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
                empty = np.flatnonzero(np.isnan(values))
                if empty.size:
                    return f"Column {name!r} expects {kind} values; rows {_rows(empty, start)} are empty."
                fractional = np.flatnonzero(~np.isnan(values) & (values % 1 != 0))
                if fractional.size:
                    where = _rows(fractional, start)
                    return f"Column {name!r} expects {kind} values; rows {where} are not whole numbers."
        elif kind == "string":
            wrong = np.flatnonzero(column.map(lambda v: not (v is None or isinstance(v, str) or v != v)).to_numpy())
            if wrong.size:
                return f"Column {name!r} expects string values; rows {_rows(wrong, start)} are not text."
    return None


def score(model: LoadedModel, schema: Schema, table: pa.Table, proba: bool, start: int = 0) -> pa.Table:
    """The chunk's predictions (and probabilities); ProtocolError for input the server refuses."""
    raw = table.to_pandas()
    where = bad_rows(raw, schema, start)
    if where is not None:
        raise ProtocolError(400, where)
    for name, kind in zip(schema.names, schema.types, strict=True):  # numbers written as text (a CSV's)
        if kind in _NUMBERS and name in raw.columns and not pd.api.types.is_numeric_dtype(raw[name]):
            raw[name] = pd.to_numeric(raw[name])
    X = enforce_frame(raw, schema) if schema.names else raw
    owner = model.proba_owner()
    classes = getattr(owner, "classes_", None)
    if not proba or "predict_proba" not in model.methods or classes is None:
        return pa.table(_predictions(model.call(X)))
    from nbdeploy.tasks import argmax_predict

    p = np.asarray(model.call(X, "predict_proba"), dtype=np.float64)
    predicted = np.asarray(classes).take(p.argmax(axis=1)) if argmax_predict(owner) else model.call(X)
    columns = _predictions(predicted)
    columns.update({f"proba_{c}": p[:, j] for j, c in enumerate(np.asarray(classes).tolist())})
    return pa.table(columns)


def _predictions(raw: Any) -> dict[str, Any]:
    """``prediction``, or ``prediction_0``… for a model with several outputs per row."""
    values = raw.to_numpy() if hasattr(raw, "to_numpy") else np.asarray(raw)
    if values.ndim == 2 and values.shape[1] > 1:
        return {f"prediction_{j}": values[:, j] for j in range(values.shape[1])}
    return {"prediction": values.reshape(len(values))}


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--parent" in args:
        die_with(int(args[args.index("--parent") + 1]))
    stdin = sys.stdin.buffer
    # the frames get a descriptor of their own; whatever writes to descriptor 1 (a print, a
    # native library's log) goes to stderr and cannot corrupt them
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        model = load(args[0])
    except Exception as exc:
        write_frame(stdout, b"E", f"The model could not be loaded: {type(exc).__name__}: {exc}".encode())
        return 1
    schema = Schema.from_signature(model.inputs)
    write_frame(stdout, b"R", json.dumps({"methods": sorted(model.methods)}).encode())
    while (frame := read_frame(stdin)) is not None:
        (start,) = START.unpack_from(frame[1])
        path = frame[1][START.size :].decode()  # an Arrow file the kernel wrote for this process
        with pa.memory_map(path) as source:
            table = pa.ipc.open_file(source).read_all()
        os.unlink(path)
        try:
            write_frame(stdout, b"D", _ipc(score(model, schema, table, "--proba" in args, start)))
        except ProtocolError as exc:
            write_frame(stdout, b"E", exc.message.encode())
        except Exception as exc:  # the model failed: say how, and on which rows
            rows = f"{start:,}-{start + table.num_rows - 1:,}"
            write_frame(stdout, b"F", f"The model failed on rows {rows}: {type(exc).__name__}: {exc}".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
