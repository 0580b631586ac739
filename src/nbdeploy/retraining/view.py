"""What a retraining job looks like in a notebook and a log: its state, trigger, next run,
the run in progress or queued, and its last runs with their outcome and executed notebook."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nbdeploy.deployments.retrain_files import is_time
from nbdeploy.reprs import card, esc, fit, kv_table, table

__all__ = ["JobStatus"]

_CSS = {"running": "nbd-pass", "dead": "nbd-fail", "promoted": "nbd-pass", "failed": "nbd-fail",
        "rejected": "nbd-fail", "interrupted": "nbd-fail"}  # fmt: skip


def _when(ts: Any) -> str:
    if not is_time(ts):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


@dataclass
class JobStatus:
    """A snapshot of one deployment's retraining job."""

    deployment: str
    state: str
    trigger: str
    action: str
    notebook: str
    next_run: float | None
    running: dict[str, Any] | None
    queued: dict[str, Any] | None
    runs: list[dict[str, Any]] = field(default_factory=list)

    def _now(self) -> str:
        if isinstance(self.running, dict):
            trigger = self.running.get("trigger")
            reason = str(trigger.get("reason") if isinstance(trigger, dict) else "?")[:60]
            return f"run {self.running.get('run')} in progress ({reason})"
        return "idle"

    def __repr__(self) -> str:
        lines = [f"Retraining job of {self.deployment}: {self.state}, {self.trigger}, then {self.action}",
                 f"  notebook {self.notebook}",
                 f"  {self._now()}; next scheduled run {_when(self.next_run)}"]  # fmt: skip
        if isinstance(self.queued, dict):
            lines.append(f"  queued: {str(self.queued.get('reason'))[:80]}")
        for run in self.runs[-5:]:
            outcome = run.get("outcome", "in progress")
            text = f"  run {run.get('run')} {_when(run.get('started'))}: {outcome}"
            if run.get("candidate"):
                text += f", {run['candidate']}"
            lines.append(text)
            if run.get("why"):
                lines.append(f"    {str(run['why'])[:94]}")
        return fit("\n".join(lines))

    def _repr_html_(self) -> str:
        css = _CSS.get(self.state, "nbd-muted")
        facts = kv_table([
            ("state", f"<span class='{css}'>{esc(self.state)}</span>"),
            ("trigger", esc(self.trigger)), ("then", esc(self.action)),
            ("notebook", f"<code>{esc(self.notebook)}</code>"), ("now", esc(self._now())),
            ("queued", esc(self.queued.get("reason") if isinstance(self.queued, dict) else "-")),
            ("next run", esc(_when(self.next_run))),
        ])  # fmt: skip
        rows = []
        for run in reversed(self.runs[-10:]):
            outcome = str(run.get("outcome", "in progress"))
            notebook = run.get("notebook_artifact") or run.get("notebook") or "-"
            rows.append([esc(run.get("run")), esc(_when(run.get("started"))),
                         f"<span class='{_CSS.get(outcome, '')}'>{esc(outcome)}</span>",
                         esc(run.get("candidate", "-")), esc(str(run.get("why", ""))[:300]),
                         f"<code>{esc(notebook)}</code>"])  # fmt: skip
        runs = table(["run", "started", "outcome", "candidate", "why", "executed notebook"], rows, raw=True)
        return card(f"Retraining job of {esc(self.deployment)}", facts, f"<h4>Last runs</h4>{runs}" if rows else "")
