"""The token book a Ray deployment's hub keeps and relays to its replicas.

The kernel sends each new book (``POST /admin/tokens``, action ``book``, through any replica);
every replica names the book it holds when it forwards its records, twice a second, and is
answered with the hub's when they differ. Each book carries when the kernel issued it: a
replica never takes one older than its own (a hub that lost its state and fell back to the
book it was first deployed with cannot bring back a revoked token). The book is kept in
``hub.json`` (owner-only) with the rest of the hub's state, so a hub that Ray restarts
relays the same one. It holds hashes, labels and roles: never a token's value.

>>> relay = HubTokens({"a" * 64: ["owner", "admin"]}, issued=1.0)
>>> relay.for_replica("r1", relay.digest) is None, relay.for_replica("r2", "older")["book"] == relay.book
(True, True)
>>> relay.reached(relay.digest, ["r1"]), relay.reached(relay.digest, ["r1", "r2"])
(True, False)
"""

from __future__ import annotations

import threading
import time
from typing import Any

from nbdeploy.tokens import Book, book_digest, check_book

__all__ = ["HubTokens", "TokenMethods"]


class HubTokens:
    def __init__(self, book: Book | None, issued: float = 0.0) -> None:
        self.book: Book | None = None
        self.digest: str | None = None
        self.issued = 0.0
        self.held: dict[str, Any] = {}  # replica -> the digest of the book it named last
        if book is not None:
            self.set(book, issued)

    @classmethod
    def restored(cls, saved: Any, book: Book | None, issued: float) -> HubTokens:
        """From ``hub.json``'s ``tokens`` when it has them, else the deploy's ``book``."""
        if isinstance(saved, dict) and isinstance(saved.get("book"), dict):
            try:
                return cls(saved["book"], float(saved.get("issued") or 0.0))
            except (ValueError, TypeError) as exc:  # a damaged hub.json: the deploy's book (replicas hold newer)
                print(f"tokens: hub.json's book is not valid ({exc}); relaying the deployment's", flush=True)
        return cls(book, issued)

    def state(self) -> dict[str, Any]:
        return {"book": self.book, "issued": self.issued}

    def reached(self, digest: str, replicas: list[str]) -> bool:
        """Whether each of ``replicas`` (those reporting now) holds the book ``digest``."""
        return all(self.held.get(r) == digest for r in replicas)

    def set(self, book: Book, issued: float) -> str:
        """Keep ``book`` (checked again: the hub trusts no caller); its digest."""
        self.book, self.issued = check_book(book), float(issued)
        self.digest = book_digest(book)
        assert self.digest is not None
        return self.digest

    def for_replica(self, replica: str, digest: Any) -> dict[str, Any] | None:
        """The book (and when it was issued) for a replica that holds ``digest``: ``None`` when
        it has this one (or the hub has none: a replica then keeps the book it started with)."""
        self.held[replica] = digest
        return self.state() if self.book is not None and digest != self.digest else None


class TokenMethods:
    """The hub's methods of the token relay, called by the replica the kernel asked."""

    tokens: HubTokens
    lock: threading.RLock
    meta: dict[str, dict[str, Any]]

    def _save_state(self) -> None: ...

    def set_tokens(self, book: dict[str, list[str]], issued: float) -> str:
        with self.lock:
            digest = self.tokens.set(book, issued)
            self._save_state()
        return digest

    def tokens_reached(self, digest: str) -> bool:
        """Whether every replica reporting now (within 3 s) holds the book ``digest``."""
        with self.lock:
            return self.tokens.reached(digest, [r for r, m in self.meta.items() if time.time() - m["last_seen"] < 3])
