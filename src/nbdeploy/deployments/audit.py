"""A deployment's audit trail, as ``%deploy audit NAME`` shows it.

>>> d.audit(since="1d")        # doctest: +SKIP

Three sources, merged by time: the kernel's lines of ``audit.jsonl`` (serve, update,
rollback, experiments started and concluded by hand, alert rules, tokens, stop; by the
local user), the server's lines of the same file (admin calls made with a token other than
the owner's, by the token's label), and the experiments the server ended on its own
(``experiments.jsonl``, by the experiment's rules).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nbdeploy.deployments import events
from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import InvalidInputError
from nbdeploy.monitoring.replay import read_records
from nbdeploy.reprs import card, esc, fit_columns, table
from nbdeploy.spec import parse_duration

__all__ = ["AuditView", "Auditing"]

_SHOWN_ELSEWHERE = {"ts", "event", "deployment", "by", "model", "previous", "version_before", "version_after"}


@dataclass(frozen=True)
class AuditView:
    """Who changed what a deployment serves or allows, and when; oldest first."""

    deployment: str
    lines: list[dict[str, Any]]

    def rows(self) -> list[list[str]]:
        return [[_when(d["ts"]), str(d.get("event")), str(d.get("by", "-")), _change(d), _details(d)]
                for d in self.lines]  # fmt: skip

    def __repr__(self) -> str:
        if not self.lines:
            return f"Audit trail of {self.deployment}: nothing recorded."
        table_lines = fit_columns(["time", "action", "by", "change", "details"], self.rows(), width=98)
        return "\n".join([f"Audit trail of {self.deployment}:", *("  " + line for line in table_lines)])

    def _repr_html_(self) -> str:
        if not self.lines:
            return card(f"Audit trail of {esc(self.deployment)}", "<p>Nothing recorded.</p>")
        return card(f"Audit trail of {esc(self.deployment)}",
                    table(["time", "action", "by", "change", "details"], self.rows()))  # fmt: skip


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _change(doc: dict[str, Any]) -> str:
    before = doc.get("previous", doc.get("version_before"))
    after = doc.get("model", doc.get("version_after"))
    if before is not None and after is not None:
        return f"{before} -> {after}"
    return str(after) if after is not None else ""


def _details(doc: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in doc.items() if k not in _SHOWN_ELSEWHERE and v not in (None, ""))


class Auditing(HandleParts):
    """The audit method of a deployment."""

    def audit(self, since: str | None = None) -> AuditView:
        """The audit trail (the last ``since``, e.g. ``1d``; all of it by default)."""
        try:
            start = time.time() - parse_duration(since, "--since") if since else 0.0
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        lines = events.trail(self.path)
        for end in read_records(self.path / events.EXPERIMENT_ENDS, include_rotated=False):
            action = end.get("action")
            if action in events.ENDS and isinstance(end.get("ts"), int | float):
                lines.append({"ts": end["ts"], "event": f"experiment {events.ENDS[action]}", "by": "experiment rules",
                              "challenger": end.get("challenger"), "why": end.get("why")})  # fmt: skip
        return AuditView(self.name, sorted((d for d in lines if d["ts"] >= start), key=lambda d: d["ts"]))
