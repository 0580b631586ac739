"""The live monitoring panel: an anywidget whose state is the server's ``/monitor`` document.

A daemon thread polls the deployment every ``interval`` seconds and sets the ``snapshot``
traitlet, so the kernel stays free for the user's cells. The poller stops when the widget
is closed or the deployment stops, and says so in ``status`` when the server is unreachable.

>>> w = show_monitor(nbdeploy.get("cancer"), interval=2, window="1m")   # doctest: +SKIP
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from nbdeploy.deployments.retrain_files import JobFiles
from nbdeploy.errors import DeploymentError
from nbdeploy.monitoring.view import render_text
from nbdeploy.reprs import card, esc

__all__ = ["MonitorWidget", "show_monitor"]

_HERE = Path(__file__).parent
_open: dict[str, MonitorWidget] = {}  # the live panel of each deployment


_RUN_KEYS = ("run", "started", "outcome", "candidate", "why", "notebook", "notebook_artifact")


def job_summary(folder: Path) -> dict[str, Any]:
    """The panel's view of the deployment's retraining job (``{}`` without one): its last
    runs with what the panel shows of them (their steps stay in ``%deploy retrain NAME``)."""
    info = JobFiles(folder).summary(last=5)
    if info is None:
        return {}
    info["runs"] = [{k: run.get(k) for k in _RUN_KEYS if k in run} for run in info["runs"]]
    return info


def job_text(job: dict[str, Any]) -> str:
    """The job in the panel's text form: one line, and one per recent run."""
    if not job:
        return ""
    import time

    due = job.get("next_run")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(due)) if isinstance(due, int | float) else "-"
    lines = [f"\nretraining job {job['state']}: {job['trigger']}, then {job['action']}; next run {when}"]
    for run in job.get("runs", [])[-3:]:
        outcome = run.get("outcome", "in progress")
        lines.append(f"  run {run.get('run')}: {outcome} {run.get('candidate') or ''}".rstrip())
    return "\n".join(lines)


class MonitorWidget(anywidget.AnyWidget):
    """Tiles, sparklines, prediction distribution, drift table and alerts of one deployment."""

    _esm = _HERE / "monitor.js"
    _css = _HERE / "monitor.css"

    name = traitlets.Unicode(help="deployment name").tag(sync=True)
    window = traitlets.Unicode(help="window shown: one of the deployment's (its first by default)").tag(sync=True)
    interval = traitlets.Float(2.0, help="seconds between polls").tag(sync=True)
    status = traitlets.Unicode("starting", help="live, stopped, or unreachable: <why>").tag(sync=True)
    snapshot = traitlets.Dict(help="the last /monitor document").tag(sync=True)
    polls = traitlets.Int(0, help="successful polls so far").tag(sync=True)
    job = traitlets.Dict(help="the retraining job: state, trigger, next run, last runs ({} without one)").tag(
        sync=True
    )

    def __init__(self, deployment: Any, interval: float, window: str, **kwargs: Any) -> None:
        super().__init__(name=deployment.name, interval=float(interval), window=window, **kwargs)
        self._deployment = deployment
        self._stop = threading.Event()
        # the first snapshot before the cell returns: an executed notebook saves the real
        # one-screen text, not "starting"
        serving = self._poll_once(wait_dead=False)
        self._thread = threading.Thread(target=self._poll, name=f"nbdeploy-monitor-{deployment.name}", daemon=True)
        if serving:
            self._thread.start()

    def _poll_once(self, wait_dead: bool = True) -> bool:
        """One poll; False when the deployment is not serving (polling ends)."""
        state = self._deployment.state()
        if state == "dead" and wait_dead:  # a server being stopped looks dead until its pid file is gone
            self._stop.wait(0.5)
            state = self._deployment.state()
        if state != "running":
            self.status = f"{state}: the deployment is not serving"
            return False
        self.job = job_summary(self._deployment.path)
        try:
            self.snapshot = self._deployment.snapshot(self.window)
            self.polls += 1
            self.status = "live"
        except DeploymentError as exc:
            self.status = f"unreachable: {exc}"
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.interval) and self._poll_once():
            pass

    @property
    def polling(self) -> bool:
        """True while the poller thread runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop polling (the panel keeps its last snapshot)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        super().close()

    def __repr__(self) -> str:
        if not self.snapshot:
            return f"Monitor {self.name}: {self.status}" + job_text(self.job)
        return render_text(self.snapshot, self.window, self.status) + job_text(self.job)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # ipywidgets cuts text/plain at 110 characters; where widgets do not run (GitHub, a
        # notebook viewer, MLflow's artifact viewer) the HTML form is the last snapshot's text
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # anywidget answers (data, metadata)
        if isinstance(data, dict):
            text = repr(self)
            data["text/plain"] = text
            note = "The live panel needs JupyterLab or VS Code with widgets; this is the snapshot it showed first."
            data["text/html"] = card(f"Monitoring {esc(self.name)}", f"<pre>{esc(text)}</pre>",
                                       f"<p class='nbd-muted'>{esc(note)}</p>")  # fmt: skip
        return bundle


def show_monitor(
    deployment: Any, interval: float, window: str, panel: bool = False
) -> MonitorWidget | None:
    """Create the widget; with ``panel`` open it in a JupyterLab side panel and return ``None``."""
    from nbdeploy.errors import InvalidInputError

    if not interval > 0:
        raise InvalidInputError(f"Invalid interval {interval}: use a number of seconds above 0.")
    previous = _open.pop(deployment.name, None)
    if previous is not None:  # re-running the cell replaces the panel instead of adding a poller
        previous.close()
    widget = _open[deployment.name] = MonitorWidget(deployment, interval=interval, window=window)
    if not panel:
        return widget
    from IPython.display import display
    from sidecar import Sidecar

    with Sidecar(title=f"nbdeploy · {deployment.name}"):
        display(widget)
    return None
