"""Session-wide test environment, for tests/ and the notebooks nbval runs.

MLflow must not phone home (the machines are offline), and nothing a test run writes may
land in the work tree or in the user's own stores: the tracking store and deployments go to a
temporary folder that every kernel nbval starts inherits through the environment.

Every cell nbval executes must also read clean (#16): no stderr output and no warning text
(a library's log line or a Python warning) in any output of a notebook in ``notebooks/``.

The suite runs in two pytest-xdist workers (``-n 2`` in pyproject.toml; ``pytest -n 0`` runs
it in one process):

- each worker has a tracking store and a deployments folder of its own, in the run's folder;
- each worker's processes use one thread per numerical library's pool (OpenMP, BLAS, Arrow's)
  unless the environment says otherwise: two workers share two cores, and a pool per process
  spins on the core the other is using;
- a file's tests run on one worker (:class:`FileScheduling`);
- a test marked ``alone`` measures CPU or latency, so no other test runs meanwhile: the other
  worker finishes the test it runs and waits. What that worker's file keeps up between its
  tests (a server, a kernel, Ray's cluster) stays up, idle;
- the files of ``alone`` tests and then Ray's two files (about a third of the suite, one
  cluster at a time) are handed out first, as one queue: one worker runs it while the other
  runs the rest, so an ``alone`` test waits for the other worker's current test, never for one
  of Ray's (a minute or two each).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from tests.notebook_outputs import unclean_outputs

RAY_FILES = ("test_ray.py", "test_ray_start.py")
# the files with a test marked ``alone``, then Ray's: one worker's queue, in this order
FIRST_FILES = ("test_capacity.py", "test_noisy_neighbour.py", "test_alerts.py", "test_experiments.py",
               "test_retrain.py", *RAY_FILES)  # fmt: skip
# the run's folder: made by the process pytest started, inherited by its workers
_OWN_RUN = "NBDEPLOY_TESTS_RUN" not in os.environ
if _OWN_RUN:
    os.environ["NBDEPLOY_TESTS_RUN"] = tempfile.mkdtemp(prefix="nbdeploy-tests-")
_RUN = Path(os.environ["NBDEPLOY_TESTS_RUN"])
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:  # before numpy or scikit-learn is loaded: their pools read it once; servers and kernels inherit it
    for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_pool, "1")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    config.addinivalue_line("markers", "alone: measures CPU or latency, so runs while no other test does")
    state = _RUN / (_WORKER or "main")  # never the user's MLFLOW_TRACKING_URI or NBDEPLOY_HOME
    state.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{state}/mlflow.db"
    os.environ["NBDEPLOY_HOME"] = f"{state}/deployments"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_RUN and not _WORKER:  # every worker's state too, even one of a worker that crashed
        shutil.rmtree(_RUN, ignore_errors=True)


def _scope(nodeid: str) -> str:
    file = nodeid.split("::", 1)[0]
    return "first" if Path(file).name in FIRST_FILES else file


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own choice
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        """A file's tests to one worker, the ``FIRST_FILES`` together; in the order collected."""

        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return FileScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``FIRST_FILES`` first, in their order (``--no-loadscope-reorder`` keeps it); the rest
    as collected."""
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST_FILES)))  # stable


def pytest_runtest_setup(item: pytest.Item) -> None:
    """An ``alone`` test outside the ``FIRST_FILES`` fails with the fix: the scheduler, in the
    controlling process, sees test ids only, not marks. (A collection error raised in a worker
    would never be shown: xdist reports only that no worker is left.)"""
    if item.get_closest_marker("alone") and _scope(item.nodeid) != "first":
        pytest.fail(f"{item.path.name} has a test marked alone: add it to FIRST_FILES in conftest.py", pytrace=False)


class _Room:
    """This worker's share of the machine: a shared lock on ``room`` while one of its tests runs,
    the room alone for an ``alone`` test. ``gate`` is held by a worker waiting to be alone, so
    the other worker does not start a test meanwhile (it would never be let in otherwise).

    Held test by test, never between tests: a worker waits between two tests for the next one
    (xdist runs a test once it knows the one after it), and held then, at the end of the run
    it would keep the other worker's ``alone`` test out forever."""

    def __init__(self) -> None:
        (_RUN / "locks").mkdir(parents=True, exist_ok=True)
        self.gate: IO[str] = (_RUN / "locks" / "gate").open("a")
        self.room: IO[str] = (_RUN / "locks" / "room").open("a")

    @contextlib.contextmanager
    def turn(self, alone: bool) -> Iterator[None]:
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self.gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self.gate, fcntl.LOCK_UN)


_room = _Room() if _WORKER else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if _room is None:
        return (yield)
    with _room.turn(alone=item.get_closest_marker("alone") is not None):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    outputs = getattr(item, "test_outputs", None)  # a cell nbval executed
    if outputs:
        found = unclean_outputs(outputs)
        if found:
            raise AssertionError(f"{item.nodeid}: output a reader should not see:\n" + "\n".join(found))
    return result
