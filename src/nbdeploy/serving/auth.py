"""Who may call what: every route declares its :class:`Access` once, in the route table.

>>> guard = Guard(TokenBook(None, owner="s3cret"), require_token=True)  # doctest: +SKIP
>>> route = GuardedRoute("/info", info, Access.OBSERVE, guard)  # doctest: +SKIP

A :class:`GuardedRoute` checks the bearer token before its endpoint runs; the app is built
of guarded routes only (a test enumerates them), so a new route cannot forget to say who
may call it. A token carries a role (:data:`nbdeploy.tokens.ROLES`); a token whose role does
not reach the route is answered 403 naming the role needed. The label of the token a
request came with is kept on ``request.state.token_label`` (the request log records it,
never the value).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nbdeploy.serving.audit import AdminAudit
from nbdeploy.serving.protocol import ProtocolError
from nbdeploy.serving.responses import json_response
from nbdeploy.serving.tokens import TokenBook
from nbdeploy.tokens import holds

__all__ = ["Access", "Endpoint", "Guard", "GuardedRoute"]

Endpoint = Callable[[Request], Awaitable[Response]]

_MISSING = ProtocolError(401, "This endpoint needs the header 'Authorization: Bearer <token>'.", "UNAUTHENTICATED")
_WRONG = ProtocolError(403, "The bearer token is not valid.", "PERMISSION_DENIED")


class Access(enum.Enum):
    """Who may call a route: nobody in particular, or a token whose role reaches it."""

    PUBLIC = "public"  # health checks: probes (load balancers, Kubernetes) carry no token
    PREDICT = "predict"  # a token when the server requires one (any non-loopback address)
    OBSERVE = "observe"  # likewise: what the server has seen is no more secret than predictions
    FEEDBACK = "feedback"  # a token always, even on loopback: labels steer live accuracy and decisions
    ADMIN = "admin"  # a token always: it changes what the server does

    def needs_token(self, require_token: bool) -> bool:
        if self is Access.PUBLIC:
            return False
        return require_token or self in (Access.FEEDBACK, Access.ADMIN)


class Guard:
    """The token check of one server."""

    def __init__(self, book: TokenBook, require_token: bool, audit: AdminAudit | None = None) -> None:
        self.book, self.require_token, self.audit = book, require_token, audit

    def denied(self, request: Request, access: Access) -> Response | None:
        """401 without a bearer token, 403 with an unknown one or one whose role does not reach
        the route; ``None`` when the request may pass."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not access.needs_token(self.require_token):
            if scheme.lower() == "bearer" and given:  # a client that sends one is named in the log
                known = self.book.identify(given)
                request.state.token_label = known[0] if known else None
            return None
        if scheme.lower() != "bearer" or not given:
            return json_response(_MISSING.body(), 401, {"WWW-Authenticate": "Bearer"})
        known = self.book.identify(given)
        if known is None:
            return json_response(_WRONG.body(), 403)
        label, role = known
        request.state.token_label = label
        if not holds(role, access.value):
            message = f"This endpoint needs a token with the role {access.value!r}; this one ({label!r}) has {role!r}."
            return json_response(ProtocolError(403, message, "PERMISSION_DENIED").body(), 403)
        return None

    def wrap(self, endpoint: Endpoint, access: Access) -> Endpoint:
        """``endpoint`` behind the check for ``access``."""

        audit = self.audit if access is Access.ADMIN else None

        @functools.wraps(endpoint)
        async def checked(request: Request) -> Response:
            denied = self.denied(request, access)
            if audit is None:
                return denied if denied is not None else await endpoint(request)
            before = audit.version()
            if denied is not None:  # a refused attempt at an admin route is on record too
                audit.note(request, denied.status_code, before, refused=True)
                return denied
            status = 500  # unless the endpoint answers: it may have changed something before it failed
            try:
                response = await endpoint(request)
                status = response.status_code
                return response
            except ProtocolError as exc:  # answered by the app's handler
                status = exc.status
                raise
            finally:
                audit.note(request, status, before)

        return checked


class GuardedRoute(Route):
    """A route with its declared :class:`Access`, checked before the endpoint runs."""

    def __init__(
        self, path: str, endpoint: Endpoint, access: Access, guard: Guard, methods: Sequence[str] | None = None
    ) -> None:
        self.access = access
        super().__init__(path, guard.wrap(endpoint, access), methods=list(methods) if methods else None)
