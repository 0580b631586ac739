"""The tokens one server accepts, read again from the deployment folder when they change.

>>> book = TokenBook(folder=None, owner="s3cret")
>>> book.identify("s3cret")
('owner', 'admin')
>>> book.identify("guess") is None
True

A request presents a token; its SHA-256 names the token's label and role. The files are
looked at (one ``stat`` each) at most every :data:`RECHECK_S` seconds, so a token revoked
or rotated by the kernel is refused well within a second, without a restart; and at once
when a token is not known, so a token just added works on its first request. A file that
cannot be read keeps the tokens read last and says so in ``server.log``: a half-written
or damaged file must neither lock every client out nor let anyone in.

A Ray replica reads no file (it may run on another machine): it starts with the book the
kernel had at deploy time and takes each newer one the monitoring hub relays
(:meth:`TokenBook.replace`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nbdeploy.tokens import OWNER, TOKENS_FILE, Book, book_digest, check_book, read_entries, token_hash

__all__ = ["RECHECK_S", "TokenBook"]

RECHECK_S = 0.25


class TokenBook:
    """Hash -> (label, role) of the owner token and of ``tokens.json``'s."""

    def __init__(self, folder: Path | None, owner: str | None, book: Book | None = None, issued: float = 0.0) -> None:
        self.folder = folder
        self._owner = owner
        self._known: dict[str, tuple[str, str]] = {}
        self._stamp: tuple[object, ...] | None = None
        self._checked = 0.0
        self.digest: str | None = None  # of the book last taken (a Ray replica's), None: the owner's only
        self.issued = float("-inf")
        self._load(force=True)
        if book is not None:
            self.replace(book, issued)

    def replace(self, book: Book, issued: float) -> bool:
        """Take ``book`` (SHA-256 -> [label, role], the owner's included), issued by the kernel at
        ``issued``, as every token known: a Ray replica's book, relayed by the hub. One older
        than the book held is not taken (a hub that lost its state must not bring back a
        revoked token), nor one that is not a valid book (a damaged relay must not lock the
        kernel out)."""
        if not issued >= self.issued:
            return False
        try:
            check_book(book)
        except ValueError as exc:
            print(f"tokens: kept the tokens known before: {exc}", flush=True)
            return False
        self._known = {digest: (label, role) for digest, (label, role) in book.items()}
        self.digest, self.issued = book_digest(book), issued
        return True

    def identify(self, value: str) -> tuple[str, str] | None:
        """``(label, role)`` of the token ``value``, or ``None`` for a token not known."""
        now, digest = time.monotonic(), token_hash(value)
        if self.folder is not None and (now - self._checked >= RECHECK_S or digest not in self._known):
            # every RECHECK_S for a change (a revocation), and at once for a token not known (one just
            # added works on its first request; two stat calls are all an unknown token costs)
            self._checked = now
            self._load()
        return self._known.get(digest)

    @property
    def count(self) -> int:
        return len(self._known)

    def _files(self) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / "token", self.folder / TOKENS_FILE

    def _load(self, force: bool = False) -> None:
        if self.folder is None:
            self._known = {token_hash(self._owner): (OWNER, "admin")} if self._owner else {}
            return
        stamp = tuple(_stat(path) for path in self._files())
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp  # a damaged file is said once per change, not per request
        owner_file, _ = self._files()
        try:
            owner = owner_file.read_text().strip() if owner_file.exists() else self._owner
        except OSError:
            owner = self._owner
        try:
            known = {e.sha256: (e.label, e.role) for e in read_entries(self.folder)}
        except ValueError as exc:  # the tokens read before stay; the owner's always answers
            print(f"tokens: kept the tokens read before: {exc}", flush=True)
            known = {h: who for h, who in self._known.items() if who[0] != OWNER}
        if owner:
            known[token_hash(owner)] = (OWNER, "admin")
        self._known = known


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
