"""What deployments look like in a notebook and a log: a status card and a listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbdeploy.errors import NbdeployError
from nbdeploy.registry.versions import Listing
from nbdeploy.reprs import card, esc, fit, kv_table

__all__ = ["DeploymentList", "Status"]


@dataclass
class Status:
    """A snapshot of one deployment."""

    name: str
    state: str
    url: str
    pid: int | None
    ref: str
    version: int | None
    uptime_s: float | None
    folder: str
    target: str = "local"
    retraining: str = "-"  # the retraining job's state (deployments.retrain_files.JobFiles.line)
    transport: str = "HTTP on loopback"  # how clients reach it (deployments.tls.describe)

    def __repr__(self) -> str:
        # no uptime here: it differs at each run, and the text form is what a notebook diff reads
        where = f" at {self.url}" if self.url else ""
        on = f" on {self.target}" if self.target != "local" else ""
        job = f"; retraining job {self.retraining}" if self.retraining != "-" else ""
        how = f"; {self.transport}" if self.transport != "HTTP on loopback" else ""
        return fit(f"Deployment {self.name}: {self.state}{where}{on}, serving {self.ref} (version {self.version})"
                   f"{job}{how}")  # fmt: skip

    def _repr_html_(self) -> str:
        css = {"running": "nbd-pass", "dead": "nbd-fail"}.get(self.state, "nbd-muted")
        facts = kv_table(
            [
                ("state", f"<span class='{css}'>{esc(self.state)}</span>"),
                ("url", f"<code>{esc(self.url or '-')}</code>"),
                ("serving", f"{esc(self.ref)} (version {esc(self.version)})"),
                ("target", esc(self.target)),
                ("transport", esc(self.transport)),
                ("pid", esc(self.pid or "-")),
                ("uptime", esc(f"{self.uptime_s:.0f} s" if self.uptime_s is not None else "-")),
                ("folder", f"<code>{esc(self.folder)}</code>"),
                ("retraining job", esc(self.retraining)),
            ]
        )
        return card(f"Deployment {esc(self.name)}", facts)


class DeploymentList(Listing):
    """All deployments under ``NBDEPLOY_HOME`` with their state."""

    keep = ("url",)  # what a reader copies to call it

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        rows = []
        for d in items:
            try:
                st = d.status()
            except NbdeployError:  # a damaged spec: still listed, with its state (never hidden)
                rows.append([d.name, f"{d.state()}, spec.json damaged", "-", "-", "-", str(d.pid or "-"), "-"])
                continue
            rows.append([d.name, st.state, st.url or "-", st.ref, str(st.version), str(st.pid or "-"), st.retraining])
        super().__init__("Deployments", ["name", "state", "url", "serving", "version", "pid", "retraining"], rows)
