"""Erasing a person's records: ``%deploy forget NAME --ids ... | --where "col == value"``.

>>> d.forget(ids=["r-17", "r-18"])             # doctest: +SKIP
>>> d.forget(where="email == 'ann@example.org'")  # doctest: +SKIP

A running server removes the records itself (``POST /admin/forget``: it is the one
appending to the logs, and it goes on serving meanwhile); on Ray each replica does it for its
own log and the hub for the labels (``serving/hub_forget.py``). A stopped or dead
deployment's files are filtered here, under the deployment's lock (a Ray deployment's: the
logs in its folder on this machine). Either way every file of the request
log and of the feedback log is read, rotated ones included, and the audit trail records
that it happened: how many, by whom, by ids or by which column, never the value sought
(that would keep what was erased).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbdeploy._files import flocked
from nbdeploy.deployments import events, processes
from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.log_files import LOGS_LOCK, filter_file, not_of, swap_in, sweep
from nbdeploy.model_entry import read_signature
from nbdeploy.monitoring.replay import iter_records, log_files
from nbdeploy.privacy import LogPrivacy, read_key

__all__ = ["Forgetting", "parse_where"]

MAX_IDS = 100_000
MAX_WHERE = 10_000  # characters: a value sought, not a document
_WHERE = re.compile(r"^\s*(`[^`]+`|\"[^\"]+\"|'[^']+'|[\w.\-]+)\s*==\s*(.+?)\s*$", re.S)


def parse_where(text: str) -> tuple[str, Any]:
    """``("email", "ann@example.org")`` from ``email == 'ann@example.org'``; a column with spaces
    in backticks or quotes; the value a Python literal (a bare word is text)."""
    m = _WHERE.match(text) if len(text) <= MAX_WHERE else None
    if not m:
        raise InvalidInputError(f"Invalid --where {text!r}: write COLUMN == VALUE, for example \"email == 'a@b.org'\".")
    column = m[1][1:-1] if m[1][0] in "`\"'" else m[1]
    try:
        value = ast.literal_eval(m[2])
    except (ValueError, SyntaxError, MemoryError, RecursionError):  # a bare word is text
        value = m[2]
    if not isinstance(value, str | int | float | bool):
        raise InvalidInputError(f"Invalid --where value {m[2]!r}: give one string, number or boolean.")
    return column, value


class Forgetting(HandleParts):
    """The forget method of a deployment."""

    def forget(self, ids: Sequence[Any] | None = None, where: str | None = None) -> dict[str, Any]:
        """Remove the requests with these ids (or with a row where ``where`` holds) from every log
        file, and their labels; ``{"ids": matched, "removed": {"requests": n, "feedback": m}}``."""
        if (ids is None) == (where is None):
            raise InvalidInputError("Give --ids or --where (one of them).")
        if isinstance(ids, str | bytes):
            raise InvalidInputError("Give --ids as a list of request ids, not one string.")
        id_list = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))] if ids is not None else []
        if len(id_list) > MAX_IDS:
            raise InvalidInputError(f"Give at most {MAX_IDS:,} ids per call ({len(id_list):,} given).")
        condition = parse_where(where) if where is not None else None
        spec = self.spec
        result: dict[str, Any] | None = None
        with processes.locked(self.path):  # a serve or start holds it until its server answers
            state = self.state()
            if spec.ray is not None and state == "dead":  # deployed, not answering: replicas may still append
                raise InvalidInputError(f"Deployment {self.name!r} is deployed on Ray but does not answer: stop it "
                                        "first, and forget then removes the records from its files here.",
                                        docs=Docs.ERASING)  # fmt: skip
            if state != "running":  # nobody appends: the files are filtered here
                sweep(self.path)  # a leftover is from a forget killed mid-way
                result = _forget_files(self.path, set(id_list), condition, spec.current.model_path)
        if result is None:  # the server appends to its files: it removes the records itself
            body = {"ids": id_list} if condition is None else {"where": {"column": condition[0], "value": condition[1]}}
            result = self._request("POST", "/admin/forget", json=body, timeout=600).json()
        how = {"ids": len(id_list)} if condition is None else {"where_column": condition[0]}
        events.record(self.path, "forgot", None, **how, matched=result["ids"], **result["removed"])
        return result


def _forget_files(folder: Path, ids: set[str], where: tuple[str, Any] | None, model_path: str) -> dict[str, Any]:
    """What the server does (``serving/forgetting.py``), for a deployment whose server is not running."""
    requests = [folder / "requests.jsonl", *sorted(folder.glob("requests-*.jsonl"))]  # a Ray replica's: its own
    if where is not None:
        inputs, _ = read_signature(Path(model_path))
        names = tuple(str(c.get("name")) for c in inputs or [])
        matcher = LogPrivacy("full", (), read_key(folder), lambda: names)
        ids = {str(r.get("id")) for log in requests for r in iter_records(log) if matcher.matches(r, *where)}
    removed = {"requests": 0, "feedback": 0}
    for log in removed if ids else ():
        for path in [p for base in (requests if log == "requests" else [folder / "feedback.jsonl"])
                     for p in log_files(base)]:  # fmt: skip
            filtered = filter_file(path, not_of(ids))
            if filtered is None:
                continue
            with flocked(folder / LOGS_LOCK):  # an export opening the logs meanwhile sees one or the other
                if swap_in(filtered):
                    removed[log] += filtered.removed
            filtered.discard()
    return {"ids": len(ids), "removed": removed}
