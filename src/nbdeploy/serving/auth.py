"""Who may call what: every route declares its :class:`Access` once, in the route table.

>>> guard = Guard(token="s3cret", require_token=True)
>>> route = GuardedRoute("/info", info, Access.TOKEN, guard)  # doctest: +SKIP

A :class:`GuardedRoute` checks the bearer token before its endpoint runs; the app is built
of guarded routes only (a test enumerates them), so a new route cannot forget to say who
may call it.
"""

from __future__ import annotations

import enum
import functools
import hmac
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nbdeploy.serving.protocol import ProtocolError
from nbdeploy.serving.responses import json_response

__all__ = ["Access", "Endpoint", "Guard", "GuardedRoute"]

Endpoint = Callable[[Request], Awaitable[Response]]

_MISSING = ProtocolError(401, "This endpoint needs the header 'Authorization: Bearer <token>'.", "UNAUTHENTICATED")
_WRONG = ProtocolError(403, "The bearer token is not valid.", "PERMISSION_DENIED")


class Access(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"  # health checks: probes (load balancers, Kubernetes) carry no token
    TOKEN = "token"  # the bearer token, when the server requires one (any non-loopback address)
    ADMIN = "admin"  # the bearer token always, even on loopback: it changes what the server does


class Guard:
    """The token check of one server."""

    def __init__(self, token: str | None, require_token: bool) -> None:
        self.token, self.require_token = token, require_token

    def denied(self, request: Request, access: Access) -> Response | None:
        """401 without a bearer token, 403 with a wrong one; ``None`` when the request may pass."""
        if access is Access.PUBLIC or (access is Access.TOKEN and not self.require_token):
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return json_response(_MISSING.body(), 401, {"WWW-Authenticate": "Bearer"})
        if not self.token or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return json_response(_WRONG.body(), 403)
        return None

    def wrap(self, endpoint: Endpoint, access: Access) -> Endpoint:
        """``endpoint`` behind the check for ``access``."""

        @functools.wraps(endpoint)
        async def checked(request: Request) -> Response:
            denied = self.denied(request, access)
            return denied if denied is not None else await endpoint(request)

        return checked


class GuardedRoute(Route):
    """A route with its declared :class:`Access`, checked before the endpoint runs."""

    def __init__(
        self, path: str, endpoint: Endpoint, access: Access, guard: Guard, methods: Sequence[str] | None = None
    ) -> None:
        self.access = access
        super().__init__(path, guard.wrap(endpoint, access), methods=list(methods) if methods else None)
