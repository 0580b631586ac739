"""A shadow whose process reads the request log (:mod:`~nbdeploy.serving.shadow_follower`), as
the server sees it: the same face as :class:`~nbdeploy.serving.variants.Experiment`, with
nothing done per request but a count.

The process is spawned like a challenger's (:mod:`~nbdeploy.serving.model_process`: it dies
with the server, runs under ``SCHED_IDLE``), and answers once its model is loaded and the
log replayed. Its accounts and verdict are read from ``shadow-state.json`` once a second
(:meth:`fold`, off the event loop). To stop, it is told to, takes a last look at the log (so
every request answered before the end has its shadow record) and writes its last state. If
it dies while the server lives it is started again, once; its replay picks up where it
stopped.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.serving.arms import MAX_WAITING
from nbdeploy.serving.batching import Batcher
from nbdeploy.serving.experiment_book import ExperimentBook
from nbdeploy.serving.model_process import portable, spawn_worker, start_worker, stop_worker
from nbdeploy.serving.protocol import Parsed
from nbdeploy.serving.routing import Split
from nbdeploy.serving.shadow_follower import LOOK_S, STATE_FILE, Follower

__all__ = ["LOOK_S", "STATE_S", "FollowedShadow", "look_safely"]

STATE_S = 5.0  # the accounts written at most this often while requests keep coming
_STOP_S = 60.0  # for its last look; then it is killed (a restart's replay finishes what it left)


def _follow(conn: Connection, parent: int, args: dict[str, Any]) -> None:
    """The shadow's process: load, replay, then look at the log every :data:`LOOK_S` until told to stop."""
    start_worker(parent, idle=True)
    from nbdeploy.serving.loader import load

    try:
        folder = Path(args["folder"])
        follower = Follower(load(args["path"]), ExperimentSpec.from_dict(args["spec"]), tuple(args["names"]), folder,
                            args["log_rows"], args["task"], args["profile"])  # fmt: skip
        follower.since = args["since"]
        replayed = follower.replay()
        follower.write_state()
    except BaseException as exc:
        conn.send(("error", portable(exc)))
        return
    gc.freeze()  # the model, the libraries and the replayed accounts stay: collections need not walk them
    conn.send(("ok", replayed))
    written, unwritten = time.monotonic(), False
    next_look = time.monotonic() + LOOK_S
    while not conn.poll(max(0.0, next_look - time.monotonic())):  # a message, or the server gone: a last look
        next_look = time.monotonic() + LOOK_S
        unwritten = look_safely(follower) > 0 or unwritten
        # while requests keep coming the accounts are written every STATE_S (their summary costs
        # the process about as much as its predictions), and at the first look that finds none
        if unwritten and (time.monotonic() - written >= STATE_S or not follower.read_last):
            _write_state(follower)
            written, unwritten = time.monotonic(), False
    look_safely(follower, paced=False)  # the last: flat out
    _write_state(follower, paced=False)
    try:
        conn.send(("stopped", None))
    except OSError:
        pass


def look_safely(follower: Follower, paced: bool = True) -> int:
    """``follower.look``; a failure is said and the next look tries again."""
    try:
        return follower.look(paced)
    except Exception as exc:  # a bug or a full disk must not end the shadow: the next look tries again
        print(f"experiment: the shadow's look at the log failed: {type(exc).__name__}: {exc}", flush=True)
        return 1  # what it did take in is written with the next state


def _write_state(follower: Follower, paced: bool = True) -> None:
    try:
        follower.write_state(paced)
    except Exception as exc:
        print(f"experiment: the shadow's accounts were not written: {type(exc).__name__}: {exc}", flush=True)


class FollowedShadow:
    """A shadow experiment whose challenger reads the log in ``folder`` in a process of its own."""

    def __init__(self, spec: ExperimentSpec, path: str, names: tuple[str, ...], folder: Path, log_rows: int,
                 task: str | None = None, profile: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.spec, self.split, self.folder = spec, Split.of(spec), folder
        self.model = self  # the process whose CPU and memory are the challenger's (``pid``)
        self.methods = frozenset({"predict"})
        self.deciding = False
        self.answering: Any = lambda: 0
        self._empty = ExperimentBook(spec, names, task, profile)  # what the state is before the first look
        self._args = {"path": path, "spec": spec.to_dict(), "names": list(names), "folder": str(folder),
                      "log_rows": log_rows, "task": task, "profile": profile, "since": time.time()}  # fmt: skip
        self._proc: Any = None
        self._conn: Connection | None = None
        self._sent = 0  # requests mirrored since this server started (the process counts those it answered)
        self._doc: dict[str, Any] | None = None  # the last state the process wrote
        self._stamp = 0  # its file's modification time, when last read
        self._own: int | None = None  # ... when last read and found this experiment's
        self._refused: str | None = None
        self._restarted = False
        self._stopping = False
        self.failure: str | None = None  # why the shadow no longer predicts
        self._lock = threading.Lock()  # fold() runs on the decisions' thread and on /experiment's
        self.replayed = 0
        self._answered: OrderedDict[str, None] = OrderedDict()  # ids of the requests answered, as Arms keeps them

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def load(self, timeout: float = 300.0) -> None:
        """Spawn the process; return once it has loaded the model and replayed the log."""
        self._proc, self._conn, self.replayed = spawn_worker(_follow, (self._args,), timeout, "the shadow")

    # the face of an Experiment ----------------------------------------------------------

    def start(self) -> None:
        """Nothing to start on the event loop: the process reads the log on its own."""

    def observe(self, variant: str, status: int, failed: bool, latency_ms: float, rid: str, predictions: Any,
                *args: Any, **kwargs: Any) -> None:  # fmt: skip
        """The process counts each request from its log record; kept here is only its id, so
        that ``/feedback`` knows it (without monitoring no window does)."""
        if predictions is not None:
            self._answered[rid] = None
            if len(self._answered) > MAX_WAITING:
                self._answered.popitem(last=False)

    def mirror(self, parsed: Parsed, rid: str, champion: list[Any]) -> None:
        self._sent += 1  # the process finds the request in the log

    def quiet(self) -> None:
        pass

    def flush(self) -> None:
        pass

    async def drop_mirrors(self) -> None:
        pass  # nothing is held in the server: its process reads the log

    def replay(self, records: Iterable[dict[str, Any]]) -> int:
        """The process replayed the log as it started: the records it counted."""
        return self.replayed

    def add_labels(self, rid: str, labels: list[Any]) -> bool:
        """The process reads the labels from the feedback log; whether the request is one of
        the experiment's that this server answered."""
        return rid in self._answered

    def refuse_promotion(self, why: str) -> None:
        self._refused = why

    def fold(self) -> None:
        """Read the process's last state (off the event loop); start it again if it died."""
        with self._lock:
            proc = self._proc
            if proc is not None and not proc.is_alive() and not self._stopping:
                self._kill()
                self._restart(proc.exitcode)
            try:
                path = self.folder / STATE_FILE
                stamp = os.stat(path).st_mtime_ns
                if stamp != self._stamp:  # read (in the server's process) only when it changed
                    doc, self._stamp = json.loads(path.read_text()), stamp
                    if doc["state"]["started"] == self.spec.started:  # not an experiment ended before
                        self._doc, self._own = doc, stamp
            except (OSError, ValueError, KeyError, TypeError):
                pass  # not written yet: the last one stands

    def _restart(self, exitcode: int | None) -> None:
        """The process died while the server lives: started again once (its replay picks up
        where it stopped); a second death, or a failed start, is shown in the state."""
        if self._restarted:
            self.failure = self.failure or f"the shadow's process died (exit code {exitcode})"
            return
        self._restarted = True
        print(f"experiment: the shadow's process died (exit code {exitcode}); starting it again", flush=True)
        try:
            self.load()
        except Exception as exc:
            self.failure = f"the shadow's process could not be started again: {type(exc).__name__}: {exc}"
            print(f"experiment: {self.failure}", flush=True)

    def verdict(self) -> tuple[str, str] | None:
        verdict = self._doc.get("verdict") if self._doc else None
        if not verdict or (verdict[0] == "promote" and self._refused is not None):
            return None
        return verdict[0], verdict[1]

    def state(self) -> dict[str, Any]:
        """What ``GET /experiment`` shows: the process's accounts as of its last look (a second ago at most)."""
        self.fold()
        doc = self._doc
        state = dict(doc["state"]) if doc else self._empty.state()  # a copy: the cached one stays as read
        shadowed = doc.get("shadowed_since", 0) if doc else 0
        state["promotion_refused"] = self._refused
        state["shadow_failure"] = self.failure
        state["mirrors_in_flight"] = max(0, self._sent - shadowed)
        return state

    async def close(self, fallback: Batcher) -> None:
        """Stop the process after its last look at the log (every request answered so far
        gets its shadow record), then read its last state."""
        await asyncio.to_thread(self._stop)

    def stop(self) -> None:
        self._stop()

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True  # fold() starts no new process from now on
        conn, proc = self._conn, self._proc
        if conn is not None and proc is not None and proc.is_alive():
            try:
                conn.send("stop")
                conn.poll(_STOP_S)
            except OSError:
                pass
        self._kill()
        self.fold()  # its last state stays readable here; the file goes with the experiment
        if self._own is not None and self._own == _stamp(self.folder / STATE_FILE):  # ours, not a later one's
            (self.folder / STATE_FILE).unlink(missing_ok=True)

    def _kill(self) -> None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        stop_worker(conn, proc)


def _stamp(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
