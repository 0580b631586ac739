"""Tokens of a deployment with roles, added, listed, revoked and rotated while it serves.

>>> t = d.add_token("predict", label="app-x")   # doctest: +SKIP
>>> t.value                                      # doctest: +SKIP
>>> d.rotate_token("app-x"); d.revoke_token("app-x")   # doctest: +SKIP

``tokens.json`` keeps each token's label, role and SHA-256 (see :mod:`nbdeploy.tokens`); a
new token's value exists only in what :meth:`add_token` returns (and the file named by
``out``). The running server reads the files again within a second. Every change is a line
in the audit trail (``audit.jsonl``) naming the label, never the value.

A Ray deployment's replicas read no file: each change is first sent to its monitoring hub
(the new token book: hashes, labels, roles), which relays it to every replica within a
second; if the hub cannot take it, nothing changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbdeploy import tokens
from nbdeploy._files import write_atomic
from nbdeploy.deployments import events
from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError
from nbdeploy.reprs import card, esc, fit, table
from nbdeploy.tokens import OWNER, ROLES, Book, Publish, TokenEntry, read_entries

__all__ = ["NewToken", "TokenKeeping", "TokenList"]

@dataclass(frozen=True)
class NewToken:
    """A token just made: its value is in ``.value`` and never in what is displayed (a cell's
    output is saved with the notebook)."""

    deployment: str
    label: str
    role: str
    value: str = field(repr=False)
    written_to: str | None = None
    unconfirmed: str = ""  # on Ray: said when not every replica confirmed the change in time

    def __repr__(self) -> str:
        where = (f"its value is in {self.written_to} (owner-only)" if self.written_to
                 else "its value: .value of this object (shown nowhere else; nbdeploy keeps its hash)")  # fmt: skip
        return fit(f"Token {self.label!r} of {self.deployment} (role {self.role}): {where}.{self.unconfirmed}")

    def _repr_html_(self) -> str:
        return card(f"Token {esc(self.label)}", f"<p>{esc(repr(self))}</p>")


@dataclass(frozen=True)
class TokenList:
    """What ``%deploy token NAME --list`` shows: labels and roles, never values."""

    deployment: str
    entries: list[TokenEntry]
    unconfirmed: str = ""

    def rows(self) -> list[list[str]]:
        rows = [[OWNER, "admin", "the token file (the kernel's own)", ""]]
        return rows + [[e.label, e.role, _when(e.created), _when(e.rotated)] for e in self.entries]

    def __repr__(self) -> str:
        lines = [f"Tokens of {self.deployment}:"]
        lines += [f"  {label:<20} {role:<9} created {created}" + (f", rotated {rotated}" if rotated else "")
                  for label, role, created, rotated in self.rows()]  # fmt: skip
        return fit("\n".join(lines) + self.unconfirmed)

    def _repr_html_(self) -> str:
        return card(f"Tokens of {esc(self.deployment)}", table(["label", "role", "created", "rotated"], self.rows()))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


class TokenKeeping(HandleParts):
    """Token methods of a deployment."""

    def tokens(self) -> TokenList:
        """The deployment's tokens: the owner's and those added, with labels and roles."""
        try:
            return TokenList(self.name, read_entries(self.path))
        except ValueError as exc:
            raise DeploymentError(f"The tokens of {self.name!r} cannot be read: {exc}.") from None

    def add_token(self, role: str, label: str | None = None, out: str | Path | None = None) -> NewToken:
        """A new token of ``role`` (``predict``, ``observe``, ``feedback`` or ``admin``), accepted
        by the running server on its first request; ``out`` also writes its value to that file."""
        if role not in ROLES:
            raise InvalidInputError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.", docs=Docs.TOKENS)
        path = _out_path(out)
        label, value = self._change(tokens.add_token, role, label)
        events.record(self.path, "token added", None, label=label, role=role)
        return NewToken(self.name, label, role, value, _write_out(path, value), self._unconfirmed)

    def revoke_token(self, label: str) -> TokenList:
        """Remove a token; the server refuses it within a second."""
        self._change(tokens.revoke_token, label)
        events.record(self.path, "token revoked", None, label=label)
        return TokenList(self.name, self.tokens().entries, self._unconfirmed)

    def rotate_token(self, label: str, out: str | Path | None = None) -> NewToken:
        """A new value for the token ``label`` (same role); the old value is refused within a
        second. ``owner`` rotates the kernel's own token (the ``token`` file)."""
        path = _out_path(out)
        role, value = self._change(tokens.rotate_token, label)
        events.record(self.path, "token rotated", None, label=label, role=role)
        return NewToken(self.name, label, role, value, _write_out(path, value), self._unconfirmed)

    def _change(self, change: Any, *args: Any) -> Any:
        """One change of the token files (``nbdeploy.tokens``), its refusals as one sentence."""
        self._unconfirmed = ""
        try:
            return change(self.path, self.name, *args, publish=self._publish())
        except tokens.TokenError as exc:
            raise InvalidInputError(str(exc), docs=Docs.TOKENS) from None
        except ValueError as exc:  # the file is damaged
            raise DeploymentError(f"The tokens of {self.name!r} cannot be read: {exc}.") from None

    _unconfirmed = ""

    def _publish(self) -> Publish | None:
        """For a running Ray deployment: the change's token book sent to the replicas (through
        the hub) before it is saved, with the owner token in the file then. A stopped one's
        replicas take the files' book when they are next deployed."""
        if self.spec.ray is None or not self.deployed:
            return None

        def publish(book: Book) -> None:
            body = {"action": "book", "book": book, "issued": time.time()}
            try:  # the replica may wait for the hub 20 s, then 5 s for the replicas, then 20 s more
                answer = self._request("POST", "/admin/tokens", timeout=90, json=body).json()
            except DeploymentError as exc:
                raise DeploymentError(
                    f"The change was not saved: the replicas of {self.name!r} could not be told. If the hub took it "
                    f"before the error, run the same command again to settle them. {exc}"
                ) from None
            if not answer.get("every_replica"):
                self._unconfirmed = (" Not every Ray replica confirmed the change within 5 s: one that cannot "
                                     "reach its monitoring hub keeps the tokens it had.")  # fmt: skip

        return publish


def _out_path(out: str | Path | None) -> Path | None:
    """Where a new token's value goes, checked before the token exists (a value written nowhere
    would be a token nobody has)."""
    if out is None:
        return None
    path = Path(out).expanduser().absolute()
    if path.is_dir():
        raise InvalidInputError(f"Invalid --out {str(out)!r}: it is a folder; name a file.")
    if not path.parent.is_dir():
        raise InvalidInputError(f"Invalid --out {str(out)!r}: the folder {path.parent} does not exist.")
    return path


def _write_out(path: Path | None, value: str) -> str | None:
    if path is None:
        return None
    write_atomic(path, value + "\n", private=True)
    return str(path)
