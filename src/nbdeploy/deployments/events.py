"""What happened to a deployment, for the model card and for people: ``events.jsonl``.

One JSON line per change of what a deployment serves — ``served``, ``updated``,
``rolled back``, ``shadow started`` / ``canary started``, ``experiment promoted by hand`` /
``experiment aborted by hand``, ``stopped`` — with its time, the deployment, the version
served (``model``: ``NAME/VERSION``), the one it replaced (``previous``) and an
experiment's challenger (``challenger``). The file is append-only and owner-only (written with one
``write``, so concurrent writers never interleave lines); a torn line is skipped when read.
How an experiment ended on its own (the server's decisions) is in ``experiments.jsonl``
beside it.

>>> record(folder, "updated", entry, previous=old)          # doctest: +SKIP
>>> [e["event"] for e in for_model("cancer/2")]              # doctest: +SKIP
['served', 'updated', 'rolled back']
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy._files import append_private
from nbdeploy._quiet import stderr
from nbdeploy.model_entry import ModelEntry

__all__ = ["EVENTS", "for_model", "read", "record", "record_stop"]

EVENTS = "audit.jsonl"  # the audit trail: the kernel's lines, and the server's (serving/audit.py)
LEGACY_EVENTS = "events.jsonl"  # what folders of earlier versions hold; read, never written
EXPERIMENT_ENDS = "experiments.jsonl"  # written by the server (serving.experiment_book)


def _label(entry: ModelEntry | None) -> str | None:
    return None if entry is None else (entry.resolved or entry.ref)


def record(folder: Path, event: str, entry: ModelEntry | None = None, *, previous: ModelEntry | None = None,
           tag: bool = True, **fields: Any) -> None:  # fmt: skip
    """Append one event, and tag it on the version ``entry`` (unless ``tag`` is false). A line
    or tag that cannot be written (a full disk, the store away) is said on stderr and never
    fails what it records: the change itself happened."""
    doc = {"ts": time.time(), "event": event, "deployment": folder.name, "by": local_user(), "model": _label(entry),
           **fields}  # fmt: skip
    if previous is not None:
        doc["previous"] = _label(previous)
    try:
        append_private(folder / EVENTS, json.dumps(doc, default=str) + "\n")
    except OSError as exc:
        print(f"nbdeploy: the {event!r} event of {folder.name} was not recorded in {EVENTS}: {exc}", file=stderr())
    if entry is not None and entry.version is not None and tag:
        name = (entry.resolved or entry.ref).split("/")[0]
        detail = f"{folder.name} by {doc['by']}" + (f", replacing {_label(previous)}" if previous is not None else "")
        _tagging(name, int(entry.version), f"deployment {event}", detail)


_pending: list[threading.Thread] = []


def _tagging(name: str, version: int, kind: str, detail: str) -> None:
    """The event as a tag of the version (``deployment_<event>``), so that a team's registry
    shows where and by whom a version was deployed. In a thread: a rollback must not wait for
    a tracking server that retries for minutes; a process waits at most 10 s for its tags
    when it exits."""

    def tag() -> None:
        from nbdeploy.registry.history import tag_event

        try:
            tag_event(name, version, kind, detail)
        except Exception as exc:  # the store away: the local trail has it
            print(f"nbdeploy: {kind!r} was not tagged on {name}/{version}: {exc}", file=stderr())

    thread = threading.Thread(target=tag, name="nbdeploy-tag", daemon=True)
    if not _pending:
        atexit.register(wait_for_tags, 10.0)
    _pending.append(thread)
    thread.start()


def wait_for_tags(timeout: float = 10.0) -> None:
    """Wait (up to ``timeout`` seconds in all) for the version tags under way."""
    deadline = time.monotonic() + timeout
    while _pending:
        _pending.pop().join(max(0.0, deadline - time.monotonic()))


def local_user() -> str:
    """Who acts, as the operating system names them (``uid N`` when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return f"uid {os.getuid()}"


def trail(folder: Path) -> list[dict[str, Any]]:
    """The folder's audit trail, oldest first: ``events.jsonl`` of earlier versions, then
    ``audit.jsonl``."""
    return sorted(read(folder / LEGACY_EVENTS) + read(folder / EVENTS), key=lambda d: d["ts"])


def record_stop(deployment: Any) -> None:
    """``stopped``, naming the version served when the spec can still be read (a damaged spec
    must not keep a server from stopping); not for a server whose start failed (nothing was
    recorded as served since the last stop)."""
    last = [e.get("event") for e in trail(deployment.path)[-1:]]
    if not last or last[0] == "stopped":
        return
    try:
        entry: ModelEntry | None = deployment.spec.current
    except Exception:
        entry = None
    record(deployment.path, "stopped", entry, tag=False)  # what stops is the deployment, not a change of version


def read(path: Path) -> list[dict[str, Any]]:
    """The records of one JSON-lines file (monitoring's reader: torn and foreign lines
    skipped), oldest first, keeping those with a time within reason (not Infinity, 1e20 or
    a string)."""
    from nbdeploy.monitoring.replay import read_records

    try:
        records = read_records(path, include_rotated=False)
    except OSError:  # unreadable: no events rather than no card
        return []
    return [doc for doc in records
            if isinstance(ts := doc.get("ts"), int | float) and not isinstance(ts, bool) and 0 < ts < 1e11]  # fmt: skip


#: How the server names an experiment's end in ``experiments.jsonl``, as the card says it.
ENDS = {"promote": "promoted", "rollback": "rolled back", "promotion refused": "promotion refused"}


def for_model(resolved: str, home: Path | None = None) -> list[dict[str, Any]]:
    """Every deployment event naming the version ``NAME/VERSION`` (as the model served, the one
    replaced, or an experiment's challenger), across the deployments under ``home``, oldest
    first; an experiment the server ended on its own comes from ``experiments.jsonl``."""
    name, _, version = resolved.partition("/")
    root = home or config.home()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        for doc in trail(folder):
            named = (doc.get("model"), doc.get("previous"), doc.get("challenger"))
            if isinstance(doc.get("event"), str) and resolved in named:
                found.append(doc)
        for doc in read(folder / EXPERIMENT_ENDS):
            challenger, action = str(doc.get("challenger", "")), doc.get("action")
            if action in ENDS and str(doc.get("version")) == version and challenger.split("/")[0].split("@")[0] == name:
                found.append({"ts": doc["ts"], "event": f"experiment {ENDS[action]}", "deployment": folder.name,
                              "challenger": resolved, "why": str(doc.get("why", ""))})  # fmt: skip
    return sorted(found, key=lambda d: d["ts"])
