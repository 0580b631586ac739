"""The server's lines of a deployment's audit trail (``audit.jsonl``): admin calls made with a
token other than the owner's, and refused attempts at admin routes.

The kernel records its own actions (it holds the owner token) with what it knows: the user,
the versions before and after (``deployments/events.py``). An admin call the kernel did not
make (another system holding an ``admin`` token) is recorded here, by the token's label,
with the version served before and after the call, the answer's status (500 when the
endpoint failed: it may have changed something first) and the client's address; so is an
attempt the guard refused (no token, an unknown one, or one whose role does not reach it),
at most one line a client a minute. Lines are appended with one ``write`` to the owner-only
file (concurrent writers never interleave).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from nbdeploy._files import append_private
from nbdeploy.tokens import OWNER

__all__ = ["AUDIT", "AdminAudit"]

AUDIT = "audit.jsonl"
REFUSED_EVERY_S = 60.0


class AdminAudit:
    """Appends an admin call to ``folder/audit.jsonl``; ``version`` reads the version served."""

    def __init__(self, folder: Path | None, name: str, version: Callable[[], int | None]) -> None:
        self.folder, self.name, self.version = folder, name, version
        # refused attempts: one line per client a minute, with the count of those not written since
        # (a scanner must not fill the disk through a file that is never rotated)
        self._refused: dict[str | None, tuple[float, int]] = {}

    def note(self, request: Request, status: int, before: int | None, refused: bool = False) -> None:
        """One admin call: by a token other than the owner's, or refused (whoever tried)."""
        label = getattr(request.state, "token_label", None)
        if self.folder is None or (label == OWNER and not refused):
            return
        if label is not None:
            by = f"token {label}"
        else:
            by = "an unknown token" if request.headers.get("authorization") else "no token"
        client = request.client.host if request.client else None
        more: dict[str, Any] = {}
        if refused:
            now = time.time()
            last, skipped = self._refused.get(client, (0.0, 0))
            if now - last < REFUSED_EVERY_S:
                self._refused[client] = (last, skipped + 1)
                return
            if len(self._refused) > 10_000:  # many clients: forget who was said, not what happens
                self._refused.clear()
            self._refused[client] = (now, 0)
            more = {"refused_not_written": skipped} if skipped else {}
        doc = {"ts": time.time(), "event": f"{request.method} {request.url.path}", "deployment": self.name,
               "by": by, "status": status, "version_before": before, "version_after": self.version(),
               "client": client, **getattr(request.state, "audit_detail", {}), **more}  # fmt: skip
        try:
            append_private(self.folder / AUDIT, json.dumps(doc) + "\n")
        except OSError as exc:  # the call happened; a full disk must not turn it into an error
            print(f"audit: an admin call was not recorded: {exc}", flush=True)
