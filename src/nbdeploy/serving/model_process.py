"""A challenger's model served from a process of its own.

In the server's process a second model would predict on a second thread, and both threads
would take turns on one interpreter lock: a shadow's predictions then delayed the champion's
answers (client p99 2.8 times as long with a shadowed forest, one connection), and a canary's small
batches cut throughput to 0.6 times (16 connections). In a process of its own the challenger predicts on the other
core; a shadow's process also runs under ``SCHED_IDLE``, so that when the machine is busy
the champion's clients come first and the shadow gets what is left (it never preempts them).

The process is spawned (never forked from a server that runs threads), dies with the server
however the server dies (``PR_SET_PDEATHSIG``), and is replaced once if it dies while the
server lives (its model loaded again).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from nbdeploy.serving.bodies import die_with

__all__ = ["InProcessModel", "ModelProcess"]

_model: Any = None  # in the worker: the model it serves


def _start(parent: int, idle: bool) -> None:
    die_with(parent)
    if idle:  # run only on a CPU nothing else wants (Linux), else at the lowest priority
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
        except (AttributeError, OSError):
            os.nice(19)


def _load(path: str) -> None:
    global _model
    from nbdeploy.serving.loader import load

    _model = load(path)


def _predict(X: Any) -> Any:
    return _model.predict(X)


class ModelProcess:
    """``predict(X)`` by the model at ``path``, loaded in a worker process."""

    def __init__(self, path: str, idle: bool = False) -> None:
        self.path, self.idle = path, idle
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self, timeout: float = 300.0) -> None:
        """Spawn the worker and load the model in it; the loader's error as raised there."""
        with self._lock:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start, initargs=(os.getpid(), self.idle),
            )  # fmt: skip
            try:
                self._pool.submit(_load, self.path).result(timeout)
            except BaseException:
                self._shutdown()
                raise

    def predict(self, X: Any) -> Any:
        for _attempt in range(2):
            pool = self._pool
            if pool is None:
                raise RuntimeError("the challenger's process is stopped")
            try:
                return pool.submit(_predict, X).result()
            except BrokenProcessPool:  # killed (the OOM killer, a signal): load it again, once
                self.stop()
                self.start()
        raise RuntimeError("the challenger's process died twice in a row")

    def stop(self) -> None:
        with self._lock:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class InProcessModel:
    """The challenger loaded in the server's own process, for servers that start no processes
    of their own (a Ray replica: Ray places and restarts processes, not nbdeploy). It predicts
    on its batcher's thread and takes turns with the champion on the interpreter lock."""

    def __init__(self, path: str, idle: bool = False) -> None:
        self.path = path
        self._model: Any = None

    def start(self) -> None:
        from nbdeploy.serving.loader import load

        self._model = load(self.path)

    def predict(self, X: Any) -> Any:
        if self._model is None:
            raise RuntimeError("the challenger is stopped")
        return self._model.predict(X)

    def stop(self) -> None:
        self._model = None
