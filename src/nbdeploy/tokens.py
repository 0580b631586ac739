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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbdeploy._files import flocked, write_atomic

__all__ = [
    "MAX_TOKENS", "OWNER", "ROLES", "TOKENS_FILE", "TokenEntry", "TokenError", "add_token", "holds", "new_value",
    "read_entries", "revoke_token", "rotate_token", "token_hash",
]  # fmt: skip

TOKENS_FILE = "tokens.json"
OWNER = "owner"  # the label of the ``token`` file's token
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

    return (isinstance(e.label, str) and isinstance(e.role, str) and e.role in ROLES and isinstance(e.sha256, str)
            and len(e.sha256) == 64 and number(e.created) and (e.rotated is None or number(e.rotated)))  # fmt: skip


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


def add_token(folder: Path, name: str, role: str, label: str | None = None) -> tuple[str, str]:
    """A new token of ``role`` in ``folder/tokens.json``: ``(label, value)``."""
    if role not in ROLES:
        raise TokenError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
    value = new_value()
    with _locked(folder):
        entries = read_entries(folder)
        taken = {e.label for e in entries}
        label = label or next(f"{role}-{n}" for n in range(1, MAX_TOKENS + 2) if f"{role}-{n}" not in taken)
        if not isinstance(label, str) or not LABEL.fullmatch(label) or label == OWNER:
            raise TokenError(
                f"Invalid token label {str(label)[:80]!r}: use up to 64 letters, digits, '.', '_' or '-' (and not "
                "'owner')."
            )
        if label in taken:
            raise TokenError(f"A token labelled {label!r} exists: revoke or rotate it, or choose another label.")
        if len(entries) >= MAX_TOKENS:
            raise TokenError(f"Deployment {name!r} has {MAX_TOKENS} tokens: revoke some first.")
        _save(folder, [*entries, TokenEntry.make(label, role, value)])
    return label, value


def revoke_token(folder: Path, name: str, label: str) -> None:
    if label == OWNER:
        raise TokenError("The owner token is the kernel's own: rotate it (--rotate owner) instead.")
    with _locked(folder):
        entries = read_entries(folder)
        kept = [e for e in entries if e.label != label]
        if len(kept) == len(entries):
            raise TokenError(f"Deployment {name!r} has no token labelled {str(label)[:80]!r}.")
        _save(folder, kept)


def rotate_token(folder: Path, name: str, label: str) -> tuple[str, str]:
    """A new value for the token ``label`` (``owner``: the ``token`` file's): ``(role, value)``."""
    value = new_value()
    with _locked(folder):
        if label == OWNER:
            write_atomic(folder / "token", value, private=True)
            return "admin", value
        entries = read_entries(folder)
        match = [e for e in entries if e.label == label]
        if not match:
            raise TokenError(f"Deployment {name!r} has no token labelled {str(label)[:80]!r}.")
        rotated = TokenEntry(label, match[0].role, token_hash(value), match[0].created, rotated=time.time())
        _save(folder, [rotated if e.label == label else e for e in entries])
    return match[0].role, value
