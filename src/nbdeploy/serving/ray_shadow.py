"""A Ray replica's shadow, predicting in a Ray actor of its own.

A Ray replica spawns no process itself (Ray places and restarts processes), so its canary's
challenger predicts on a thread of the replica's process. A shadow there shared the process
that answers the champion's clients: a shadow's model that crashed it or exhausted its memory
took the champion down with it, and its batches took turns with the champion's on one
interpreter lock. Here the shadow's model lives in an actor that Ray starts on the replica's
node, owned by the replica (it dies with it), with no CPU of Ray's bookkeeping (``num_cpus=0``:
it takes nothing a replica could be placed on) and every thread under ``SCHED_IDLE``: it gets
only the CPU the replicas leave. Ray starts it again if it dies. The shadow's records, counts
and comparison stay the replica's and its hub's, as before.

A shadow whose replica logs inputs in clear and reports to a hub does not use this: its actor
reads the replica's log instead (:mod:`~nbdeploy.serving.ray_follower`). This one is sent each
mirror where the log holds no rows to predict (hashed or no inputs) or there is no hub.

Measured on a 2-core machine (``BENCH_TARGET=ray python bench/shadow_cost.py``, the same
morning), one client's p99 with a shadow over without was no different from the thread's
(1.166 against 1.175; with a 500-tree shadow 0.959 against 0.966): there the replicas, hubs,
proxy and load share two cores, and the interpreter lock is not what a shadow costs.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

__all__ = ["NAMESPACE", "ActorModel"]

NAMESPACE = "nbdeploy"  # of the challengers' actors, named nbdeploy-shadow-<deployment>-<8 hex>

MAX_RESTARTS = 100
_START_S = 300.0  # a model's load may take minutes (a large artefact from a slow disk)


def idle_threads() -> None:
    """Every thread of this process (a Ray worker has several before the actor's code runs) on
    ``SCHED_IDLE``; threads started later inherit it. A thread that ended meanwhile is passed
    over. Without ``SCHED_IDLE`` (not Linux) the process is left as it is."""
    if not hasattr(os, "SCHED_IDLE"):
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
        except OSError:  # ended since the listing
            continue


# started again each time it dies (up to MAX_RESTARTS: a model that kills its process as it loads
# must not be loaded for ever), as a server's challenger process is; a batch it was predicting then
# is predicted again by the new one (a prediction has no side effect), so one death loses nothing,
# and a batch that kills it twice fails alone (the next batch meets a new actor)
@ray.remote(num_cpus=0, max_restarts=MAX_RESTARTS, max_task_retries=1)
class _ShadowWorker:
    """The challenger's model; its answers are ``("ok", value)`` or ``("error", exception)``, so
    that a model's error reaches the replica as raised here, not wrapped in Ray's."""

    def __init__(self, path: str, idle: bool) -> None:
        if idle:
            idle_threads()
        from nbdeploy.serving.loader import load
        from nbdeploy.serving.model_process import portable

        self.model: Any = None
        self.failure: BaseException | None = None
        try:  # in the constructor, so that Ray's restart loads it again
            self.model = load(path)
        except BaseException as exc:
            self.failure = portable(exc)

    def ready(self) -> tuple[str, Any]:
        if self.model is None:
            return "error", self.failure
        return "ok", (sorted(self.model.methods), os.getpid())

    def predict(self, rows: Any, names: tuple[str, ...], method: str) -> tuple[str, Any, int]:
        """The answer, and this process's id (a restarted actor has a new one)."""
        from nbdeploy.serving.batching import frame, predictions
        from nbdeploy.serving.model_process import portable

        if self.model is None:
            return "error", self.failure, os.getpid()
        try:  # the DataFrame built and the output listed here: work off the replica's process
            return "ok", predictions(self.model.call(frame(rows, names), method)), os.getpid()
        except Exception as exc:
            return "error", portable(exc), os.getpid()


class ActorModel:
    """``await predict(rows, names)`` by the model at ``path``, loaded in an actor on this
    node (``path`` is this node's copy of the challenger's files); ``idle``: a shadow's."""

    def __init__(self, path: str, idle: bool = False, name: str = "nbdeploy-challenger") -> None:
        self.path, self.idle = path, idle
        # named (unique: a stopped one's name is freed only once it is dead), so `ray list actors`
        # tells whose it is
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self._actor: Any = None
        self.methods: frozenset[str] = frozenset({"predict"})
        self.pid: int | None = None  # the actor's process (on this node): the server samples its CPU and memory

    def start(self, timeout: float = _START_S) -> None:
        """Start the actor and wait for its model; the loader's error as raised there."""
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        options = {"scheduling_strategy": here, "name": self.name, "namespace": NAMESPACE}
        self._actor = _ShadowWorker.options(**options).remote(self.path, self.idle)  # type: ignore[attr-defined]
        try:
            kind, value = ray.get(self._actor.ready.remote(), timeout=timeout)
        except RayError as exc:
            self.stop()
            raise RuntimeError(f"the challenger's actor did not start: {type(exc).__name__}") from None
        if kind == "error":
            self.stop()
            raise value
        methods, self.pid = value
        self.methods = frozenset(methods)

    async def predict(self, rows: Any, names: tuple[str, ...], method: str = "predict") -> list[Any]:
        actor = self._actor
        if actor is None:
            raise RuntimeError("the challenger's actor is stopped")
        try:
            kind, value, self.pid = await actor.predict.remote(rows, names, method)
        except (RayActorError, ActorUnavailableError) as exc:  # this batch killed it twice: lost to the shadow
            raise RuntimeError(f"the challenger's actor died while it predicted ({type(exc).__name__})") from None
        except RayError as exc:  # raised in the actor outside the model's call (its arguments, say)
            raise RuntimeError(f"the challenger's actor failed: {type(exc).__name__}") from None
        if kind == "error":
            raise value
        return list(value)

    def stop(self) -> None:
        actor, self._actor = self._actor, None
        if actor is not None:
            ray.kill(actor, no_restart=True)
