"""A fuzz test of the server (Hypothesis): thousands of generated bodies, headers and content
types against ``/invocations`` and ``/feedback`` of a real server. No answer is a 5xx,
every refusal is a short JSON sentence, the server stays alive, and its memory and its
request log stay bounded."""

from __future__ import annotations

import json
import string
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbdeploy.serving.requestlog import read_records

pytestmark = pytest.mark.timeout(900)

EXAMPLES = 1200

CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; format=pandas-split",
    "APPLICATION/JSON", "text/csv", "text/csv; charset=latin-1", "text/plain", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded", "", "application/json; charset=nope", "text/csv; header=absent",
]  # fmt: skip

# JSON values of every kind a client might put where numbers belong
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "", "0x10", "1_000"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def _payloads(columns: list[str]) -> st.SearchStrategy[bytes]:
    """Bodies around MLflow's four formats: right keys, wrong shapes and values."""
    names = st.one_of(st.sampled_from(columns), st.text(max_size=12))
    row = st.lists(values, max_size=len(columns) + 3)
    record = st.dictionaries(names, values, max_size=len(columns) + 3)
    split = st.fixed_dictionaries(
        {"columns": st.lists(names, max_size=len(columns) + 3), "data": st.lists(row, max_size=4)},
        optional={"index": st.lists(values, max_size=4), "dtypes": values},
    )
    docs = st.one_of(
        st.builds(lambda d: {"dataframe_split": d}, split | values),
        st.builds(lambda d: {"dataframe_records": d}, st.lists(record, max_size=4) | values),
        st.builds(lambda d: {"instances": d}, st.lists(record | row, max_size=4) | values),
        st.builds(lambda d: {"inputs": d}, st.dictionaries(names, st.lists(values, max_size=4), max_size=5) | values),
        st.builds(lambda d, p: {"dataframe_split": d, "params": p}, split, values),
        st.dictionaries(st.text(max_size=12), values, max_size=5),
        values,
    )
    encoded = docs.map(lambda d: json.dumps(d, allow_nan=False).encode())
    csv = st.lists(st.lists(st.text(alphabet=string.printable, max_size=8) | names, max_size=8), max_size=6).map(
        lambda rows: "\n".join(",".join(r) for r in rows).encode()
    )
    openers = st.sampled_from(["[", '{"a":', '[{"x":'])
    nesting = st.builds(lambda n, c: (c * n).encode(), st.integers(1, 200_000), openers)
    return st.one_of(encoded, encoded.map(lambda b: b[: len(b) // 2]), csv, nesting, st.binary(max_size=300))


def _feedback_bodies() -> st.SearchStrategy[bytes]:
    ids = st.lists(st.text(max_size=30) | st.integers() | values, max_size=20)
    doc = st.one_of(
        st.fixed_dictionaries({"ids": ids, "targets": st.lists(values, max_size=20)}),
        st.dictionaries(st.sampled_from(["ids", "targets", "x"]), values, max_size=3),
        values,
    )
    return doc.map(lambda d: json.dumps(d, allow_nan=False).encode()) | st.binary(max_size=200)


PRINTABLE = st.characters(exclude_categories=("Cc", "Cs"))  # what h11 lets through, in UTF-8
header_names = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=30)
header_values = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + " ", max_size=200)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_fuzzed_requests_never_get_a_5xx_and_the_server_stays_bounded(
    serving: Any, two_versions: str, name: str, cancer: Any
) -> None:
    dep = serving(f"{two_versions}/1", name=name, token="fuzz-token-0123456789")
    columns = list(cancer["X_test"].columns)
    auth = {"Authorization": "Bearer fuzz-token-0123456789"}
    client = httpx.Client(base_url=dep.url, timeout=60)
    for _ in range(50):  # warm: the model, the parser and the allocator at their working size
        client.post("/invocations", json={"dataframe_split": {"columns": columns, "data": [[1.0] * 30]}}, headers=auth)
    rss_before = _rss_kb(dep.pid)
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(
        route=st.sampled_from(["/invocations", "/invocations", "/invocations", "/feedback"]),
        body=st.data(),
        content_type=st.sampled_from(CONTENT_TYPES) | st.text(PRINTABLE, max_size=40),
        extra=st.dictionaries(header_names, header_values, max_size=6),
        token=st.sampled_from(["right", "right", "right", "none", "wrong"]),
    )
    def send(route: str, body: Any, content_type: str, extra: dict[str, str], token: str) -> None:
        payload = body.draw(_payloads(columns) if route == "/invocations" else _feedback_bodies())
        framing = {"content-length", "host", "transfer-encoding"}  # httpx's to set
        # h11 sends no value with blanks around it (raw malformed heads: test_http_limits.py)
        headers: dict[str, str | bytes] = {k: v.strip(" \t") for k, v in extra.items() if k.lower() not in framing}
        headers["Content-Type"] = content_type.encode()  # UTF-8 bytes: not only ASCII reaches the server
        if token != "none":
            headers["Authorization"] = auth["Authorization"] if token == "right" else "Bearer nope"
        try:
            r = client.post(route, content=payload, headers=headers)
        except httpx.LocalProtocolError:  # a header httpx itself will not send: nothing reached the server
            seen[0] = seen.get(0, 0) + 1
            return
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (route, payload[:200], r.text[:300])
        if r.status_code >= 400:
            doc = r.json()
            assert set(doc) == {"error_code", "message"} and len(doc["message"]) <= 300, doc

    send()
    assert client.get("/ping").status_code == 200
    assert client.post("/invocations", json={"dataframe_split": {"columns": columns, "data": [[1.0] * 30]}},
                       headers=auth).status_code == 200  # fmt: skip
    assert seen.get(0, 0) < EXAMPLES * 0.02 and {200, 400, 401, 403, 415} <= set(seen), seen
    growth_mb = (_rss_kb(dep.pid) - rss_before) / 1024
    assert growth_mb < 200, f"the server grew by {growth_mb:.0f} MB over {sum(seen.values())} requests"
    logged = read_records(dep.path / "requests.jsonl")
    refused = [len(json.dumps(r)) for r in logged if r.get("status") != 200]
    assert refused and max(refused) < 1000  # a refusal's record never carries the body
    window = client.get("/monitor?window=1m", headers=auth).json()["windows"]["1m"]
    assert window["status_classes"]["5xx"] == 0 and window["error_rate"] == 0.0
    print(f"fuzz: {sum(seen.values()) - seen.get(0, 0)} requests, statuses {dict(sorted(seen.items()))}, "
          f"RSS {rss_before / 1024:.0f} MB -> +{growth_mb:.1f} MB, p50 record {np.median(refused):.0f} B")  # fmt: skip
