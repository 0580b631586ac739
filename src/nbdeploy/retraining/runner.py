"""The job's process: ``python -m nbdeploy.retraining FOLDER/retrain``.

It polls its triggers twice a second and runs one retraining at a time in a thread; a
trigger during a run is queued once (later ones join the queued run's reason, never a run
of their own). ``state.json`` is written before a run starts: the triggers it consumed, the
run in progress. A process that finds a run in progress from a predecessor (killed, or the
machine rebooted) records it as ``interrupted`` and does not run it again.

It stops on SIGTERM (``%deploy stop NAME --job``): a run in progress is recorded as
``stopped`` and its notebook's kernel, which polls its parent, exits with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nbdeploy._files import open_owned, write_atomic
from nbdeploy.deployments.retrain_files import JobFiles
from nbdeploy.errors import NbdeployError
from nbdeploy.retraining.pipeline import ACTING
from nbdeploy.retraining.runs import ENDED, one_run, said
from nbdeploy.retraining.spec import RetrainSpec
from nbdeploy.retraining.triggers import Trigger, Triggers

__all__ = ["Runner", "main"]

POLL_S = 0.5


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """``state.json`` with what a hand or a bad disk made of it dropped: each entry is kept
    only with the type the job writes (a dropped position starts its file afresh)."""
    state: dict[str, Any] = {"runs": int(doc["runs"]) if _number(doc.get("runs")) and doc["runs"] >= 0 else 0}
    if "next_due" in doc and (doc["next_due"] is None or _number(doc["next_due"])):
        state["next_due"] = doc["next_due"]
    for key in ("alerts", "manual"):
        tail = doc.get(key)
        if isinstance(tail, dict) and all(_number(tail.get(k, 0)) for k in ("offset", "last_ts")):
            state[key] = tail
    for key in ("running", "queued"):
        if isinstance(doc.get(key), dict):
            state[key] = doc[key]
    return state


class Runner:
    """The loop of one job process."""

    def __init__(self, files: JobFiles) -> None:
        self.files = files
        self.spec = RetrainSpec.load(files.spec)
        self.state = _clean(files.read_state())
        recorded = max((int(r["run"]) for r in files.runs()), default=0)
        self.state["runs"] = max(self.state["runs"], recorded)  # numbers go on after the recorded ones
        self.triggers = Triggers(self.spec, files.root.parent / "alerts.jsonl", files.manual, self.state)
        self.stopping = threading.Event()
        self.worker: threading.Thread | None = None

    def save(self) -> None:
        write_atomic(self.files.state_file, json.dumps(self.state, default=str))

    def adopt(self) -> None:
        """Take over from a predecessor: its run in progress ended with it."""
        running = self.state.pop("running", None)
        ended = {r["run"] for r in self.files.runs() if "outcome" in r}  # its end written, not yet forgotten
        if isinstance(running, dict) and isinstance(running.get("run"), int) and running["run"] not in ended:
            self.files.append_run({"run": running["run"], "event": "ended", "ended": time.time(),
                                   "outcome": "interrupted", "why": "the job's process ended during this run (killed "
                                   "or crashed); it is not run again"})  # fmt: skip
            said(f"run {running['run']} was interrupted by the end of the previous job process; not run again")
        self.triggers.start(time.time())
        self.save()

    def loop(self) -> None:
        while not self.stopping.wait(POLL_S):
            try:
                self._tick()
            except Exception:  # a damaged file, a full disk: said, and the job goes on polling
                traceback.print_exc(file=sys.stdout)
                self.stopping.wait(5.0)

    def _tick(self) -> None:
        if not self.files.spec.is_file():  # the job (or its deployment's folder) was removed: nothing to do
            said(f"{self.files.spec} is gone: the job ends")
            self.stopping.set()
            return
        if self.worker is not None and not self.worker.is_alive():
            self.worker = None  # its end is recorded: the state forgets it (only this thread writes the state)
            self.state.pop("running", None)
        trigger = self.triggers.poll(time.time())
        busy = self.worker is not None
        if trigger is not None:
            if busy or self.state.get("queued"):
                self._queue(trigger)
            else:
                self._start(trigger)
        elif not busy and self.state.get("queued"):
            queued = self.state.pop("queued")
            self._start(Trigger.from_dict(queued if isinstance(queued, dict) else {}))
        self.save()

    def _queue(self, trigger: Trigger) -> None:
        queued = self.state.get("queued")
        if queued:  # already one queued: this trigger joins it (one run, not a stack)
            merged = Trigger.merge([Trigger.from_dict(queued), trigger])
            self.state["queued"] = {**merged.to_dict(), "joined": int(queued.get("joined", 1)) + 1}
        else:
            self.state["queued"] = trigger.to_dict()
        said(f"queued: {trigger.reason} (a run is in progress)")

    def _start(self, trigger: Trigger) -> None:
        number = int(self.state.get("runs", 0)) + 1
        self.state.update(runs=number, running={"run": number, "trigger": trigger.to_dict(), "started": time.time()})
        try:
            self.save()  # before the run: a successor knows it was started, and never starts it again
        except BaseException:
            self.state.pop("running", None)
            raise
        args = (self.spec, self.files, number, trigger, self.stopping)
        self.worker = threading.Thread(target=one_run, args=args, name=f"retrain-{number}", daemon=True)
        self.worker.start()

    def stop(self) -> None:
        """On SIGTERM: end a run in progress (its notebook's kernel is killed, a change of what is
        served is let finish), record it as stopped if it could not say so itself, then leave."""
        self.stopping.set()
        running = self.state.get("running")
        if self.worker is not None and self.worker.is_alive() and isinstance(running, dict):
            # an update or a promotion under way finishes first (within the 30 s a stop gives this
            # process before SIGKILL); one not yet begun sees the stop and does not begin
            ACTING.acquire(timeout=15)
            _kill_kernels()
            self.worker.join(8.0)  # the run records its own end (the MLflow run included)
            if running.get("run") not in ENDED:
                self.files.append_run({"run": running["run"], "event": "ended", "ended": time.time(),
                                       "outcome": "stopped", "why": "the job was stopped during this run"})  # fmt: skip
        self.state.pop("running", None)
        self.save()


def _kill_kernels() -> None:
    """Kill the notebook's kernel (a child of this process, in a session of its own) with its group."""
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid():
            pid = int(entry.name)
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:  # a kernel leads its own session and group
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)


def main(root: str) -> int:
    files = JobFiles(Path(root).parent)
    lock = os.fdopen(open_owned(files.root / ".lock", os.O_WRONLY | os.O_CREAT), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"nbdeploy: another process runs the job of {files.root.parent.name}; this one ends.", file=sys.stderr)
        return 1
    try:
        runner = Runner(files)
    except NbdeployError as exc:  # a job.json a hand damaged: one sentence, the last line of job.log
        print(f"nbdeploy: {exc}", flush=True)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    write_atomic(files.pid_file, str(os.getpid()))
    runner.adopt()
    said(f"job of {runner.spec.deployment} started (pid {os.getpid()}): {runner.spec.trigger_text}, "
         f"then {runner.spec.action_text}")  # fmt: skip
    runner.loop()
    runner.stop()
    said("job stopped")
    sys.stdout.flush()
    os._exit(0)  # a notebook's kernel client thread may still be waiting: do not wait for it
