"""What starts a run: a schedule (``--every``, ``--cron``), an alert rule firing (``--on``),
or a person (``--now``), read with positions kept in the job's ``state.json``.

Each source is consumed once: the schedule's next time and each file's read position are
saved before the run they start, so a job that is killed and adopted never runs a trigger
twice. Whatever is pending at one poll becomes one run (its reason lists them all).

>>> Schedule(every_s=60.0, anchor=0.0).next_after(61.0)
120.0
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbdeploy._files import open_to_read
from nbdeploy.retraining.spec import RetrainSpec

__all__ = ["READ_LIMIT", "Schedule", "Tail", "Trigger", "Triggers"]

READ_LIMIT = 1 << 20  # bytes of a watched file read per poll: a flood of events is read over a few polls


@dataclass
class Trigger:
    """Why a run starts: ``id`` (what was consumed), ``kind`` and a sentence."""

    id: str
    kind: str
    reason: str
    ts: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Trigger:
        """A trigger kept in ``state.json`` (whatever else its entry holds)."""
        ts = doc.get("ts")
        return cls(str(doc.get("id", "?")), str(doc.get("kind", "?")), str(doc.get("reason", "?")),
                   float(ts) if isinstance(ts, int | float) else 0.0)  # fmt: skip

    @classmethod
    def merge(cls, found: list[Trigger]) -> Trigger:
        if len(found) == 1:
            return found[0]
        kinds = sorted({t.kind for t in found})
        return cls("+".join(t.id for t in found)[:2000], "+".join(kinds), "; ".join(t.reason for t in found)[:2000],
                   max(t.ts for t in found))  # fmt: skip


@dataclass
class Schedule:
    """``every_s`` seconds from ``anchor`` (the job's creation), or a cron expression in UTC."""

    every_s: float | None = None
    cron: str | None = None
    anchor: float = 0.0

    def next_after(self, t: float) -> float | None:
        if self.every_s:
            slots = (t - self.anchor) // self.every_s + 1
            return self.anchor + max(slots, 1) * self.every_s
        if self.cron:
            from croniter import croniter

            start = dt.datetime.fromtimestamp(t, dt.timezone.utc)
            return float(croniter(self.cron, start).get_next(float))
        return None


class Tail:
    """New JSON lines of a file, from a position (``offset``, ``inode``) kept in ``state``.

    A file replaced or cut shorter is read from its start again, skipping records no newer
    than the last one consumed (``last_ts``)."""

    def __init__(self, path: Path, state: dict[str, Any]) -> None:
        self.path, self.state = path, state

    def skip(self, now: float) -> None:
        """Consider everything the file holds now as read."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            self.state.update(offset=0, inode=None, last_ts=now)
            return
        self.state.update(offset=st.st_size, inode=st.st_ino, last_ts=now)

    def read(self) -> list[dict[str, Any]]:
        try:
            fd = open_to_read(self.path)
        except OSError:
            return []
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            offset, replaced = int(self.state.get("offset", 0)), st.st_ino != self.state.get("inode")
            if replaced or st.st_size < offset:
                offset, replaced = 0, True
            fh.seek(offset)
            data = fh.read(READ_LIMIT)
        end = data.rfind(b"\n") + 1  # a line being written is read once it is whole
        if end == 0 and len(data) == READ_LIMIT:  # one line longer than the limit: skipped
            end = len(data)
        floor = float(self.state.get("last_ts", 0.0)) if replaced else float("-inf")
        found = []
        for line in data[:end].splitlines():
            try:
                doc = json.loads(line)
            except (ValueError, RecursionError):
                continue
            ts = doc.get("ts") if isinstance(doc, dict) else None
            if isinstance(ts, int | float) and not isinstance(ts, bool) and floor < ts < 1e11:  # not 1e999
                found.append(doc)
        self.state.update(offset=offset + end, inode=st.st_ino)
        if found:
            self.state["last_ts"] = max(float(self.state.get("last_ts", 0.0)), *(float(d["ts"]) for d in found))
        return found


class Triggers:
    """The job's trigger sources over its ``state`` (a dict the runner saves)."""

    def __init__(self, spec: RetrainSpec, alerts: Path, manual: Path, state: dict[str, Any]) -> None:
        self.spec, self.state = spec, state
        self.schedule = Schedule(spec.every_s, spec.cron, spec.created)
        lost = [key for key in ("alerts", "manual") if key not in state] if "next_due" in state else []
        self.alerts = Tail(alerts, state.setdefault("alerts", {})) if spec.on else None
        self.manual = Tail(manual, state.setdefault("manual", {}))
        for key, tail in (("alerts", self.alerts), ("manual", self.manual)):
            if key in lost and tail is not None:  # its position was lost (a damaged state): from the end,
                tail.skip(time.time())  # never every old event again

    def start(self, now: float) -> None:
        """The first start of a job: only what happens from now on triggers it."""
        if "next_due" not in self.state:
            self.state["next_due"] = self.schedule.next_after(now)
            for tail in (self.alerts, self.manual):  # what was written before the job (or its lost state)
                if tail is not None:  # existed is not its trigger
                    tail.skip(now)

    def poll(self, now: float) -> Trigger | None:
        """Everything pending, consumed, as one trigger (``None``: nothing)."""
        found = self._scheduled(now)
        if self.alerts is not None:
            for event in self.alerts.read():
                if event.get("rule") == self.spec.on and event.get("state") == "fired":
                    value = event.get("value")
                    shown = f"{value:.4g}" if isinstance(value, int | float) else "?"
                    found.append(Trigger(f"alert:{event['ts']:.6f}", "alert", f"{self.spec.on} fired (value {shown})",
                                         float(event["ts"])))  # fmt: skip
        for asked in self.manual.read():
            reason = str(asked.get("reason") or "asked by hand")[:500]
            found.append(Trigger(f"manual:{str(asked.get('id'))[:40]}", "manual", reason, float(asked["ts"])))
        return Trigger.merge(found) if found else None

    def _scheduled(self, now: float) -> list[Trigger]:
        due = self.state.get("next_due")
        if not isinstance(due, int | float):
            return []
        expected = self.schedule.next_after(now)
        if expected is not None and due > expected:  # the clock went back: not a wait of months
            self.state["next_due"] = expected
            return []
        if now < due:
            return []
        following = self.schedule.next_after(now)
        missed = 0
        slot = self.schedule.next_after(due)
        while slot is not None and slot <= now and missed < 10_000:
            missed, slot = missed + 1, self.schedule.next_after(slot)
        self.state["next_due"] = following
        kind = "every" if self.spec.every_s else "cron"
        reason = f"scheduled {self.spec.trigger_text}"
        if missed:
            reason += f" ({missed + 1} scheduled times passed while the job was down: one run for them)"
        return [Trigger(f"{kind}:{due:.0f}", kind, reason, float(due))]
