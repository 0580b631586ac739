"""The ``Deployment`` handle: one serving process (or Ray application) and its folder.

Any kernel or the CLI adopts a deployment by name (:func:`nbdeploy.get`); the handle reads
what it knows from the folder (see :mod:`nbdeploy.deployments`) or asks the server.

>>> d = nbdeploy.get("cancer")         # doctest: +SKIP
>>> d.predict(X_test.head())           # doctest: +SKIP
>>> d.stop()                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy._files import read_small
from nbdeploy.deployments import events, http, models, processes, ray_client, tls
from nbdeploy.deployments.access import TokenKeeping
from nbdeploy.deployments.audit import Auditing
from nbdeploy.deployments.experiments import Experiments
from nbdeploy.deployments.export import Exporting
from nbdeploy.deployments.forget import Forgetting
from nbdeploy.deployments.retrain_files import JobFiles
from nbdeploy.deployments.snippet import Snippets
from nbdeploy.deployments.views import Status
from nbdeploy.deployments.watching import Watching
from nbdeploy.errors import DeploymentError, Docs
from nbdeploy.spec import DeploymentSpec, ModelEntry

__all__ = ["Deployment"]

_TOKEN = re.compile(r"[!-~]{1,1024}")  # what an HTTP header can carry: visible ASCII


@dataclass
class Deployment(Watching, Experiments, Exporting, TokenKeeping, Auditing, Snippets, Forgetting):
    """A serving process and its folder; any kernel or the CLI can adopt it by name."""

    name: str
    path: Path

    # state on disk --------------------------------------------------------------------

    @property
    def spec(self) -> DeploymentSpec:
        """What the deployment was started with (read from ``spec.json`` on every access)."""
        return DeploymentSpec.load(self.path)

    @property
    def pid(self) -> int | None:
        """The server's pid: the one in the pid file while that process is this deployment's
        server; else the server found by its identity (a damaged or stale pid file never hides
        a live server); else the recorded pid of a dead server, or ``None``."""
        text = read_small(self.path / "pid")
        recorded = int(text) if text and text.isdigit() else None
        if recorded is not None and processes.alive(recorded, str(self.path)):
            return recorded
        return processes.find_server(str(self.path)) or recorded

    @property
    def port(self) -> int | None:
        text = read_small(self.path / "port")
        return int(text) if text and text.isdigit() else None

    @property
    def token(self) -> str | None:
        """The bearer token (needed by clients when the server binds a non-loopback address)."""
        return read_small(self.path / "token")

    @property
    def target(self) -> str:
        """``local`` (a server process on this machine) or ``ray`` (a Ray Serve application).

        With a damaged spec, the ``deployed`` file says Ray, so that ``state`` and ``stop`` of
        a local server still work (they need only its pid and folder).
        """
        try:
            return self.spec.target
        except DeploymentError:
            return "ray" if self.deployed else "local"

    @property
    def deployed(self) -> bool:
        """For a Ray deployment: deployed and not stopped since (whether it answers or not)."""
        return (self.path / "deployed").exists()

    @property
    def url(self) -> str:
        return self._url(self.spec)

    def _url(self, spec: DeploymentSpec, port: int | None = None) -> str:
        if spec.ray is not None:
            return spec.ray.url or ""
        return tls.url(spec.host, port or self.port or spec.port, spec.tls_cert)

    @property
    def current(self) -> ModelEntry:
        """The history entry being served: ``ref``, ``version``, ``model_path``."""
        return self.spec.current

    def state(self) -> str:
        """``running``, ``dead`` (its pid file names no live server, or its Ray application
        does not answer) or ``stopped``."""
        if self.target == "ray":
            return self._ray_state()
        return self._local_state(self.pid)

    def _local_state(self, pid: int | None) -> str:
        if pid is None:
            return "stopped"
        return "running" if processes.alive(pid, str(self.path)) else "dead"

    def _ray_state(self) -> str:
        if not self.deployed:
            return "stopped"
        return "running" if http.answers(self.url) else "dead"

    # talking to the server ------------------------------------------------------------

    def _request(self, method: str, route: str, timeout: float = 60, **kw: Any) -> Any:
        spec = self.spec  # read once: every figure below comes from this one file read
        if spec.ray is not None:
            # a Ray application is asked directly (no /health round trip first): if it does not
            # answer, the request says so
            state = "running" if self.deployed else "stopped"
        else:
            pid = self.pid
            state = self._local_state(pid)
        if state != "running":
            raise DeploymentError(f"Deployment {self.name!r} is {state}: serve it again to use it.", docs=Docs.STATES)
        port = None if spec.ray is not None else self.port  # the port file, read once
        if spec.ray is None and port is None:
            raise DeploymentError(
                f"Deployment {self.name!r} runs (pid {pid}) but its port file {self.path / 'port'} is "
                "damaged: stop it and serve it again."
            )
        token = self.token
        if token is not None and not _TOKEN.fullmatch(token):
            raise DeploymentError(
                f"Deployment {self.name!r} runs but its token file {self.path / 'token'} is damaged: "
                "stop it and serve it again (a new token is written)."
            )
        base, verify = self._url(spec, port), tls.verify(spec.tls_cert)
        return http.request(self.name, method, base, route, token, timeout=timeout, verify=verify, **kw)

    def status(self) -> Status:
        """State, address, version served and uptime (asked of the server when it runs)."""
        info: dict[str, Any] = {}
        spec = self.spec
        pid = None if spec.ray is not None else self.pid
        state = self._ray_state() if spec.ray is not None else self._local_state(pid)
        if state == "running":
            with contextlib.suppress(DeploymentError):
                info = self._request("GET", "/info", timeout=2).json()
        return Status(
            name=self.name,
            state=state,
            url=self._url(spec) if state == "running" else "",
            pid=pid,
            ref=str(info.get("ref", spec.current.ref)),
            version=info.get("version", spec.current.version),
            uptime_s=info.get("uptime_s"),
            folder=str(self.path),
            target="local" if spec.ray is None else f"ray ({spec.ray.replicas} replicas)",
            retraining=JobFiles(self.path).line(),
            transport=tls.describe(spec.host, spec.tls_cert, spec.insecure_http),
        )

    def logs(self, n: int = 50) -> str:
        """The last ``n`` lines of the server's log."""
        try:
            lines = (self.path / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:]) if n > 0 else ""

    def token_notice(self, given: bool) -> str | None:
        """Where a generated token is kept and how to read it, when clients need one; never
        its value (a cell's output is saved in the notebook, a terminal's in CI logs)."""
        if self.spec.require_token and not given:
            return (
                f"Clients need a bearer token: it is kept in {self.path / 'token'} (owner-only); "
                f"read it with nbdeploy.get({self.name!r}).token."
            )
        return None

    def predict(self, X: Any, with_id: bool = False, method: str = "predict") -> Any:
        """Predictions for ``X`` (DataFrame or array) through the server's ``/invocations``.

        With ``with_id=True`` returns ``(predictions, request_id)``; the id is what
        :meth:`feedback` takes to attach true labels later. ``method="predict_proba"`` (or
        another the model has) answers with it instead (MLflow's ``predict_method`` param)."""
        import numpy as np

        columns, rows = http.frame_rows(X)
        split: dict[str, Any] = {"data": rows, **({"columns": columns} if columns is not None else {})}
        doc = {"dataframe_split": split, **({"params": {"predict_method": method}} if method != "predict" else {})}
        body = json.dumps(doc, default=http.json_value)
        response = self._request(
            "POST",
            "/invocations",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        predictions = np.asarray(response.json()["predictions"])
        return (predictions, response.headers.get("x-request-id")) if with_id else predictions

    def update(self, ref: str) -> Deployment:
        """Serve another version in place (``/admin/reload``); no request is dropped."""
        self._no_experiment("update")
        entry = models.fetch(ref, self.path)
        self._reload(entry)
        spec = self.spec
        events.record(self.path, "updated", entry, previous=spec.current)
        spec.history.append(entry)
        spec.save(self.path)
        return self

    def rollback(self) -> Deployment:
        """Go back to the version served before the last update."""
        self._no_experiment("roll back")
        spec = self.spec
        if len(spec.history) < 2:
            raise DeploymentError(f"Deployment {self.name!r} has served only one version: nothing to roll back to.")
        self._reload(spec.history[-2])
        events.record(self.path, "rolled back", spec.history[-2], previous=spec.history.pop())
        spec.save(self.path)
        return self

    def _reload(self, entry: ModelEntry) -> None:
        if self.target == "ray":  # a rolling update: Ray replaces the replicas one by one
            state = self.state()
            if state != "running":
                raise DeploymentError(
                    f"Deployment {self.name!r} is {state}: serve it again to use it.", docs=Docs.STATES
                )
            ray_client.ctl(self.path, "deploy", entry)
            return
        payload = {
            "path": entry.model_path, "ref": entry.ref, "version": entry.version,
            "profile_path": entry.profile_path, "task": entry.task,
        }  # fmt: skip
        self._request("POST", "/admin/reload", json=payload)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server's whole process group and wait for it; the folder and logs stay.
        Returns whether there was anything to stop.

        A Ray deployment's applications are deleted from the cluster (and a cluster nbdeploy
        started is stopped with its last deployment). Its retraining job is stopped by
        ``nbdeploy.deployments.stop`` (``%deploy stop``), not here: a restart stops the server too.
        """
        if self.target == "ray":
            if stopped := self._stop_ray():
                events.record_stop(self)
            return stopped
        pid = self.pid
        if pid is not None:
            processes.stop_group(pid, str(self.path), timeout)
            processes.attached.pop(pid, None)
            events.record_stop(self)
        for name in ("pid", "port"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        return pid is not None

    def _stop_ray(self) -> bool:
        ray = self.spec.ray
        was = self.deployed
        if was:
            try:
                ray_client.ctl(self.path, "delete", timeout=120)
            except DeploymentError:
                if self.state() == "running":  # still serving: do not pretend it stopped
                    raise
            (self.path / "deployed").unlink(missing_ok=True)
        if ray is not None and ray.started_cluster and ray.address:
            ray_client.stop_local_cluster_if_unused(ray.address)
        return was

    def __repr__(self) -> str:
        return repr(self.status())

    def _repr_html_(self) -> str:
        return self.status()._repr_html_()
