"""``export``: what a real server answered, from its request logs to Parquet, joined with the
labels sent to ``/feedback``; and the same rows from a log that a crash, a hand or another
client has made hostile."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
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
    assert repr(labelled).startswith(f"Exported {len(truth)} rows of 3 requests ({len(truth)} labelled), to ")


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


def test_a_hostile_log_exports_what_it_can_and_says_what_it_skipped(
    served: dict[str, Any], cancer: dict[str, Any], tmp_path: Path
) -> None:
    dep = served["dep"]
    dep.stop()
    columns = list(cancer["X_test"].columns)
    row = cancer["X_test"].iloc[0].tolist()
    now = time.time()
    base = {"ts": now, "answered": now, "latency_ms": 1.0, "status": 200, "version": 1, "rows": 1}
    older = {**base, "id": "rotated", "inputs": [row]}
    (dep.path / "requests.jsonl.1").write_text(_line(older) + "\n")  # rotated: read first
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
        '{"ts": 1, "id": "torn", "inp',  # kill -9 mid-write
    ]
    with (dep.path / "requests.jsonl").open("a") as fh:
        fh.write("\n".join(hostile))
    result = dep.export(out=tmp_path / "h.parquet", since="1h")
    df = result.frame().set_index("request_id")
    assert df.index[0] == "rotated"
    assert {"nan", "strings", "reordered", "big", "canary"} <= set(df.index)
    assert not {"short", "shadow", "failed", "old", "torn"} & set(df.index)
    assert np.isnan(df.loc["nan", columns[0]]) and np.isnan(df.loc["strings", columns[0]])
    assert df.loc["reordered", columns].tolist() == row  # matched by name
    assert (df.loc["canary", "variant"], df.loc["canary", "model_version"]) == ("2", 2)
    assert len(df.loc["big"]) == 100 and result.not_logged == 400
    assert result.skipped == 4  # not JSON, a list, the torn line, the short row
    assert "400 rows of larger requests are not in it" in repr(result)
    assert "4 unreadable log lines or rows were skipped" in repr(result)


def test_arrow_and_python_read_a_log_to_the_same_rows(served: dict[str, Any], cancer: dict[str, Any]) -> None:
    from nbdeploy.deployments.export_rows import Counts, Features, _python_rows, arrow_records, block_rows

    dep = served["dep"]
    block = (dep.path / "requests.jsonl").read_bytes()
    assert arrow_records(block) is not None and arrow_records(block + b"NaN\n") is None  # which path reads it
    features = Features(list(cancer["X_test"].columns), ["double"] * cancer["X_test"].shape[1])
    by_arrow, by_python = Counts(), Counts()
    fast = block_rows(block, features, None, by_arrow)
    slow = _python_rows([json.loads(line) for line in block.splitlines()], features, None, by_python)
    assert fast.equals(slow) and fast.num_rows == sum(len(p) for _, p, _ in served["sent"])
    assert by_arrow == by_python


def test_integer_columns_keep_their_type_and_a_bad_value_is_null() -> None:
    from nbdeploy.deployments.export_rows import Counts, Features, block_rows, finish

    features = Features(["n", "x", "flag", "name"], ["long", "float", "boolean", "string"])
    now = time.time()
    rows = [[3, 1.5, True, "a"], [2.5, 2.0, "yes", 7], [1e30, 0.25, False, None]]
    block = _line({"ts": now, "answered": now, "status": 200, "id": "i", "rows": 3, "inputs": rows}).encode()
    table = finish(block_rows(block, features, None, Counts()), features)
    assert table.schema.field("n").type == pa.int64() and table.schema.field("x").type == pa.float32()
    assert table.column("n").to_pylist() == [3, None, None]  # 2.5 is no integer, 1e30 no int64
    assert table.column("flag").to_pylist() == [True, None, False]
    assert table.column("name").to_pylist() == ["a", "7", None]
