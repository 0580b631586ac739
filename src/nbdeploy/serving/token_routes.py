"""``POST /admin/tokens``: an ``admin`` token's way to manage tokens from another machine.

>>> httpx.post(url + "/admin/tokens", json={"action": "add", "role": "predict", "label": "web-app"},
...            headers=admin)                                                    # doctest: +SKIP
{"label": "web-app", "role": "predict", "value": "..."}

Actions: ``list`` (labels and roles, never values), ``add`` (``role``, optional ``label``),
``revoke`` and ``rotate`` (``label``). The same changes as ``%deploy token`` (the files and
their lock are :mod:`nbdeploy.tokens`'), so the kernel and remote admins take turns; the
server's token book sees each at once. A new value is in the answer only, over the
connection (HTTPS off loopback); the audit trail records the action and the label.

A Ray replica has no token files: there the only action is ``book``, the kernel's (the owner
token's) new token book (hashes, labels, roles), handed to the monitoring hub, which relays it
to every replica within a second; this replica takes it at once.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nbdeploy import tokens
from nbdeploy.serving.bodies import read_body
from nbdeploy.serving.protocol import ProtocolError
from nbdeploy.serving.responses import json_response
from nbdeploy.serving.tokens import TokenBook

__all__ = ["TokenRoutes"]

_BODY = "The body must be JSON with 'action' (list, add, revoke or rotate), and 'role' or 'label' as it needs."


class TokenRoutes:
    def __init__(self, folder: Path | None, name: str, book: TokenBook | None = None, monitor: Any = None) -> None:
        self.folder, self.name, self.book = folder, name, book
        self.relay = getattr(monitor, "set_tokens", None)  # a Ray replica's hub

    async def change(self, request: Request) -> Response:
        if self.folder is None:
            return await self._book(request)
        try:
            doc = json.loads(await read_body(request, 64 * 1024))
            action = doc["action"]
            args = [doc[k] for k in {"add": ("role",), "revoke": ("label",), "rotate": ("label",), "list": ()}[action]]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ProtocolError(400, _BODY) from exc
        if not all(isinstance(a, str) for a in args) or not isinstance(doc.get("label") or "", str):
            raise ProtocolError(400, _BODY)
        # the label as asked (cut: a body of 64 KB is no label), for the audit trail
        request.state.audit_detail = {"action": action, **({"label": doc["label"][:80]} if doc.get("label") else {})}
        if action in ("rotate", "revoke") and args[0] == tokens.OWNER:  # whoever held it would act unaudited
            raise ProtocolError(400, "The owner token is the kernel's own: rotate it on the deployment's machine "
                                     "(%deploy token NAME --rotate owner).")  # fmt: skip
        try:
            answer = await asyncio.to_thread(self._do, action, args, doc.get("label"))
        except tokens.TokenError as exc:
            raise ProtocolError(400, str(exc)) from None
        except ValueError as exc:  # a damaged file: said, never guessed at
            raise ProtocolError(409, f"The deployment's tokens cannot be read: {exc}.", "INVALID_STATE") from None
        except OSError as exc:  # a full disk, a folder made read-only
            raise ProtocolError(503, f"The token files could not be written: {exc.strerror or exc}.",
                                "TEMPORARILY_UNAVAILABLE") from None  # fmt: skip
        if "label" in answer:  # the label made, for the audit trail (never the value)
            request.state.audit_detail["label"] = answer["label"]
        return json_response(answer)

    async def _book(self, request: Request) -> Response:
        """A Ray replica: the kernel's new token book, for the hub to relay to every replica."""
        if getattr(request.state, "token_label", None) not in (tokens.OWNER, tokens.OWNER_NEXT):  # the kernel's
            raise ProtocolError(409, "This server is one replica of a Ray deployment: manage its tokens with "
                                     "%deploy token on the machine that deployed it.", "INVALID_STATE")  # fmt: skip
        if self.relay is None or self.book is None:
            raise ProtocolError(409, "Tokens of a Ray deployment travel through its monitoring hub, and this one "
                                     "runs without it (--no-monitor): serve it again with monitoring to add tokens.",
                                "INVALID_STATE")  # fmt: skip
        try:
            doc = json.loads(await read_body(request, 1 << 20))
            action = doc.get("action")
        except (ValueError, AttributeError, RecursionError) as exc:
            raise ProtocolError(400, _BODY) from exc
        try:
            if action != "book":
                raise ValueError("'action' must be 'book' on a Ray replica")
            book, issued = tokens.check_book(doc.get("book")), doc.get("issued")
            if isinstance(issued, bool) or not isinstance(issued, int | float) or not math.isfinite(issued):
                raise ValueError("'issued' must be the time the kernel made the book")
        except ValueError as exc:
            raise ProtocolError(400, f"Invalid token book: {exc}.") from None
        request.state.audit_detail = {"action": "book", "tokens": len(book)}
        reached = await self.relay(book, float(issued))  # a 503 when the hub cannot take it: the kernel saves nothing
        self.book.replace(book, float(issued))  # (the hub relays it to this replica too; at once here all the same)
        return json_response({"tokens": len(book), "every_replica": reached})

    def _do(self, action: str, args: list[str], label: str | None) -> dict[str, Any]:
        assert self.folder is not None
        if action == "add":
            made, value = tokens.add_token(self.folder, self.name, args[0], label)
            return {"label": made, "role": args[0], "value": value}
        if action == "revoke":
            tokens.revoke_token(self.folder, self.name, args[0])
            return {"revoked": args[0]}
        if action == "rotate":
            role, value = tokens.rotate_token(self.folder, self.name, args[0])
            return {"label": args[0], "role": role, "value": value}
        entries = tokens.read_entries(self.folder)
        return {"tokens": [{"label": tokens.OWNER, "role": "admin"}]
                + [{"label": e.label, "role": e.role, "created": e.created, "rotated": e.rotated} for e in entries]}
