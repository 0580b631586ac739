"""``export``: what a real server answered, from its request logs to Parquet, joined with the
labels sent to ``/feedback``; and the same rows from a log that a crash, a hand or another
client has made hostile."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet
import pytest

from tests.helpers import usage_error

HEAD = ["request_id", "row", "time", "variant", "model_version"]


@pytest.fixture
def served(dep: Any, cancer: dict[str, Any]) -> dict[str, Any]:
    """Requests of 1 to 40 rows answered by a real server, labels sent for every other one."""
    X, y = cancer["X_test"], cancer["y_test"]
    sent, start = [], 0
    for size in (1, 40, 7, 25, 3, 40):
        part = X.iloc[start : start + size]
        _, rid = dep.predict(part, with_id=True)
        sent.append((rid, part, y.iloc[start : start + size]))
        start += size
    labelled = sent[::2]
    result = dep.feedback([rid for rid, _, _ in labelled], [part.tolist() for _, _, part in labelled])
    assert result["accepted"] == len(labelled)
    return {"dep": dep, "sent": sent, "labelled": labelled}


def test_export_writes_every_served_row_with_its_request_and_label(served: dict[str, Any], tmp_path: Path) -> None:
    dep, sent = served["dep"], served["sent"]
    before = time.time()
    result = dep.export(out=tmp_path / "all.parquet")
    assert result.rows == sum(len(p) for _, p, _ in sent) and result.requests == len(sent)
    df = result.frame()
    assert list(df.columns) == HEAD + list(sent[0][1].columns)
    expected = pd.concat([p for _, p, _ in sent], ignore_index=True)
    pd.testing.assert_frame_equal(df[expected.columns], expected, check_dtype=True)  # bit for bit, as served
    assert df["request_id"].tolist() == [rid for rid, p, _ in sent for _ in range(len(p))]
    assert df["row"].tolist() == [i for _, p, _ in sent for i in range(len(p))]
    assert set(df["variant"]) == {"champion"} and set(df["model_version"]) == {1}
    assert str(df["time"].dt.tz) == "UTC" and df["time"].max().timestamp() <= before

    labelled = dep.export(out=tmp_path / "labelled.parquet", labelled=True)
    lf = labelled.frame()
    truth = pd.concat([y for _, _, y in served["labelled"]], ignore_index=True)
    assert labelled.labelled == labelled.rows == len(truth) and labelled.requests == len(served["labelled"])
    assert lf["label"].tolist() == truth.tolist()
    assert lf["request_id"].tolist() == [rid for rid, p, _ in served["labelled"] for _ in range(len(p))]
    said = " ".join(repr(labelled).split())  # the text form wraps at 100 columns
    assert said.startswith(f"Exported {len(truth)} rows of 3 requests ({len(truth)} labelled), to ")
    first = sent[0][0]  # labelled again, with a one-column DataFrame: the last label sent wins
    relabel = 1 - int(served["labelled"][0][2].iloc[0])
    assert dep.feedback([first], pd.DataFrame({"target": [relabel]}))["accepted"] == 1
    again = dep.export(out=tmp_path / "again.parquet", labelled=True).frame().set_index("request_id")
    assert again.loc[first, "label"] == relabel


def test_the_magic_and_the_cli_export_the_same_file(served: dict[str, Any], ip: Any, tmp_path: Path) -> None:
    from nbdeploy.cli import main

    dep = served["dep"]
    by_magic = ip.run_line_magic("deploy", f"export {dep.name} --since 1h --labelled --out {tmp_path / 'm.parquet'}")
    assert main(["export", dep.name, "--since", "1h", "--labelled", "--out", str(tmp_path / "c.parquet")]) == 0
    pd.testing.assert_frame_equal(by_magic.frame(), pd.read_parquet(tmp_path / "c.parquet"))
    default = dep.export(out=tmp_path)  # a folder: a file named after the deployment in it
    assert default.path.parent == tmp_path and default.path.name.startswith(f"{dep.name}-requests-")
    assert dep.export(out=tmp_path / "none.parquet", since=0.001).rows == 0  # nothing in the last millisecond
    assert "Invalid since '1y'" in usage_error(ip, f"export {dep.name} --since 1y")
    assert "No deployment is named" in usage_error(ip, "export nobody-here")


def _line(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def write_hostile_log(folder: Path, columns: list[str], row: list[float]) -> None:
    """A rotated file, then lines a crash, a hand or another client wrote, after the log in ``folder``."""
    now = time.time()
    base = {"ts": now, "answered": now, "latency_ms": 1.0, "status": 200, "version": 1, "rows": 1}
    older = {**base, "id": "rotated", "inputs": [row]}
    (folder / "requests.jsonl.1").write_text(_line(older) + "\n")  # rotated: read first
    hostile = [
        _line({**base, "id": "nan", "inputs": [[float("nan"), *row[1:]]]}),  # Python writes NaN: Arrow refuses it
        "this is not JSON",
        _line([1, 2, 3]),
        _line({**base, "id": "strings", "inputs": [["x", *row[1:]]]}),  # a number column holding text: null
        _line({**base, "id": "reordered", "columns": columns[::-1], "inputs": [row[::-1]]}),
        _line({**base, "id": "short", "inputs": [row[:5]]}),  # fits no column: skipped
        _line({**base, "id": "shadow", "shadow": True, "inputs": [row]}),  # answered nobody
        _line({**base, "id": "failed", "status": 400, "inputs": [row]}),
        _line({**base, "id": "old", "ts": now - 7200, "answered": now - 7200, "inputs": [row]}),
        _line({**base, "id": "big", "rows": 500, "inputs": [row] * 100}),  # the log kept 100 of 500 rows
        _line({**base, "id": "canary", "variant": "2", "version": 2, "inputs": [row]}),
        _line({**base, "id": "far-future", "answered": 1e20, "inputs": [row]}),  # no time to export
        _line({**base, "id": "huge-version", "version": 2**70, "inputs": [row]}),  # exported, version null
        _line({**base, "id": "no-variant", "variant": "", "inputs": [row]}),  # the champion's
        "[" * 50_000,  # nested past the interpreter's depth
        '{"ts": 1, "id": "torn", "inp',  # kill -9 mid-write
    ]
    with (folder / "requests.jsonl").open("a") as fh:
        fh.write("\n".join(hostile))
    (folder / "requests.jsonl.2").mkdir()  # not files: skipped, and a FIFO never blocks the export
    os.mkfifo(folder / "requests.jsonl.3")


def test_a_hostile_log_exports_what_it_can_and_says_what_it_skipped(
    served: dict[str, Any], cancer: dict[str, Any], tmp_path: Path
) -> None:
    dep = served["dep"]
    dep.stop()
    columns = list(cancer["X_test"].columns)
    row = cancer["X_test"].iloc[0].tolist()
    write_hostile_log(dep.path, columns, row)
    result = dep.export(out=tmp_path / "h.parquet", since="1h")
    df = result.frame().set_index("request_id")
    assert df.index[0] == "rotated"
    assert {"nan", "strings", "reordered", "big", "canary", "huge-version"} <= set(df.index)
    assert not {"short", "shadow", "failed", "old", "torn", "far-future"} & set(df.index)
    assert pd.isna(df.loc["huge-version", "model_version"]) and df.loc["no-variant", "variant"] == "champion"
    assert np.isnan(df.loc["nan", columns[0]]) and np.isnan(df.loc["strings", columns[0]])
    assert df.loc["reordered", columns].tolist() == row  # matched by name
    assert (df.loc["canary", "variant"], df.loc["canary", "model_version"]) == ("2", 2)
    assert len(df.loc["big"]) == 100 and result.not_logged == 400
    assert result.skipped == 5  # not JSON, a list, too deep, the torn line, the short row
    said = " ".join(repr(result).split())  # the text form wraps at 100 columns
    assert "400 rows of larger requests are not in it" in said
    assert "5 unreadable log lines or rows were skipped" in said


def test_without_polars_pyarrows_writer_writes_the_same_file(
    served: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    import sys

    dep = served["dep"]
    by_polars = dep.export(out=tmp_path / "polars.parquet", labelled=True)
    monkeypatch.setitem(sys.modules, "polars", None)  # not installed: the import fails
    by_pyarrow = dep.export(out=tmp_path / "pyarrow.parquet", labelled=True)
    pd.testing.assert_frame_equal(by_polars.frame(), by_pyarrow.frame())
    assert (by_polars.rows, by_polars.requests) == (by_pyarrow.rows, by_pyarrow.requests) and by_polars.rows > 0
    assert "polars" in pa.parquet.read_metadata(tmp_path / "polars.parquet").created_by.lower()
    assert "parquet-cpp-arrow" in pa.parquet.read_metadata(tmp_path / "pyarrow.parquet").created_by


def test_arrow_and_python_read_a_log_to_the_same_rows(served: dict[str, Any], cancer: dict[str, Any]) -> None:
    from nbdeploy.deployments.export_python import parse_lines, python_rows
    from nbdeploy.deployments.export_rows import arrow_records, block_rows
    from nbdeploy.deployments.export_schema import Counts, Features

    dep, n = served["dep"], cancer["X_test"].shape[1]
    now = time.time()
    odd = [  # records Arrow reads too, written by hand: each must come out the same by both paths
        {"ts": now, "status": 200, "inputs": [[None] * n]},  # no id, no answer time, a null value
        {"ts": now, "answered": now, "status": 200, "id": "e", "variant": "", "inputs": [[1.5] * n]},
        {"ts": now, "answered": float("nan"), "status": 200, "id": "n", "inputs": [[2.0] * n]},
    ]
    block = (dep.path / "requests.jsonl").read_bytes() + "".join(_line(d) + "\n" for d in odd).encode()
    assert arrow_records(block) is not None and arrow_records(block + b"NaN\n") is None  # which path reads it
    features = Features(list(cancer["X_test"].columns), ["double"] * n)
    by_arrow, by_python = Counts(), Counts()
    fast = block_rows(block, features, None, by_arrow)
    slow = python_rows(parse_lines(block, by_python), features, None, by_python)
    pd.testing.assert_frame_equal(fast.to_pandas(), slow.to_pandas())  # NaN equal to NaN, unlike Table.equals
    assert fast.schema.equals(slow.schema)
    assert fast.num_rows == sum(len(p) for _, p, _ in served["sent"]) + 2  # the NaN answer time: not exported
    assert by_arrow == by_python


def test_columns_keep_their_type_name_and_version() -> None:
    from nbdeploy.deployments.export_rows import block_rows
    from nbdeploy.deployments.export_schema import Counts, Features, finish

    features = Features(["n", "x", "flag", "time"], ["long", "float", "boolean", "string"])
    now = time.time()
    rows = [[3, 1.5, True, "a"], [2.5, 2.0, "yes", 7], [1e30, 0.25, False, None]]
    block = _line({"ts": now, "answered": now, "status": 200, "id": "i", "rows": 3, "inputs": rows}).encode()
    table = finish(block_rows(block, features, None, Counts()), features)
    assert table.column_names == ["request_id", "row", "_time", "variant", "model_version", "n", "x", "flag", "time"]
    assert table.schema.field("n").type == pa.int64() and table.schema.field("x").type == pa.float32()
    assert table.column("n").to_pylist() == [3, None, None]  # 2.5 is no integer, 1e30 no int64
    assert table.column("flag").to_pylist() == [True, None, False]
    assert table.column("time").to_pylist() == ["a", "7", None]
    # a version whose inputs came in another order (an update since): matched by name, on both paths
    numeric = Features(["a", "b"], ["double", "double"], by_version={1: ["b", "a"]})
    lines = [_line({"ts": now, "answered": now, "status": 200, "id": f"v{v}", "version": v, "inputs": [r]})
             for v, r in ((1, [2.0, 1.0]), (2, [1.0, 2.0]))]  # fmt: skip
    for block in ("\n".join(lines).encode(), ("\n".join(lines) + "\nnot json").encode()):
        got = finish(block_rows(block, numeric, None, Counts()), numeric)
        assert sorted(zip(got["request_id"].to_pylist(), got["a"].to_pylist(), got["b"].to_pylist(),
                          strict=True)) == [("v1", 1.0, 2.0), ("v2", 1.0, 2.0)]  # fmt: skip


def test_an_export_during_rotations_reads_every_record_once(tmp_path: Path) -> None:
    """A writer appends numbered records to a log rotating every few records, as fast as it can,
    while exports run: each export holds every record written before it began, each once."""
    from nbdeploy.deployments.export import export_logs
    from nbdeploy.deployments.export_schema import Features
    from nbdeploy.serving.requestlog import RequestLog

    log = RequestLog(tmp_path / "requests.jsonl", max_bytes=2_000, backups=2_000)  # none deleted here
    written, stop = [0], threading.Event()

    def write() -> None:
        while not stop.is_set() and written[0] < 30_000:
            now = time.time()
            log.append({"ts": now, "answered": now, "status": 200, "id": str(written[0]), "inputs": [[1.0]]})
            written[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    exports, deadline = 0, time.monotonic() + 30
    try:
        while exports < 5 or (len(list(tmp_path.glob("requests.jsonl.*"))) < 100 and time.monotonic() < deadline):
            before = written[0]
            result = export_logs(tmp_path, Features(["x"], ["double"]), tmp_path / f"{exports}.parquet")
            ids = [int(r) for r in result.frame()["request_id"]]
            assert len(ids) == len(set(ids)) and set(range(before)) <= set(ids), (before, len(ids))
            exports += 1
    finally:
        stop.set()
        writer.join()
        log.close()
    assert len(list(tmp_path.glob("requests.jsonl.*"))) >= 100  # it did rotate, many times, during exports
