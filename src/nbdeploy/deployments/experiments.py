"""A challenger in front of real traffic: canary and shadow experiments of a deployment.

The experiment is written into the deployment's spec *before* the server is told, and taken
out of it before the server ends it: a server restarted at any moment (``kill -9``
included) serves what the spec says, and replays its counts from the request log.

>>> d.canary("cancer/2", percent=10)        # doctest: +SKIP
>>> d.experiment()                          # doctest: +SKIP
>>> d.conclude(promote=True)                # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nbdeploy.deployments import events
from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError, NbdeployError
from nbdeploy.experiment import ExperimentSpec
from nbdeploy.monitoring.view import variant_distribution_lines
from nbdeploy.reprs import card, esc, fit, table
from nbdeploy.spec import DeploymentSpec, ModelEntry

__all__ = ["ExperimentView", "Experiments"]

_COUNTS = ("requests", "errors", "shadowed", "shadow_errors", "mirror_dropped")


@dataclass
class ExperimentView:
    """What ``%deploy experiment NAME`` shows: the split and the counts per variant."""

    name: str
    state: dict[str, Any] | None
    events: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        s = self.state
        if s is None:
            last = self.events[-1] if self.events else None
            ended = f" The last one: {last['action']} of {last['challenger']} ({last['why']})." if last else ""
            return f"Deployment {self.name}: no experiment running.{ended}"
        c = s["challenger"]
        how = f"{s['percent']:g}% of requests" + (" mirrored" if s["kind"] == "shadow" else "")
        sticky = s["sticky_column"] or s["sticky_header"]
        lines = [f"Deployment {self.name}: {s['kind']} of {c['ref']} (variant {c['label']}), {how}"
                 + (f", sticky by {sticky}" if sticky else "")]  # fmt: skip
        for variant, counts in s["counts"].items():
            shown = ", ".join(f"{k} {counts[k]}" for k in _COUNTS if counts.get(k))
            lines.append(f"  {variant:<12} {shown or 'no requests yet'}")
        for metric, fig in (s.get("stats") or {}).items():
            if fig.get("ready") and fig.get("low") is not None:
                lines.append(f"  {metric:<12} lift {fig['lift']:+.4g} [{fig['low']:+.4g}, {fig['high']:+.4g}] "
                             "(always-valid 95% interval)")  # fmt: skip
        agreement = s.get("agreement")
        if agreement and agreement["rows"]:
            lines.append(f"  agreement    {agreement['rate']:.1%} of {agreement['rows']} rows with the champion")
        for v in s.get("verdicts") or []:
            lines.append(f"  {v['when']} rule: {v['reason']}")
        return fit("\n".join(lines + variant_distribution_lines(s)))

    def _repr_html_(self) -> str:
        s, text = self.state, repr(self).splitlines()
        if s is None:
            return card(f"Deployment {esc(self.name)}", f"<p>{esc(text[0].split(': ', 1)[1])}</p>")
        rows = [[variant, *(counts.get(k, 0) for k in _COUNTS)] for variant, counts in s["counts"].items()]
        figures = [line.strip() for line in text[1 + len(rows):]]  # lifts and agreement, as in the text form
        extra = "".join(f"<p>{esc(line)}</p>" for line in figures)
        return card(esc(text[0]), table(["variant", *(k.replace("_", " ") for k in _COUNTS)], rows) + extra)


class Rules(NamedTuple):
    promote_when: list[str]
    rollback_when: list[str]
    min_labels: int
    webhook: str | None = None


class Experiments(HandleParts):
    """Experiment methods of a deployment (mixed into :class:`~nbdeploy.deployments.Deployment`)."""

    def state(self) -> str:
        raise NotImplementedError

    def canary(self, ref: str, percent: float = 10.0, sticky: str | None = None, sticky_header: str | None = None,
               promote_when: Sequence[str] = (), rollback_when: Sequence[str] = (),
               min_labels: int = 500, webhook: str | None = None) -> ExperimentView:  # fmt: skip
        """Answer ``percent`` of the requests from ``ref``; with ``sticky`` (a column) or
        ``sticky_header``, the same key always meets the same variant. The server promotes the
        challenger once every ``promote_when`` rule holds and drops it once a ``rollback_when``
        rule holds (``"accuracy>=baseline"``, ``"error_rate>baseline+0.01"``: see docs/experiments.md)."""
        rules = Rules(list(promote_when), list(rollback_when), min_labels, webhook)
        return self._start("canary", ref, percent, sticky, sticky_header, rules)

    def shadow(self, ref: str, percent: float = 100.0, promote_when: Sequence[str] = (),
               rollback_when: Sequence[str] = (), min_labels: int = 500,
               webhook: str | None = None) -> ExperimentView:  # fmt: skip
        """Also send ``percent`` of the requests to ``ref`` after answering them from the
        champion; its predictions are logged beside the champion's, never returned."""
        rules = Rules(list(promote_when), list(rollback_when), min_labels, webhook)
        return self._start("shadow", ref, percent, None, None, rules)

    def experiment(self) -> ExperimentView:
        """The running experiment: kind, challenger, split, counts and figures per variant, and
        the last experiments' ends (promoted, rolled back, promotion refused)."""
        doc = self._request("GET", "/experiment").json()
        return ExperimentView(self.name, doc["experiment"], doc.get("events", []))

    def conclude(self, promote: bool = False, abort: bool = False, force: bool = False) -> ExperimentView:
        """End the experiment: ``promote`` moves the ``champion`` alias to the challenger
        (the gated ``promote``: ``force`` as there) and serves it alone; ``abort`` drops it.
        A stopped deployment's spec is changed, and its next start serves what it says."""
        from nbdeploy.deployments import processes

        if promote == abort:
            raise InvalidInputError("Say how the experiment ends: --promote or --abort.")
        with processes.locked(self.path):
            spec = self.spec
            experiment = spec.experiment
            if experiment is None:
                raise DeploymentError(f"Deployment {self.name!r} runs no experiment: nothing to conclude.")
            challenger = experiment.challenger
            if promote:
                self._gate(challenger, force)
            saved = DeploymentSpec.from_dict(spec.to_dict())
            if promote:
                spec.history.append(challenger)
            spec.experiment = None
            spec.save(self.path)
            if promote:  # the challenger replaces the champion
                events.record(self.path, "experiment promoted by hand", challenger, previous=saved.current,
                              forced=bool(force))  # fmt: skip
            else:
                events.record(self.path, "experiment aborted by hand", saved.current, challenger=challenger.resolved)
            if self.state() == "running" and spec.ray is not None:
                self._redeploy(saved)
            elif self.state() == "running":
                self._tell({"action": "promote" if promote else "stop"}, saved, promote and challenger)
        if promote and challenger.version is not None:
            self._move_alias(challenger)
        return ExperimentView(self.name, None)

    def _gate(self, challenger: ModelEntry, force: bool) -> None:
        """Refuse, before anything changes, what ``promote`` would refuse."""
        if challenger.version is None:
            if not force:
                raise InvalidInputError(
                    f"The challenger {challenger.ref} has no registered version, so no alias can move: "
                    "pass --force (force=True) to serve it alone anyway."
                )
            return
        from nbdeploy.registry.promotion import check_promotable

        check_promotable(challenger.resolved or challenger.ref, "champion", force=force)

    def _move_alias(self, challenger: ModelEntry) -> None:
        from nbdeploy.registry.promotion import promote as promote_version

        ref = challenger.resolved or challenger.ref
        try:
            promote_version(ref, "champion", force=True)  # its gate was checked before the switch
        except NbdeployError as exc:
            raise DeploymentError(
                f"Deployment {self.name!r} serves {ref} alone now, but @champion did not move ({exc}); "
                f"move it with %deploy promote {ref} --force."
            ) from None

    def _tell(self, action: dict[str, Any], saved: DeploymentSpec, reload: Any) -> Any:
        """POST ``action`` to the server; when that fails, ask the server what it runs: if it
        already did what was asked (a timeout after the change, a restart that dropped the
        experiment), the new spec stands; otherwise the old one is written back."""
        try:
            return self._request("POST", "/admin/experiment", json=action, timeout=120).json()
        except DeploymentError:
            running = self._server_experiment()
            wanted = self.spec.experiment
            if running is None and wanted is None:
                if reload:  # the server ran no experiment: serve the challenger by a reload instead
                    self._reload(reload)
                return {"experiment": None}
            if running is not None and wanted is not None and running.get("started") == wanted.started:
                return {"experiment": running}
            saved.save(self.path)
            raise

    def _server_experiment(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] | None = self._request("GET", "/experiment", timeout=10).json()["experiment"]
        except (DeploymentError, ValueError, KeyError):
            return None
        return state

    def _reload(self, entry: ModelEntry) -> None:
        raise NotImplementedError

    def _no_experiment(self, verb: str) -> None:
        experiment = self.spec.experiment
        if experiment is not None:
            raise DeploymentError(
                f"Deployment {self.name!r} runs a {experiment.kind} of {experiment.challenger.ref}: conclude it "
                f"(--promote or --abort) before you {verb}."
            )

    def _start(self, kind: str, ref: str, percent: float, sticky: str | None, header: str | None,
               rules: Rules) -> ExperimentView:  # fmt: skip
        from nbdeploy.deployments import models, processes
        from nbdeploy.registry import tracking_uri

        spec = self.spec
        ExperimentSpec(kind, spec.current, percent, sticky, header, 1.0, **rules._asdict()).validate()
        entry = models.fetch(ref, self.path)
        if entry.resolved is not None and entry.resolved == spec.current.resolved:
            raise InvalidInputError(f"{ref} is the version this deployment serves: a challenger is another one.")
        with processes.locked(self.path):
            spec = self.spec
            if spec.experiment is not None:
                raise DeploymentError(
                    f"Deployment {self.name!r} already runs a {spec.experiment.kind} of "
                    f"{spec.experiment.challenger.ref}: conclude it first (--promote or --abort)."
                )
            if self.state() != "running":
                raise DeploymentError(
                    f"Deployment {self.name!r} is {self.state()}: start it to run an experiment.", docs=Docs.STATES
                )
            saved = DeploymentSpec.from_dict(spec.to_dict())
            spec.experiment = ExperimentSpec(
                kind, entry, percent, sticky, header, time.time(), tracking_uri=tracking_uri(), **rules._asdict()
            )
            spec.save(self.path)
            events.record(self.path, f"{kind} started", spec.current, challenger=entry.resolved, percent=percent)
            if spec.ray is not None:
                self._redeploy(saved)
                return self.experiment()
            state = self._tell({"action": "start", "experiment": spec.experiment.to_dict()}, saved, None)
        return ExperimentView(self.name, state["experiment"], state.get("events", []))

    def _redeploy(self, saved: DeploymentSpec) -> None:
        """A Ray deployment's experiment starts and ends by a rolling update of its replicas
        (each serves both variants); if Ray refuses it, the spec before is written back."""
        from nbdeploy.deployments import ray_client

        try:
            ray_client.ctl(self.path, "deploy")
        except NbdeployError:
            saved.save(self.path)
            raise
