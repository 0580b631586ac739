"""Start, find, adopt and stop serving processes; their state lives in one folder each.

    NBDEPLOY_HOME/NAME/
        spec.json      what to serve and how (history of served versions, for rollback)
        token          bearer token, owner-only permissions
        pid, port      written when the server starts; removed when it is stopped
        server.log     the server's stdout and stderr
        requests.jsonl one line per answered request (rotated by size)
        models/NAME-vN/ local copy of each served model version
        deployed       (--target ray) the URL, while the Ray applications are deployed
        requests-R.jsonl  (--target ray) the request log of replica R, on the replica's machine

>>> d = serve("cancer@champion")        # doctest: +SKIP
>>> d.predict(X_test.head())            # doctest: +SKIP
>>> d.stop()                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy import _procs, config
from nbdeploy._deploy_views import DeploymentList, Status
from nbdeploy.errors import DeploymentError, DeploymentNotFoundError, InvalidInputError
from nbdeploy.refs import validate_name

__all__ = ["Deployment", "deployments", "get", "stop_all"]

MARKER = "nbdeploy.serving"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class Deployment:
    """A serving process and its folder; any kernel or the CLI can adopt it by name."""

    name: str
    path: Path

    # state on disk --------------------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "spec.json").read_text())
        return data

    @property
    def pid(self) -> int | None:
        text = _read(self.path / "pid")
        return int(text) if text else None

    @property
    def port(self) -> int | None:
        text = _read(self.path / "port")
        return int(text) if text else None

    @property
    def token(self) -> str | None:
        """The bearer token (needed by clients when the server binds a non-loopback address)."""
        return _read(self.path / "token")

    @property
    def target(self) -> str:
        """``local`` (a server process on this machine) or ``ray`` (a Ray Serve application)."""
        return str(self.spec.get("target", "local"))

    @property
    def deployed(self) -> bool:
        """For a Ray deployment: deployed and not stopped since (whether it answers or not)."""
        return (self.path / "deployed").exists()

    @property
    def url(self) -> str:
        spec = self.spec
        if spec.get("target") == "ray":
            return str(spec["ray"].get("url") or "")
        host = spec["host"]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port or spec['port']}"

    @property
    def current(self) -> dict[str, Any]:
        """The history entry being served: ``ref``, ``version``, ``model_path``."""
        entry: dict[str, Any] = self.spec["history"][-1]
        return entry

    def state(self) -> str:
        """``running``, ``dead`` (its pid file names no live server, or its Ray application
        does not answer) or ``stopped``."""
        if self.target == "ray":
            return self._ray_state()
        pid = self.pid
        if pid is None:
            return "stopped"
        return "running" if _procs.alive(pid, str(self.path)) else "dead"

    def _ray_state(self) -> str:
        import httpx

        if not self.deployed:
            return "stopped"
        try:
            return "running" if httpx.get(self.url + "/health", timeout=3).status_code == 200 else "dead"
        except httpx.HTTPError:
            return "dead"

    # talking to the server ------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        token = self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _request(
        self, method: str, route: str, headers: dict[str, str] | None = None, timeout: float = 60, **kw: Any
    ) -> Any:
        import httpx

        # A Ray application is asked directly (no /health round trip first): if it does not
        # answer, the request below says so.
        state = ("running" if self.deployed else "stopped") if self.target == "ray" else self.state()
        if state != "running":
            raise DeploymentError(f"Deployment {self.name!r} is {state}: serve it again to use it.")
        try:
            response = httpx.request(
                method, self.url + route, headers={**self._headers(), **(headers or {})}, timeout=timeout, **kw
            )
        except httpx.HTTPError as exc:
            raise DeploymentError(f"Deployment {self.name!r} did not answer at {self.url}: {exc}.") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise DeploymentError(f"Deployment {self.name!r} answered {response.status_code}: {message}")
        return response

    def status(self) -> Status:
        """State, address, version served and uptime (asked of the server when it runs)."""
        info: dict[str, Any] = {}
        state = self.state()
        if state == "running":
            with contextlib.suppress(DeploymentError):
                info = self._request("GET", "/info", timeout=2).json()
        cur = self.current
        return Status(
            name=self.name,
            state=state,
            url=self.url if state == "running" else "",
            pid=self.pid,
            ref=str(info.get("ref", cur["ref"])),
            version=info.get("version", cur.get("version")),
            uptime_s=info.get("uptime_s"),
            folder=str(self.path),
            target="local" if self.target == "local" else f"ray ({self.spec['ray']['replicas']} replicas)",
        )

    def logs(self, n: int = 50) -> str:
        """The last ``n`` lines of the server's log."""
        try:
            lines = (self.path / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:]) if n > 0 else ""

    def predict(self, X: Any, with_id: bool = False) -> Any:
        """Predictions for ``X`` (DataFrame or array) through the server's ``/invocations``.

        With ``with_id=True`` returns ``(predictions, request_id)``; the id is what
        :meth:`feedback` takes to attach true labels later.
        """
        import numpy as np
        import pandas as pd

        from nbdeploy.profile import as_frame

        frame = as_frame(X)
        split = json.loads(frame.to_json(orient="split", index=False))
        if not isinstance(X, (pd.DataFrame, pd.Series)):
            del split["columns"]  # the server takes the signature's column order
        body = json.dumps({"dataframe_split": split})
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
        from nbdeploy._launch import fetch

        entry = fetch(ref, self.path)
        self._reload(entry)
        spec = self.spec
        spec["history"].append(entry)
        _save_spec(self.path, spec)
        return self

    def rollback(self) -> Deployment:
        """Go back to the version served before the last update."""
        spec = self.spec
        if len(spec["history"]) < 2:
            raise DeploymentError(f"Deployment {self.name!r} has served only one version: nothing to roll back to.")
        self._reload(spec["history"][-2])
        spec["history"].pop()
        _save_spec(self.path, spec)
        return self

    def _reload(self, entry: dict[str, Any]) -> None:
        if self.target == "ray":  # a rolling update: Ray replaces the replicas one by one
            from nbdeploy import _ray

            state = self.state()
            if state != "running":
                raise DeploymentError(f"Deployment {self.name!r} is {state}: serve it again to use it.")
            _ray.ctl(self.path, "deploy", entry)
            return
        payload = {
            "path": entry["model_path"], "ref": entry["ref"], "version": entry.get("version"),
            "profile_path": entry.get("profile_path"), "task": entry.get("task"),
        }  # fmt: skip
        self._request("POST", "/admin/reload", json=payload)

    # monitoring -----------------------------------------------------------------------

    def snapshot(self, window: str | None = None) -> dict[str, Any]:
        """The server's ``GET /monitor`` document (all windows, or the one named)."""
        params = {"window": window} if window else None
        data: dict[str, Any] = self._request("GET", "/monitor", params=params).json()
        return data

    def feedback(self, ids: Any, y: Any) -> dict[str, Any]:
        """Send true labels for answered requests (by ``X-Request-Id``); live accuracy uses them."""
        import numpy as np

        ids_list = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
        targets = np.asarray(y).tolist()
        if len(ids_list) != len(targets):
            raise InvalidInputError(
                f"There are {len(ids_list)} ids but {len(targets)} targets; give one target per request id."
            )
        result: dict[str, Any] = self._request("POST", "/feedback", json={"ids": ids_list, "targets": targets}).json()
        return result

    def alerts(
        self, add: Sequence[str] = (), *, clear: bool = False, webhook: str | None = None, k: int = 3
    ) -> dict[str, Any]:
        """Add alert rules (or ``clear`` them) and return rules, firing ones and recent events."""
        if webhook and not add:
            raise InvalidInputError("A webhook applies to the rules added with it: give --add RULE too.")
        spec = self.spec
        rules = [] if clear else list(spec.get("alerts", []))
        from nbdeploy._launch import alert_specs

        rules += alert_specs(add, webhook, k)
        if add or clear:
            result: dict[str, Any] = self._request("POST", "/admin/alerts", json={"rules": rules}).json()
            spec["alerts"] = rules
            _save_spec(self.path, spec)
            return result
        first = next(iter(self.spec.get("windows") or {"1m": 60}))
        alerts: dict[str, Any] = self.snapshot(first)["alerts"]
        return alerts

    def monitor(self, interval: float = 2.0, window: str = "1m", panel: bool = False) -> Any:
        """A live monitoring widget; the one door from the core to :mod:`nbdeploy.widgets`,
        imported only when called. ``window`` is one of the deployment's windows."""
        known = list(self.spec.get("windows") or {"1m": 60, "5m": 300, "1h": 3600})
        if window not in known:
            raise InvalidInputError(f"Unknown window {window!r}; windows of {self.name!r}: {', '.join(known)}.")
        from nbdeploy.widgets.monitor import show_monitor

        return show_monitor(self, interval=interval, window=window, panel=panel)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server's whole process group and wait for it; the folder and logs stay.

        A Ray deployment's applications are deleted from the cluster (and a cluster nbdeploy
        started is stopped with its last deployment).
        """
        if self.target == "ray":
            self._stop_ray()
            return
        pid = self.pid
        if pid is not None:
            _procs.stop_group(pid, str(self.path), timeout)
            _procs.attached.pop(pid, None)
        for name in ("pid", "port"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()

    def _stop_ray(self) -> None:
        from nbdeploy import _ray

        ray = self.spec["ray"]
        if self.deployed:
            try:
                _ray.ctl(self.path, "delete", timeout=120)
            except DeploymentError:
                if self.state() == "running":  # still serving: do not pretend it stopped
                    raise
            (self.path / "deployed").unlink(missing_ok=True)
        if ray.get("started_cluster") and ray.get("address"):
            _ray.stop_local_cluster_if_unused(ray["address"])

    def __repr__(self) -> str:
        return repr(self.status())

    def _repr_html_(self) -> str:
        return self.status()._repr_html_()


def _save_spec(path: Path, spec: dict[str, Any]) -> None:
    tmp = path / "spec.json.tmp"
    tmp.write_text(json.dumps(spec, indent=2))
    tmp.replace(path / "spec.json")


def _folder(name: str) -> Path:
    return config.home() / name


def get(name: str) -> Deployment:
    """The deployment called ``name`` (running, dead or stopped)."""
    validate_name(name)
    folder = _folder(name)
    if not (folder / "spec.json").exists():
        known = ", ".join(d.name for d in _all()) or "none"
        raise DeploymentNotFoundError(f"No deployment is named {name!r}; deployments: {known}.")
    return Deployment(name, folder)


def _all() -> list[Deployment]:
    home = config.home()
    if not home.is_dir():
        return []
    return [Deployment(p.name, p) for p in sorted(home.iterdir()) if (p / "spec.json").exists()]


def deployments() -> DeploymentList:
    """Every deployment this machine knows (in ``NBDEPLOY_HOME``), with its state."""
    return DeploymentList(_all())


def stop_all() -> list[str]:
    """Stop every running or dead deployment; returns their names."""
    stopped = []
    for d in _all():
        if d.pid is not None or d.deployed:
            d.stop()
            stopped.append(d.name)
    return stopped
