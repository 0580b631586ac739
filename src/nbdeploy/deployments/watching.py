"""What a :class:`~nbdeploy.deployments.Deployment` says about its traffic: the ``/monitor``
document, labels sent back, alert rules, and the live panel (the one door from the core to
:mod:`nbdeploy.widgets`, imported only when called).

>>> d.snapshot("1m")["windows"]["1m"]["requests"]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbdeploy.deployments import events
from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.spec import DEFAULT_ALERT_K, DeploymentSpec

__all__ = ["HandleParts", "Watching"]


_BASELINE = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*baseline\s*(?:([+-])\s*(\d+(?:\.\d+)?))?\s*$")
#: Alert metrics that can be compared with the served version's last validation, and the figure they take.
BASELINE_METRICS = {"accuracy": "accuracy", "est_accuracy": "accuracy", "rmse": "rmse"}


def with_baseline(rule: str, version: str | None) -> str:
    """``rule`` with ``baseline`` (``est_accuracy<baseline-0.05``) replaced by the served
    version's figure in its last validation, as a number the server's rules take."""
    match = _BASELINE.match(rule or "")
    if not match:
        return rule
    metric, op, sign, delta = match.groups()
    if metric not in BASELINE_METRICS:
        raise InvalidInputError(f"'baseline' in the alert rule {rule!r} is the served version's validation figure, "
                                f"known for {', '.join(BASELINE_METRICS)}.",
                                docs=Docs.ALERTS)  # fmt: skip
    from nbdeploy import registry

    figure = registry.validation_metric(version, BASELINE_METRICS[metric]) if version else None
    if figure is None:
        raise InvalidInputError(f"The alert rule {rule!r} compares with the served version's last validation, but "
                                f"{version or 'it'} has no {BASELINE_METRICS[metric]} recorded: validate it first, "
                                "or give a number.", docs=Docs.ALERTS)  # fmt: skip
    threshold = figure + (float(delta) if sign == "+" else -float(delta) if sign == "-" else 0.0)
    return f"{metric}{op}{threshold:.6g}"


def check_priced(rules: Sequence[str], price: float | None) -> Sequence[str]:
    """``rules``, checked: a cost rule on a deployment without a price would never fire."""
    from nbdeploy.monitoring.alerts import PRICED

    priced = [r for r in rules if r.strip().startswith(PRICED)]
    if priced and price is None:
        raise InvalidInputError(f"The alert rule {priced[0]!r} needs the price of a core-hour: serve with "
                                "--core-hour-price (or %config DeployMagics.core_hour_price) first.",
                                docs=Docs.COST)  # fmt: skip
    return rules


class HandleParts:
    """What the method groups of a :class:`~nbdeploy.deployments.Deployment` use of it (the
    handle defines them): its name and folder, its spec, and HTTP calls to its server."""

    name: str
    path: Path

    @property
    def spec(self) -> DeploymentSpec:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def state(self) -> str:
        raise NotImplementedError

    @property
    def deployed(self) -> bool:
        raise NotImplementedError

    def _request(self, method: str, route: str, timeout: float = 60, **kw: Any) -> Any:
        raise NotImplementedError


class Watching(HandleParts):
    """Monitoring methods of a deployment, over its server's HTTP endpoints."""

    def snapshot(self, window: str | None = None) -> dict[str, Any]:
        """The server's ``GET /monitor`` document (all windows, or the one named)."""
        params = {"window": window} if window else None
        data: dict[str, Any] = self._request("GET", "/monitor", params=params).json()
        return data

    def feedback(self, ids: Any, y: Any) -> dict[str, Any]:
        """Send true labels for answered requests (by ``X-Request-Id``); live accuracy uses them."""
        import numpy as np

        ids_list = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
        # one label per request, or a list of them per request of several rows (lists of any lengths)
        y = y.to_numpy() if hasattr(y, "to_numpy") else y  # a DataFrame iterates over its column names
        targets = y.tolist() if hasattr(y, "tolist") else [np.asarray(t).tolist() for t in y]
        if len(ids_list) != len(targets):
            raise InvalidInputError(
                f"There are {len(ids_list)} ids but {len(targets)} targets; give one target per request id."
            )
        result: dict[str, Any] = self._request("POST", "/feedback", json={"ids": ids_list, "targets": targets}).json()
        return result

    def alerts(
        self, add: Sequence[str] = (), *, clear: bool = False, webhook: str | None = None, k: int = DEFAULT_ALERT_K
    ) -> dict[str, Any]:
        """Add alert rules (or ``clear`` them) and return rules, firing ones and recent events."""
        from nbdeploy.monitoring.alerts import rule_specs

        if webhook and not add:
            raise InvalidInputError("A webhook applies to the rules added with it: give --add RULE too.")
        spec = self.spec
        rules = [] if clear else list(spec.alerts)
        if spec.current.task == "regression" and any(r.strip().startswith("est_accuracy") for r in add):
            raise InvalidInputError(f"est_accuracy is a classifier's: {spec.current.ref} is a regressor "
                                    "(watch rmse once labels arrive).")  # fmt: skip
        check_priced(add, spec.core_hour_price)
        rules += rule_specs([with_baseline(r, spec.current.resolved) for r in add], webhook, k)
        if add or clear:
            result: dict[str, Any] = self._request("POST", "/admin/alerts", json={"rules": rules}).json()
            before = [r["rule"] for r in spec.alerts]
            spec.alerts = rules
            spec.save(self.path)
            events.record(self.path, "alert rules changed", None, before=before, after=[r["rule"] for r in rules])
            return result
        alerts: dict[str, Any] = self.snapshot(spec.alert_window)["alerts"]
        return alerts

    def loadtest(
        self,
        data: Any = None,
        *,
        connections: int | Sequence[int] = (1, 16, 64),
        duration: str | float = "10s",
        rows_per_request: int = 1,
        gates: str | Sequence[str] = (),
        record: bool = True,
    ) -> Any:
        """Drive the deployment with wrk at each connection count for ``duration`` and report
        throughput, latency, CPU seconds per 1,000 predictions and peak memory (a
        :class:`~nbdeploy.capacity.LoadTestReport`), recorded on the served version in MLflow.
        ``data``: rows to send (default: the model's input example); ``gates`` such as
        ``"p99_ms<=50"`` or ``"rps>=500"`` (see :mod:`nbdeploy.capacity.gates`)."""
        from nbdeploy.capacity import loadtest
        from nbdeploy.deployments import http
        from nbdeploy.model_entry import read_serving_example

        if data is None and rows_per_request != 1:
            raise InvalidInputError("--rows cuts --data into requests: give --data too (the input example is sent "
                                    "as it is).")  # fmt: skip

        def bodies() -> tuple[list[str], int]:
            if data is not None:
                return http.request_bodies(data, rows_per_request), rows_per_request
            example = read_serving_example(self.spec.current.model_path)
            if example is None:
                raise InvalidInputError(f"{self.spec.current.ref} was logged without an input example: give rows "
                                        "to send with --data X_test.")  # fmt: skip
            return [json.dumps(example)], http.example_rows(example)

        connections = [connections] if isinstance(connections, int) else list(connections)
        gates = [gates] if isinstance(gates, str) else list(gates)
        return loadtest(self, bodies, connections=connections, duration=duration, gates=gates, record=record)

    def recommend(self, target_rps: float, p99_ms: float, utilization: float = 0.7) -> Any:
        """Replicas and CPUs for ``target_rps`` at ``p99_ms``, from the served version's last
        load test, with the arithmetic shown (:mod:`nbdeploy.capacity.sizing`)."""
        from nbdeploy import registry
        from nbdeploy.capacity.sizing import recommend
        from nbdeploy.registry.loadtests import latest_loadtest

        current = self.spec.current
        tags = registry.resolve(current.resolved).tags if current.version is not None and current.resolved else {}
        return recommend(latest_loadtest(tags), target_rps, p99_ms, utilization)

    def monitor(self, interval: float = 2.0, window: str | None = None, panel: bool = False) -> Any:
        """A live monitoring widget; the one door from the core to :mod:`nbdeploy.widgets`,
        imported only when called. ``window`` is one of the deployment's windows (default: its first)."""
        known = list(self.spec.windows)
        window = window or known[0]
        if window not in known:
            raise InvalidInputError(
                f"Unknown window {window!r}; windows of {self.name!r}: {', '.join(known)}.", docs=Docs.WINDOWS
            )
        from nbdeploy.widgets.monitor import show_monitor

        return show_monitor(self, interval=interval, window=window, panel=panel)
