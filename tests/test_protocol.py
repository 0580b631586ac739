"""Parsing of MLflow scoring payloads, without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nbdeploy.serving.protocol import ProtocolError, Schema, parse

NUMERIC = Schema.from_signature([{"name": "a", "type": "double"}, {"name": "b", "type": "long"}])
MIXED = Schema.from_signature([{"name": "a", "type": "double"}, {"name": "c", "type": "string"}])
JSON = "application/json"


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": ["b", "a"], "data": [[1, 0.5], [2, 1.5]]}},
        {"dataframe_split": {"columns": ["b", "a"], "index": [7, 8], "data": [[1, 0.5], [2, 1.5]]}},
        {"dataframe_records": [{"a": 0.5, "b": 1}, {"b": 2, "a": 1.5}]},
        {"instances": [{"a": 0.5, "b": 1}, {"a": 1.5, "b": 2}]},
        {"inputs": {"a": [0.5, 1.5], "b": [1, 2]}},
        {"inputs": [{"a": 0.5, "b": 1}, {"a": 1.5, "b": 2}]},
        {"dataframe_split": {"columns": ["a", "b", "extra"], "data": [[0.5, 1, "x"], [1.5, 2, "y"]]}},
    ],
)
def test_every_json_format_gives_the_same_matrix(doc: dict[str, object]) -> None:
    parsed = parse(body(doc), JSON, NUMERIC)
    assert parsed.rows == 2 and parsed.columns == ("a", "b")
    assert parsed.values is not None
    np.testing.assert_array_equal(parsed.values, [[0.5, 1], [1.5, 2]])


def test_params_and_csv() -> None:
    parsed = parse(body({"inputs": {"a": [1.0], "b": [2]}, "params": {"k": 1}}), JSON, NUMERIC)
    assert parsed.params == {"k": 1}
    csv = parse(b"b,a\n1,0.5\n", "text/csv; charset=utf-8", NUMERIC)
    assert csv.frame is not None and list(csv.frame.columns) == ["a", "b"] and csv.rows == 1
    assert str(csv.frame["b"].dtype) == "int64"
    trailing = parse(b"b,a\n1,0.5,\n", "text/csv", NUMERIC)  # a trailing comma: no column shifted into the index
    assert trailing.frame is not None and trailing.frame.to_dict("list") == {"a": [0.5], "b": [1]}


def test_mixed_schema_goes_through_a_frame() -> None:
    parsed = parse(body({"dataframe_records": [{"a": 1, "c": "x"}]}), JSON, MIXED)
    assert parsed.frame is not None and parsed.values is None
    assert str(parsed.frame["a"].dtype) == "float64" and parsed.frame["c"].tolist() == ["x"]


@pytest.mark.parametrize(
    ("raw", "ctype", "status", "message"),
    [
        (
            b"{",
            JSON,
            400,
            "The body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1).",
        ),
        (
            b"[1, 2]",
            JSON,
            400,
            "The JSON body must be an object with one of the keys dataframe_split, "
            "dataframe_records, instances, inputs.",
        ),
        (
            body({"data": []}),
            JSON,
            400,
            "The JSON body must have exactly one of the keys dataframe_split, "
            "dataframe_records, instances, inputs; found: 'data'.",
        ),
        (b"", JSON, 400, "The request body is empty."),
        (
            body({"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}),
            JSON,
            400,
            "The input is missing 1 required column(s): 'b'.",
        ),
        (
            body({"dataframe_split": {"columns": ["a", "b"], "data": [["x", 1]]}}),
            JSON,
            400,
            "Column 'a' expects double values but got str.",
        ),
        (
            body({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 1.5]]}}),
            JSON,
            400,
            "Column 'b' expects long values but got a fractional number.",
        ),
        (
            body({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0]]}}),
            JSON,
            400,
            "Every row must have 2 values, one per column.",
        ),
        (
            body({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 1]]}}),
            None,
            415,
            "The request has no Content-Type header: use application/json or text/csv.",
        ),
        (
            b"a,b\n1,2",
            "text/plain",
            415,
            "Unsupported Content-Type 'text/plain': use application/json or text/csv.",
        ),
        (
            body({"inputs": {"a": [1.0], "b": [2]}, "params": [1]}),
            JSON,
            400,
            "The field 'params' must be a JSON object.",
        ),
    ],
)
def test_errors_name_the_field(raw: bytes, ctype: str | None, status: int, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse(raw, ctype, NUMERIC)
    assert (err.value.status, err.value.message) == (status, message)


def test_mixed_schema_type_error_names_column() -> None:
    with pytest.raises(ProtocolError) as err:
        parse(body({"dataframe_records": [{"a": "zz", "c": "x"}]}), JSON, MIXED)
    assert err.value.message == "Column 'a' expects double values but got str values."


def test_errors_do_not_echo_the_data() -> None:
    secret = "patient-4711"
    with pytest.raises(ProtocolError) as err:
        parse(body({"dataframe_split": {"columns": ["a", "b"], "data": [[secret, 1]]}}), JSON, NUMERIC)
    assert secret not in err.value.message
