"""JSON answers, and the exception handlers that turn every error into one.

Routes raise :class:`~nbdeploy.serving.protocol.ProtocolError` (a request at fault) and let
anything else propagate; the handlers registered on the app (:data:`EXCEPTION_HANDLERS`)
answer ``{"error_code": ..., "message": ...}``. :func:`error_answer` is the one mapping from
an exception to a status and body, shared with ``/invocations``, which logs the answer
before the handler sends it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from nbdeploy.serving.batching import PredictError
from nbdeploy.serving.protocol import ProtocolError

__all__ = ["EXCEPTION_HANDLERS", "error_answer", "json_response"]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``payload`` as compact JSON (values JSON does not know, such as numpy scalars, as text)."""
    body = json.dumps(payload, separators=(",", ":"), default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


MODEL_FAILED = "The model could not predict on this input"  # a PredictError's answer begins so


def error_answer(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The status and JSON body that answer ``exc``."""
    if isinstance(exc, ProtocolError):
        return exc.status, exc.body()
    if isinstance(exc, ClientDisconnect):  # the client left mid-body, or stalled (http_limits): its doing
        return 408, {"error_code": "REQUEST_TIMEOUT", "message": "The body ended before its length: the client left."}
    if isinstance(exc, PredictError):
        return 400, {"error_code": "BAD_REQUEST", "message": f"{MODEL_FAILED}: {exc}."}
    # a bug of ours: a JSON answer that names the exception's type only (never data), and
    # the server stays up
    return 500, {"error_code": "INTERNAL_ERROR", "message": f"The server failed: {type(exc).__name__}."}


async def _answer(request: Request, exc: Exception) -> Response:
    status, body = error_answer(exc)
    # a route may set headers every answer of its carries (X-Request-Id on /invocations)
    return json_response(body, status, getattr(request.state, "answer_headers", None))


# Starlette gives the ``Exception`` handler to its outermost middleware, which answers and
# then re-raises, so that uvicorn logs the traceback of what was a bug of ours.
EXCEPTION_HANDLERS = {ProtocolError: _answer, PredictError: _answer, ClientDisconnect: _answer, Exception: _answer}
