"""Session-wide test environment, for tests/ and the notebooks nbval runs.

MLflow must not phone home (the machines are offline), and nothing a test run writes may
land in the work tree: the tracking store and deployments go to a temporary folder that
every kernel nbval starts inherits through the environment.

Every cell nbval executes must also read clean (#16): no stderr output and no warning text
(a library's log line or a Python warning) in any output of a notebook in ``notebooks/``.

The suite runs in two pytest-xdist workers (``-n 2`` in pyproject.toml; ``pytest -n 0`` runs
it in one process). Each worker has a tracking store and deployments folder of its own; a
file's tests stay on one worker, and Ray's two files on the same one (one cluster at a time),
handed out first; a test marked ``alone`` (it measures CPU or latency) runs while the other
worker waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.notebook_outputs import unclean_outputs

_STATE = tempfile.mkdtemp(prefix="nbdeploy-tests-")
# the locks of `alone` tests: made by the controlling process, inherited by its workers
if "NBDEPLOY_TESTS_LOCKS" not in os.environ:
    os.environ["NBDEPLOY_TESTS_LOCKS"] = tempfile.mkdtemp(prefix="nbdeploy-locks-")
_LOCKS = Path(os.environ["NBDEPLOY_TESTS_LOCKS"])
_CHOSEN = "NBDEPLOY_TESTS_CHOSE_"  # + a variable's name: this run set it (a worker sets its own)
RAY_FILES = ("test_ray.py", "test_ray_start.py")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    config.addinivalue_line("markers", "alone: measures CPU or latency, so runs while no other test does")
    state = {"MLFLOW_TRACKING_URI": f"sqlite:///{_STATE}/mlflow.db", "NBDEPLOY_HOME": f"{_STATE}/deployments"}
    for variable, value in state.items():  # a value the user set is kept, in every worker
        if variable not in os.environ or os.environ.get(_CHOSEN + variable):
            os.environ[variable] = value
            os.environ[_CHOSEN + variable] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_STATE, ignore_errors=True)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(_LOCKS, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With ``--dist loadgroup``: a file's tests on one worker (its module fixtures start once),
    and Ray's files together (their clusters one at a time), first: they take about a third of
    the suite, so one worker runs them while the other runs the rest (``--no-loadscope-reorder``
    keeps this order)."""
    items.sort(key=lambda item: item.path.name not in RAY_FILES)  # stable: the rest as collected
    for item in items:
        file = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group("ray" if item.path.name in RAY_FILES else file))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with _turn(alone=item.get_closest_marker("alone") is not None):
        return (yield)


@contextlib.contextmanager
def _turn(alone: bool) -> Iterator[None]:
    """A test's turn in a worker: shared with the other worker's tests, or the room to itself
    for an ``alone`` test. The gate is held by an ``alone`` test until it is done, so tests that
    come after it wait instead of keeping the room busy forever."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    with (_LOCKS / "gate").open("a") as gate, (_LOCKS / "room").open("a") as room:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    outputs = getattr(item, "test_outputs", None)  # a cell nbval executed
    if outputs:
        found = unclean_outputs(outputs)
        if found:
            raise AssertionError(f"{item.nodeid}: output a reader should not see:\n" + "\n".join(found))
    return result
