"""The token book a Ray deployment's hub keeps and relays to its replicas.

The kernel sends each new book (``POST /admin/tokens``, action ``book``, through any replica);
every replica names the book it holds when it forwards its records, twice a second, and is
answered with the hub's when they differ. The book is kept in ``hub.json`` with the rest of the
hub's state, so a hub that Ray restarts relays the same one. It holds hashes, labels and
roles: never a token's value.

>>> relay = HubTokens({"a" * 64: ["owner", "admin"]})
>>> relay.for_replica("r1", relay.digest) is None, relay.for_replica("r2", "older") == relay.book
(True, True)
>>> relay.reached(relay.digest, ["r1"]), relay.reached(relay.digest, ["r1", "r2"])
(True, False)
"""

from __future__ import annotations

from typing import Any

from nbdeploy.tokens import Book, book_digest, check_book

__all__ = ["HubTokens"]


class HubTokens:
    def __init__(self, book: Book | None) -> None:
        self.book: Book | None = None
        self.digest: str | None = None
        self.held: dict[str, Any] = {}  # replica -> the digest of the book it named last
        if book is not None:
            self.set(book)

    def reached(self, digest: str, replicas: list[str]) -> bool:
        """Whether each of ``replicas`` (those reporting now) holds the book ``digest``."""
        return all(self.held.get(r) == digest for r in replicas)

    def set(self, book: Book) -> str:
        """Keep ``book`` (checked again: the hub trusts no caller); its digest."""
        self.book = check_book(book)
        self.digest = book_digest(book)
        assert self.digest is not None
        return self.digest

    def for_replica(self, replica: str, digest: Any) -> Book | None:
        """The book for a replica that holds ``digest``: ``None`` when it has this one (or the
        hub has none: a replica then keeps the book it started with)."""
        self.held[replica] = digest
        return self.book if self.book is not None and digest != self.digest else None
