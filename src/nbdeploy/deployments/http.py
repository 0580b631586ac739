"""Talking to a deployment's server over HTTP: the kernel's only way to reach it.

>>> request("cancer", "GET", "http://127.0.0.1:5050", "/info", token=None).json()   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from nbdeploy.errors import DeploymentError

__all__ = ["answers", "json_value", "request"]


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
        raise DeploymentError(f"Deployment {name!r} answered {response.status_code}: {message}")
    return response
