"""A Ray replica's shadow that reads the replica's request log, in a Ray actor on its node.

As a local server's shadow (:mod:`~nbdeploy.serving.followed_shadow`), the replica does
nothing for it per request but log the request, which it does anyway: an actor on the
replica's node (so that it reads the same files), under ``SCHED_IDLE`` and with no CPU of
Ray's bookkeeping (:mod:`~nbdeploy.serving.ray_shadow`), looks at
``requests-<replica>.jsonl`` every :data:`~nbdeploy.serving.shadow_follower.LOOK_S`, predicts
the mirrored requests with the challenger, appends the shadow's records to that log and sends
them to the deployment's hub, which keeps the experiment's accounts for every replica (the
replica sends the champion's). It neither counts nor reads labels itself: the hub does.

Why: a replica that sent each mirror to an actor spent on it, in the process that answers
the clients, a Ray call per batch and a record per request; one client's p99 with a shadow
was 1.17 times that without (``BENCH_TARGET=ray python bench/shadow_cost.py``).

Ray starts the actor again if it dies (its constructor replays the log from the experiment's
start, so the mirrors answered before its death whose shadow record never came are
predicted then). To stop, it is told to, takes a last look flat out and sends what it wrote.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.serving.followed_shadow import FollowedShadow, look_safely
from nbdeploy.serving.hub_follower import HubFollower
from nbdeploy.serving.ray_shadow import MAX_RESTARTS, NAMESPACE, idle_threads
from nbdeploy.serving.shadow_follower import LOOK_S

__all__ = ["RayFollowedShadow"]

_START_S = 300.0  # a model's load and the log's replay
_STOP_S = 15.0  # for its last look (a replica has 30 s to stop, 5 of them for its last forward); then it is killed
_PID_EVERY_S = 5.0  # how often the actor's process id is asked again (a restarted actor has a new one)


@ray.remote(num_cpus=0, max_restarts=MAX_RESTARTS)
class _FollowingWorker:
    """The challenger's model and a thread that looks at the replica's log until told to stop."""

    def __init__(self, args: dict[str, Any]) -> None:
        idle_threads()
        from nbdeploy.serving.loader import load
        from nbdeploy.serving.model_process import portable

        self.follower: HubFollower | None = None
        self.failure: BaseException | None = None
        self._stop, self._stopped = threading.Event(), threading.Event()
        try:  # in the constructor, so that Ray's restart loads and replays again
            hub = serve.get_deployment_handle("Hub", app_name=args["hub_app"])
            follower = HubFollower(load(args["path"]), ExperimentSpec.from_dict(args["spec"]), tuple(args["names"]),
                                   Path(args["folder"]), args["log_rows"], args["task"], args["profile"],
                                   log_name=args["log_name"], hub=hub)  # fmt: skip
            follower.since = args["since"]
            follower.replay()
        except BaseException as exc:
            self.failure = portable(exc)
            return
        self.follower = follower
        threading.Thread(target=self._follow, name="nbdeploy-shadow", daemon=True).start()

    def _follow(self) -> None:
        assert self.follower is not None
        while not self._stop.wait(LOOK_S):
            look_safely(self.follower)
        look_safely(self.follower, paced=False)  # the last: every request logged so far gets its shadow record
        self._stopped.set()

    def ready(self) -> tuple[str, Any]:
        if self.follower is None:
            return "error", self.failure
        return "ok", os.getpid()

    def stop(self, timeout: float) -> bool:
        self._stop.set()
        return self._stopped.wait(timeout) if self.follower is not None else True


class RayFollowedShadow(FollowedShadow):
    """The replica's face of the shadow: nothing per request but a count; its accounts,
    state and verdict are the hub's."""

    def __init__(self, spec: ExperimentSpec, path: str, names: tuple[str, ...], folder: Path, log_rows: int,
                 task: str | None, profile: dict[str, Any] | None, *, log_name: str, hub_app: str,
                 name: str) -> None:  # fmt: skip
        super().__init__(spec, path, names, folder, log_rows, task, profile)
        self._args.update(log_name=log_name, hub_app=hub_app)
        self.name = f"nbdeploy-shadow-{name}-{uuid.uuid4().hex[:8]}"  # `ray list actors` tells whose it is
        self._actor: Any = None
        self._pid: int | None = None
        self._pid_asked: Any = None
        self._pid_at = 0.0
        self._said: str | None = None  # the last failure said

    @property
    def pid(self) -> int | None:
        """The actor's process (the replica samples its CPU and memory), asked again every few
        seconds without waiting: a restarted actor has a new one."""
        asked, actor = self._pid_asked, self._actor
        if asked is not None and ray.wait([asked], timeout=0)[0]:
            self._pid_asked = None
            try:
                kind, value = ray.get(asked)
            except RayError as exc:  # restarting; or dead for good (its restarts spent)
                kind, value = "error", exc
            if kind == "ok":
                self._pid, self._said = value, None
            else:
                self._say(f"the shadow's actor does not predict: {type(value).__name__}: {value}"[:300])
        if self._pid_asked is None and actor is not None and time.monotonic() >= self._pid_at:
            self._pid_asked, self._pid_at = actor.ready.remote(), time.monotonic() + _PID_EVERY_S
        return self._pid

    def _say(self, failure: str) -> None:
        """In the replica's log (``%deploy logs``), once until it predicts again."""
        if failure != self._said:
            self._said = failure
            print(f"experiment: {failure}", flush=True)

    def load(self, timeout: float = _START_S) -> None:
        """Start the actor; return once it has loaded the model and replayed the log."""
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        options = {"scheduling_strategy": here, "name": self.name, "namespace": NAMESPACE}
        self._actor = _FollowingWorker.options(**options).remote(self._args)  # type: ignore[attr-defined]
        try:
            kind, value = ray.get(self._actor.ready.remote(), timeout=timeout)
        except RayError as exc:
            self._kill()
            raise RuntimeError(f"the shadow's actor did not start: {type(exc).__name__}") from None
        if kind == "error":
            self._kill()
            raise value
        self._pid = value

    def fold(self) -> None:
        """Nothing to read: the hub keeps the accounts (and Ray restarts the actor)."""

    def _stop(self) -> None:
        actor = self._actor
        if actor is not None:
            try:
                ray.get(actor.stop.remote(_STOP_S), timeout=_STOP_S + 5)
            except RayError:  # dead, or too slow: what it has not looked at stays in the log
                pass
        self._kill()

    def _kill(self) -> None:
        actor, self._actor, self._pid = self._actor, None, None
        if actor is not None:
            ray.kill(actor, no_restart=True)
