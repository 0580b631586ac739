"""Talking to a deployment's server over HTTP: the kernel's only way to reach it.

>>> request("cancer", "GET", "http://127.0.0.1:5050", "/info", token=None).json()   # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any

from nbdeploy.errors import DeploymentError, Docs

__all__ = ["answers", "example_rows", "frame_rows", "json_value", "request", "request_bodies"]


def json_value(value: Any) -> Any:
    """numpy scalars as numbers, timestamps as ISO text (what ``json`` cannot write itself)."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def answers(url: str, verify: Any = True, timeout: float = 3) -> bool:
    """Whether ``url/health`` answers 200 within ``timeout`` seconds."""
    import httpx

    try:
        return httpx.get(url + "/health", timeout=timeout, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def request(name: str, method: str, base: str, route: str, token: str | None, timeout: float = 60, **kw: Any) -> Any:
    """One HTTP call to deployment ``name``; a transport error or a 4xx/5xx answer is one
    :class:`DeploymentError` sentence carrying the server's own message. ``verify`` (in
    ``kw``) is the TLS context of an HTTPS deployment (see :mod:`.tls`)."""
    import httpx

    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kw.pop("headers", {})}
    try:
        response = httpx.request(method, base + route, headers=headers, timeout=timeout, **kw)
    except httpx.HTTPError as exc:
        raise DeploymentError(f"Deployment {name!r} did not answer at {base}: {exc}.") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        # a refused token is fixed as docs/security.md says; other refusals name their field
        docs = Docs.TOKENS if response.status_code in (401, 403) else None
        raise DeploymentError(f"Deployment {name!r} answered {response.status_code}: {message}", docs=docs)
    return response


MAX_BODIES = 1000  # distinct requests a load test cycles through


def frame_rows(X: Any) -> tuple[list[str] | None, list[list[Any]]]:
    """Column names (``None`` for an array: the server takes the signature's order) and rows
    of ``X``, every value at full double precision (pandas' ``to_json`` rounds to 10 digits),
    missing values as ``None``."""
    import pandas as pd

    from nbdeploy.stats.profile import as_frame

    frame = as_frame(X)
    rows = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
    columns = [str(c) for c in frame.columns] if isinstance(X, (pd.DataFrame, pd.Series)) else None
    return columns, rows


def request_bodies(X: Any, rows_per_request: int) -> list[str]:
    """``X`` as MLflow ``dataframe_split`` bodies of ``rows_per_request`` rows each (at most
    :data:`MAX_BODIES`; a short last slice is left out, so predictions are requests times rows)."""
    from nbdeploy.errors import InvalidInputError

    if rows_per_request < 1:
        raise InvalidInputError(f"Invalid --rows {rows_per_request}: a request carries at least 1 row.")
    head = MAX_BODIES * rows_per_request  # only the rows that can be sent are converted
    columns, rows = frame_rows(X.iloc[:head] if hasattr(X, "iloc") else X[:head])
    if len(rows) < rows_per_request:
        raise InvalidInputError(f"--data has {len(rows)} row(s), fewer than --rows {rows_per_request}.")
    bodies = []
    for start in range(0, min(len(rows), MAX_BODIES * rows_per_request) - rows_per_request + 1, rows_per_request):
        split: dict[str, Any] = {"data": rows[start : start + rows_per_request]}
        if columns is not None:
            split["columns"] = columns
        bodies.append(json.dumps({"dataframe_split": split}, default=json_value))
    return bodies


def example_rows(doc: Any) -> int:
    """The rows of an MLflow scoring request in any of its formats (1 when it cannot be told)."""
    if not isinstance(doc, dict):
        return 1
    for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        part = doc.get(key)
        if isinstance(part, dict) and isinstance(part.get("data"), list):  # dataframe_split
            return max(1, len(part["data"]))
        if isinstance(part, dict) and part:  # columnar inputs: {column: [values...]}
            first = next(iter(part.values()))
            return max(1, len(first)) if isinstance(first, list) else 1
        if isinstance(part, list):
            return max(1, len(part))
    return 1
