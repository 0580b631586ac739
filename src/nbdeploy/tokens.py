"""Bearer tokens with roles: what each role may call, and how tokens are kept on disk.

A deployment folder holds two token files, both owner-only:

- ``token``: the *owner* token, in clear. It is the kernel's own credential (the
  notebook, the CLI and the retraining job call the server with it), role ``admin``.
- ``tokens.json``: the tokens handed to other systems, each with a label and a role,
  kept as SHA-256 hashes only. A token is 32 random bytes, so a fast hash is enough: there
  is no password to guess from it, and the server can check one per request.

The server reads both files again when either changes (``serving/tokens.py``), so a token
added, revoked or rotated takes effect without a restart.

>>> ROLES["observe"] >= ROLES["predict"]
True
>>> holds("feedback", "predict")
False
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbdeploy._files import flocked, write_atomic

__all__ = [
    "MAX_TOKENS", "OWNER", "ROLES", "TOKENS_FILE", "Book", "Publish", "TokenEntry", "TokenError", "add_token", "book",
    "book_digest", "check_book", "holds", "new_value", "read_entries", "revoke_token", "rotate_token", "token_hash",
]  # fmt: skip

TOKENS_FILE = "tokens.json"
OWNER = "owner"  # the label of the ``token`` file's token
OWNER_NEXT = "owner-next"  # a Ray deployment's new owner token while it is rotated: both are accepted
MAX_TOKENS = 100
LABEL = re.compile(r"^[A-Za-z0-9][\w.\-]{0,63}$")

#: What each role may call besides the public routes (``/ping``, ``/health``, ``/version``):
#: the set of role names whose routes it reaches.
ROLES: dict[str, frozenset[str]] = {
    "predict": frozenset({"predict"}),  # /invocations
    "observe": frozenset({"predict", "observe"}),  # + /info, /metrics, /monitor, /experiment
    "feedback": frozenset({"feedback"}),  # /feedback only: a labelling app
    "admin": frozenset({"predict", "observe", "feedback", "admin"}),  # + /admin/*, token changes
}


#: What a Ray deployment's replicas accept (they read no token file): SHA-256 -> [label, role],
#: the owner's included. The kernel sends it through the monitoring hub on every change.
Book = dict[str, list[str]]
#: Told the token book a change makes, before the change is saved; raising keeps the change from being made.
Publish = Callable[[Book], None]


def book(entries: list[TokenEntry], owner: str | None) -> Book:
    """The token book of ``entries`` and the owner token ``owner``."""
    known = {e.sha256: [e.label, e.role] for e in entries}
    if owner:
        known[token_hash(owner)] = [OWNER, "admin"]
    return known


def book_digest(known: Book | None) -> str | None:
    """A short name of a book's content: a replica asks for the book when its own differs."""
    if known is None:
        return None
    return hashlib.sha256(json.dumps(known, sort_keys=True).encode()).hexdigest()[:16]


def check_book(doc: Any) -> Book:
    """``doc`` as a token book, or a ``ValueError`` naming what is wrong with it (it came over HTTP)."""
    if not isinstance(doc, dict) or not 1 <= len(doc) <= MAX_TOKENS + 1:
        raise ValueError(f"'book' must be an object of 1 to {MAX_TOKENS + 1} tokens")
    for digest, who in doc.items():
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) and isinstance(who, list)
                and len(who) == 2 and all(isinstance(x, str) for x in who) and who[1] in ROLES):  # fmt: skip
            raise ValueError("each entry of 'book' must be a SHA-256 in hex -> [label, role]")
    if [who for who in doc.values() if who[0] == OWNER] != [[OWNER, "admin"]]:
        raise ValueError("'book' must hold the owner token once, with the role admin")
    if [who for who in doc.values() if who[0] == OWNER_NEXT] not in ([], [[OWNER_NEXT, "admin"]]):
        raise ValueError("'book' may hold one owner-next token, with the role admin")
    return doc


def holds(role: str, needed: str) -> bool:
    """Whether a token of ``role`` may call a route that needs ``needed``."""
    return needed in ROLES.get(role, frozenset())


def new_value() -> str:
    """A fresh token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(value: str) -> str:
    return hashlib.sha256(value.strip().encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One token of ``tokens.json``: never its value."""

    label: str
    role: str
    sha256: str
    created: float
    rotated: float | None = None

    @classmethod
    def make(cls, label: str, role: str, value: str) -> TokenEntry:
        return cls(label=label, role=role, sha256=token_hash(value), created=time.time())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_entries(folder: Path) -> list[TokenEntry]:
    """The entries of ``folder/tokens.json`` (none when it does not exist). A damaged file is a
    ``ValueError`` naming it: a server must not guess which tokens a file meant to allow."""
    path = folder / TOKENS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__})") from None
    try:
        entries = [TokenEntry(**{k: e[k] for k in ("label", "role", "sha256", "created")}, rotated=e.get("rotated"))
                   for e in doc["tokens"]]  # fmt: skip
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a token list ({type(exc).__name__})") from None
    for entry in entries:
        if not _valid(entry):
            raise ValueError(f"{path} holds a token entry that is not valid (label {str(entry.label)[:64]!r})")
    return entries


def _valid(e: TokenEntry) -> bool:
    def number(x: object) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return (isinstance(e.label, str) and bool(LABEL.fullmatch(e.label)) and e.label not in (OWNER, OWNER_NEXT)
            and isinstance(e.role, str) and e.role in ROLES and isinstance(e.sha256, str)
            and bool(re.fullmatch(r"[0-9a-f]{64}", e.sha256)) and number(e.created)
            and (e.rotated is None or number(e.rotated)))  # fmt: skip


def entries_text(entries: list[TokenEntry]) -> str:
    return json.dumps({"tokens": [e.to_dict() for e in entries]}, indent=2)


class TokenError(ValueError):
    """A change of tokens that cannot be made: one sentence (the kernel's ``InvalidInputError``,
    the server's 400)."""


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """``folder/.tokens.lock``: the kernel and the server (``/admin/tokens``) change the files in
    turn. A lock of its own: the deployment's ``.lock`` is held by a kernel waiting on the server."""
    with flocked(folder / ".tokens.lock"):
        yield


def _save(folder: Path, entries: list[TokenEntry]) -> None:
    write_atomic(folder / TOKENS_FILE, entries_text(entries), private=True)


def _owner(folder: Path) -> str | None:
    path = folder / "token"
    return path.read_text().strip() if path.exists() else None


def add_token(
    folder: Path, name: str, role: str, label: str | None = None, publish: Publish | None = None
) -> tuple[str, str]:
    """A new token of ``role`` in ``folder/tokens.json``: ``(label, value)``. ``publish`` is told
    the new token book first (a Ray deployment's replicas); if it raises, nothing changes."""
    if role not in ROLES:
        raise TokenError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
    value = new_value()
    with _locked(folder):
        entries = read_entries(folder)
        taken = {e.label for e in entries}
        label = label or next(f"{role}-{n}" for n in range(1, MAX_TOKENS + 2) if f"{role}-{n}" not in taken)
        if not isinstance(label, str) or not LABEL.fullmatch(label) or label in (OWNER, OWNER_NEXT):
            raise TokenError(
                f"Invalid token label {str(label)[:80]!r}: use up to 64 letters, digits, '.', '_' or '-' (and not "
                "'owner' or 'owner-next')."
            )
        if label in taken:
            raise TokenError(f"A token labelled {label!r} exists: revoke or rotate it, or choose another label.")
        if len(entries) >= MAX_TOKENS:
            raise TokenError(f"Deployment {name!r} has {MAX_TOKENS} tokens: revoke some first.")
        after = [*entries, TokenEntry.make(label, role, value)]
        if publish is not None:
            publish(book(after, _owner(folder)))
        _save(folder, after)
    return label, value


def _rotate_owner(folder: Path, value: str, publish: Publish | None) -> str:
    """The owner token's new ``value``. On Ray in two steps, so that an interruption anywhere
    locks the kernel out of no replica: first both tokens are accepted (sent with the old one,
    still in the file), then the file changes, then the old one is refused (sent with the new)."""
    entries = read_entries(folder)
    if publish is not None:
        both = book(entries, _owner(folder))
        both[token_hash(value)] = [OWNER_NEXT, "admin"]
        publish(both)
    write_atomic(folder / "token", value, private=True)
    if publish is not None:
        try:
            publish(book(entries, value))
        except Exception as exc:
            raise TokenError(f"The owner token is rotated, but the replicas could not be told to refuse the old one "
                             f"({exc}): run --rotate owner again.") from None  # fmt: skip
    return value


def revoke_token(folder: Path, name: str, label: str, publish: Publish | None = None) -> None:
    if label == OWNER:
        raise TokenError("The owner token is the kernel's own: rotate it (--rotate owner) instead.")
    with _locked(folder):
        entries = read_entries(folder)
        kept = [e for e in entries if e.label != label]
        if len(kept) == len(entries):
            raise TokenError(f"Deployment {name!r} has no token labelled {str(label)[:80]!r}.")
        if publish is not None:
            publish(book(kept, _owner(folder)))
        _save(folder, kept)


def rotate_token(folder: Path, name: str, label: str, publish: Publish | None = None) -> tuple[str, str]:
    """A new value for the token ``label`` (``owner``: the ``token`` file's): ``(role, value)``."""
    value = new_value()
    with _locked(folder):
        if label == OWNER:
            return "admin", _rotate_owner(folder, value, publish)
        entries = read_entries(folder)
        match = [e for e in entries if e.label == label]
        if not match:
            raise TokenError(f"Deployment {name!r} has no token labelled {str(label)[:80]!r}.")
        rotated = TokenEntry(label, match[0].role, token_hash(value), match[0].created, rotated=time.time())
        after = [rotated if e.label == label else e for e in entries]
        if publish is not None:
            publish(book(after, _owner(folder)))
        _save(folder, after)
    return match[0].role, value
