"""A deployment's retraining job as files: what ``list``, ``status`` and ``stop`` need of it.

The job itself (``nbdeploy.retraining``) sits above this package; this module only knows
where the job keeps its state and how to tell whether its process runs, so that the
listing, the status card, the panel and ``stop`` can speak of the job without importing it.

``FOLDER/retrain/``: ``job.json`` (what the job was asked to do), ``pid``, ``job.log``,
``state.json`` (triggers consumed, the next scheduled run, the run in progress and the one
queued), ``runs.jsonl`` (one line per run: started, then its end) and ``manual.jsonl``
(runs asked for by hand).

>>> JobFiles(folder).summary()["state"]   # doctest: +SKIP
'running'
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from nbdeploy._files import append_private
from nbdeploy.deployments import processes

__all__ = ["MARKER", "JobFiles", "is_time"]

MARKER = "nbdeploy.retraining"  # the job's module (``python -m nbdeploy.retraining FOLDER/retrain``)


def is_time(value: Any) -> bool:
    """A time the job wrote (seconds since 1970, before about 5138): not a string, NaN or 1e300."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e11


def _entry(value: Any) -> dict[str, Any] | None:
    """A run in progress or queued, as the job writes it (a dict with a trigger), else ``None``."""
    if not isinstance(value, dict):
        return None
    trigger = value.get("trigger") if isinstance(value.get("trigger"), dict) else {}
    return {**value, "trigger": trigger}


class JobFiles:
    """The files of one deployment's retraining job."""

    def __init__(self, deployment_folder: Path) -> None:
        self.root = Path(deployment_folder) / "retrain"
        self.spec = self.root / "job.json"
        self.pid_file = self.root / "pid"
        self.log = self.root / "job.log"
        self.state_file = self.root / "state.json"
        self.runs_file = self.root / "runs.jsonl"
        self.manual = self.root / "manual.jsonl"

    @property
    def exists(self) -> bool:
        return self.spec.is_file()

    def run_folder(self, number: int) -> Path:
        return self.root / "runs" / str(number)

    @property
    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def state(self) -> str | None:
        """``running``, ``dead`` (its pid file names no live job: it was killed or crashed),
        ``stopped``, or ``None`` when the deployment has no job."""
        if not self.exists:
            return None
        pid = self.pid
        if pid is None:
            return "stopped"
        return "running" if processes.alive(pid, str(self.root)) else "dead"

    def read_state(self) -> dict[str, Any]:
        """``state.json`` (empty when missing or damaged: the job starts its triggers afresh)."""
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(self.state_file.read_text())
            if isinstance(doc, dict):
                return doc
        return {}

    def runs(self) -> list[dict[str, Any]]:
        """One record per run, oldest first: its start merged with its end (torn lines skipped)."""
        from nbdeploy.monitoring.replay import read_records

        try:
            lines = read_records(self.runs_file, include_rotated=False)
        except OSError:
            return []
        merged: dict[int, dict[str, Any]] = {}
        for doc in lines:
            number = doc.get("run")
            if isinstance(number, int) and not isinstance(number, bool):
                merged.setdefault(number, {}).update(doc)
        return [merged[n] for n in sorted(merged)]

    def append_run(self, doc: dict[str, Any]) -> None:
        append_private(self.runs_file, json.dumps(doc, default=str) + "\n")

    def ask(self, reason: str) -> str:
        """Ask the job for a run now (it runs once the one in progress, if any, ends); the id."""
        import uuid

        ident = uuid.uuid4().hex[:12]
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        append_private(self.manual, json.dumps({"id": ident, "ts": time.time(), "reason": reason}) + "\n")
        return ident

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the job's process (its run in progress is recorded as stopped); whether one ran."""
        pid = self.pid
        running = pid is not None and processes.alive(pid, str(self.root))
        if running:
            assert pid is not None
            processes.stop_group(pid, str(self.root), timeout)
        self.pid_file.unlink(missing_ok=True)
        return running

    def summary(self, last: int = 5) -> dict[str, Any] | None:
        """What the listing, the status card and the panel show: ``None`` without a job."""
        state = self.state()
        if state is None:
            return None
        try:
            job = json.loads(self.spec.read_text())
        except (OSError, ValueError, RecursionError):
            job = {}
        job = job if isinstance(job, dict) else {}
        doc = self.read_state()
        due = doc.get("next_due")
        live = state == "running"  # a dead job's "run in progress" and "next run" are not happening
        return {
            "state": state, "pid": self.pid, "trigger": str(job.get("trigger_text", "?")),
            "action": str(job.get("action_text", "?")), "next_run": due if live and is_time(due) else None,
            "running": _entry(doc.get("running")) if live else None, "queued": _entry(doc.get("queued")),
            "runs": self.runs()[-last:],
        }  # fmt: skip

    def line(self) -> str:
        """One short phrase for the listing: ``running, next 03:00 UTC`` / ``dead`` / ``-``."""
        try:
            return self._line()
        except Exception:  # whatever a hand made of the job's files, the deployment is still listed
            return "unreadable: see retrain/ in the deployment's folder"

    def _line(self) -> str:
        info = self.summary(last=1)
        if info is None:
            return "-"
        text = info["state"]
        if info["running"]:
            text += f", run {info['running'].get('run')} in progress"
        elif info["next_run"] is not None:
            text += f", next {time.strftime('%Y-%m-%d %H:%M', time.gmtime(info['next_run']))} UTC"
        return text
