"""A Ray deployment's experiment as its monitoring hub keeps it: one set of accounts for all
the replicas, and the decisions taken on them.

Every replica serves the champion and the challenger itself (the split is a hash of the
request id, so it does not matter which replica answers) and forwards its request-log
records of the experiment to the hub, which counts them as a restart replays them
(:meth:`ExperimentBook.ingest`). Once a second the hub asks the book for a verdict; a decision
moves ``@champion`` (the gated ``nbdeploy promote``, as on a local server), writes the spec
and redeploys the replicas by a rolling update (``ray_ctl deploy``, a process of its own), so
that no request is dropped and the replicas serve what the spec says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.serving.decisions import move_alias, persist, tag_version
from nbdeploy.serving.experiment_book import ExperimentBook, last_events, note_event

__all__ = ["ExperimentMethods", "HubExperiment"]


class HubExperiment:
    """The experiment the replicas run now, counted over all of them."""

    def __init__(self, folder: Path, columns: Sequence[str], alerts: AlertBook) -> None:
        self.folder, self.columns, self.alerts = folder, list(columns), alerts
        self.book: ExperimentBook | None = None
        self.events: deque[dict[str, Any]] = deque(last_events(folder), maxlen=50)
        self.lock = threading.Lock()
        self.deciding = False
        self.rebuilt_shadows: set[str] = set()  # the shadow's records read from the logs at the hub's start
        self.rebuilt_at = 0.0

    def configure(self, doc: dict[str, Any] | None, task: str | None, profile: dict[str, Any] | None) -> bool:
        """Follow the experiment of the spec the replicas were deployed with (``None``: none);
        True when a new one begins (its accounts start empty)."""
        spec = ExperimentSpec.from_dict(doc) if doc else None
        with self.lock:
            if spec is None:
                self.book = None
                return False
            if self.book is not None and self.book.spec.started == spec.started:
                return False
            self.book = ExperimentBook(spec, self.columns, task, profile)
            return True

    def ingest(self, records: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            if self.book is not None:
                self.book.ingest(records)

    def ingest_logged(self, records: list[dict[str, Any]]) -> None:
        """Records read from a replica's log as the hub starts. The shadow's among them may also
        be sent by the actor that wrote them (serving/ray_follower.py): that send is not counted."""
        self.rebuilt_at = time.time()
        self.rebuilt_shadows.update(str(r.get("id")) for r in records if r.get("shadow") is True)
        self.ingest(records)

    def ingest_sent(self, records: list[dict[str, Any]]) -> None:
        """A shadow's records, sent by the actor that reads a replica's log."""
        if self.rebuilt_shadows:  # those already read from the logs are not counted twice (for 10 minutes)
            if time.time() > self.rebuilt_at + 600:
                self.rebuilt_shadows = set()
            records = [r for r in records if str(r.get("id")) not in self.rebuilt_shadows]
        self.ingest(records)

    def label(self, rid: str, labels: list[Any]) -> bool:
        with self.lock:
            return self.book is not None and self.book.arms.label(rid, labels)

    def state(self) -> dict[str, Any]:
        """What ``GET /experiment`` answers on every replica."""
        with self.lock:
            book = self.book
        state = book.state() if book is not None else None
        if state is not None:
            state["deciding"] = self.deciding
        return {"experiment": state, "events": list(self.events)}

    def decide(self) -> None:
        """Look at the rules once (the hub's thread calls this every second) and act on a verdict."""
        with self.lock:
            book = self.book
            if book is None or self.deciding:
                return
        book.distributions.fold()
        verdict = book.verdict()
        if verdict is None:
            return
        self.deciding = True
        try:
            self._act(book, *verdict)
        finally:
            self.deciding = False

    def _act(self, book: ExperimentBook, action: str, why: str) -> None:
        spec, c = book.spec, book.spec.challenger
        event = {"ts": time.time(), "action": action, "challenger": c.ref, "version": c.version, "why": why}
        if action == "promote" and (refused := move_alias(spec)) is not None:
            book.promotion_refused = refused
            self._note({**event, "action": "promotion refused", "why": refused}, spec.webhook)
            tag_version(spec, "promotion_refused", refused)
            return
        persist(self.folder, spec, action == "promote")  # the spec first: a replica Ray restarts serves it
        with self.lock:
            if self.book is book:
                self.book = None
        self._note(event, spec.webhook)
        print(f"experiment: {action} {c.ref}: {why}", flush=True)
        failed = redeploy(self.folder)  # the replicas replaced one by one: no request dropped
        if failed is not None:
            print(f"experiment: the rolling update after the {action} failed: {failed}", flush=True)
            self._note({**event, "ts": time.time(), "action": f"{action}: rolling update failed", "why": failed}, None)
        tag_version(spec, "promoted" if action == "promote" else "rolled_back", why)

    def _note(self, event: dict[str, Any], webhook: str | None) -> None:
        self.events.append(event)
        note_event(self.folder, self.alerts, event, webhook)


def redeploy(folder: Path) -> str | None:
    """``ray_ctl deploy FOLDER`` against this cluster: ``None``, or its error sentence."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "nbdeploy.serving.ray_ctl", "deploy", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        return "ray_ctl deploy did not finish within 300 s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"ray_ctl deploy exited with code {done.returncode}"


class ExperimentMethods:
    """The hub's methods of its experiment, called by the replicas and their shadows' actors."""

    experiment: HubExperiment

    def experiment_state(self) -> dict[str, Any]:
        """``GET /experiment`` of any replica: the experiment over all of them."""
        return self.experiment.state()

    def shadow_records(self, records: list[dict[str, Any]]) -> None:
        """A shadow's records, sent by the actor that reads a replica's log (serving/ray_follower.py)."""
        self.experiment.ingest_sent(records)
