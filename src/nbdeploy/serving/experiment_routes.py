"""``GET /experiment`` and ``POST /admin/experiment``: start, stop or promote a challenger.

The kernel saves the experiment in the deployment's spec, then tells the server (so a server
restarted at any moment serves what the spec says). ``POST /admin/experiment`` takes

- ``{"action": "start", "experiment": ExperimentSpec.to_dict()}``: load the challenger (from
  the deployment's models folder only) and route to it from the next request on;
- ``{"action": "stop"}``: route nothing more to it, finish what it was given, drop it;
- ``{"action": "promote"}``: the challenger becomes the model (from the next batch on, as a
  reload), then the experiment stops as above. No request is dropped by either.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from nbdeploy.errors import InvalidInputError
from nbdeploy.experiment import ExperimentSpec
from nbdeploy.privacy import keeps_private
from nbdeploy.serving.bodies import read_body
from nbdeploy.serving.followed_shadow import FollowedShadow
from nbdeploy.serving.loader import load, read_signature
from nbdeploy.serving.model_process import InProcessModel, ModelProcess
from nbdeploy.serving.monitor_routes import MonitorBackend
from nbdeploy.serving.protocol import ProtocolError, Schema
from nbdeploy.serving.responses import json_response
from nbdeploy.serving.server import Server
from nbdeploy.serving.shadow_follower import LOG_FILE
from nbdeploy.serving.variants import Experiment

if TYPE_CHECKING:
    from nbdeploy.spec import ServerSettings

__all__ = ["ExperimentRoutes", "load_entry", "prepare"]

_ACTIONS = ("start", "stop", "promote")


class ExperimentRoutes:
    def __init__(self, server: Server, monitor: MonitorBackend) -> None:
        self.server, self.monitor = server, monitor
        self._lock = asyncio.Lock()  # one change at a time

    async def state(self, request: Request) -> Response:
        """The experiment and its last ends: this server's, or on Ray those the hub merged."""
        return json_response(await self.monitor.experiment())

    async def change(self, request: Request) -> Response:
        doc = _body(await read_body(request, 1 << 20))
        if not self.server.settings.reload:
            raise ProtocolError(409, "This server is one replica of a Ray deployment, whose experiments start and "
                                     "end by a rolling update: use %deploy canary, shadow or conclude.")  # fmt: skip
        async with self._lock:
            if doc["action"] == "start":
                experiment = await asyncio.to_thread(prepare, self.server, doc.get("experiment"))
                experiment.start()
                self.server.experiment = experiment
            else:
                await self._end(promote=doc["action"] == "promote")
        return await self.state(request)

    async def _end(self, promote: bool) -> None:
        experiment = self.server.experiment
        if experiment is None:
            raise ProtocolError(409, "No experiment is running on this deployment.", "INVALID_STATE")
        if promote:  # the challenger's model, loaded here, serves as the champion from the next batch on
            c = experiment.spec.challenger
            try:
                model, profile = await asyncio.to_thread(load_entry, self.server, c.model_path, c.profile_path)
            except Exception as exc:  # the experiment goes on, the champion unchanged
                raise ProtocolError(400, f"The challenger could not be loaded: {type(exc).__name__}: {exc}.") from exc
            self.server.swap(model, c.ref, c.version)
            self.server.monitor.set_profile(profile, c.task)
        self.server.experiment = None  # routes nothing more to the challenger; it finishes what it has
        await experiment.close(self.server.batcher)


def _inside(server: Server, path: str) -> Path:
    """``path``, refused unless it lies in the deployment's models folder."""
    folder = server.settings.folder
    resolved = Path(path).resolve()
    if folder is not None and not resolved.is_relative_to((Path(folder) / "models").resolve()):
        raise ProtocolError(400, "The challenger's files must be inside the deployment's models folder.")
    return resolved


def load_entry(server: Server, model_path: str, profile_path: str | None) -> tuple[Any, Any]:
    """The challenger's model and training profile, loaded in this process (to become the champion)."""
    model = load(_inside(server, model_path))
    profile = json.loads(_inside(server, profile_path).read_text()) if profile_path else None
    return model, profile


def prepare(server: Server, doc: Any, counts_here: bool = True) -> Experiment | FollowedShadow:
    """The experiment ``doc`` describes, its challenger loaded (a 4xx for what cannot be
    served); the caller starts it and sets ``server.experiment`` (on the event loop).
    ``counts_here`` False: a Ray deployment's hub keeps its accounts, from every replica's records."""
    if server.experiment is not None:
        raise ProtocolError(409, "An experiment is already running: conclude it first.", "INVALID_STATE")
    try:
        spec = ExperimentSpec.from_dict(doc)
        spec.validate()
    except InvalidInputError as exc:
        raise ProtocolError(400, str(exc)) from None
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        raise ProtocolError(400, "The field 'experiment' must describe one (kind, challenger, percent).") from None
    if spec.started <= 0:
        raise ProtocolError(400, "The field 'experiment' needs its start time ('started', seconds since 1970).")
    path = _inside(server, spec.challenger.model_path)
    if spec.challenger.profile_path is not None:
        _inside(server, spec.challenger.profile_path)
    try:
        inputs, _ = read_signature(path)
    except Exception as exc:
        raise ProtocolError(400, f"The challenger's signature could not be read: {type(exc).__name__}: {exc}.") from exc
    names = Schema.from_signature(inputs).names
    if names != server.schema.names:
        raise ProtocolError(400, "The challenger takes other input columns than the champion: an experiment "
                                 "compares models of the same inputs.")  # fmt: skip
    if spec.sticky_column is not None and spec.sticky_column not in names:
        raise ProtocolError(400, f"The sticky column {spec.sticky_column[:60]!r} is not an input of the model.")
    s = server.settings
    profile = server.monitor.profile  # the champion's training profile: both variants' drift against one reference
    task = server.monitor.task if s.monitor else s.task  # the model serving now (after a reload too)
    if names and follows_log(server, spec):  # (a model without input names: the rows cannot be rebuilt)
        shadow = _followed_shadow(server, spec, str(path), names, task, profile)
        _load(shadow.load)
        return shadow
    model = _challenger(s, str(path), shadow=spec.kind == "shadow")
    _load(model.start)
    experiment = Experiment(spec, model, names, server.log, s.max_batch, s.max_wait_ms, s.log_rows, task, profile,
                            counts_here=counts_here)  # fmt: skip
    experiment.answering = lambda: server.answering
    return experiment


def _challenger(s: ServerSettings, path: str, shadow: bool) -> Any:
    """The challenger's model, not loaded yet: in a process of the server's own; on a Ray replica
    (which spawns no process) a shadow in a Ray actor and a canary on a thread. A shadow gets
    only the CPU left over."""
    if shadow and s.shadow_actor:
        from nbdeploy.serving.ray_shadow import ActorModel  # Ray only where Ray serves

        return ActorModel(path, idle=True, name=f"nbdeploy-shadow-{s.name}")
    return (ModelProcess if s.parse_process else InProcessModel)(path, idle=shadow)


def follows_log(server: Server, spec: ExperimentSpec) -> bool:
    """Whether a shadow reads the request log rather than being sent each request: a local
    server's (in a process it spawns), or a Ray replica's that reports to a hub (in an actor);
    not where the log has hashed or no inputs (no rows to predict)."""
    s = server.settings
    here = s.parse_process and server.log.path.name == LOG_FILE
    return spec.kind == "shadow" and (here or s.shadow_hub is not None) and not keeps_private(s.log_inputs, s.redact)


def _followed_shadow(server: Server, spec: ExperimentSpec, path: str, names: tuple[str, ...], task: str | None,
                     profile: dict[str, Any] | None) -> FollowedShadow:  # fmt: skip
    s, log = server.settings, server.log.path
    if s.shadow_hub is None:
        return FollowedShadow(spec, path, names, log.parent, s.log_rows, task, profile)
    from nbdeploy.serving.ray_follower import RayFollowedShadow  # Ray only where Ray serves

    return RayFollowedShadow(spec, path, names, log.parent, s.log_rows, task, profile, log_name=log.name,
                             hub_app=s.shadow_hub, name=s.name)  # fmt: skip


def _load(start: Callable[[], None]) -> None:
    try:
        start()
    except Exception as exc:  # whatever the folder holds, the champion keeps serving
        raise ProtocolError(400, f"The challenger could not be loaded: {type(exc).__name__}: {exc}.") from exc


def _body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("action") not in _ACTIONS:
        raise ProtocolError(400, "The body must be JSON with an 'action' of start, stop or promote.")
    return doc
