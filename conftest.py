"""Session-wide test environment, for tests/ and the notebooks nbval runs.

MLflow must not phone home (the machines are offline), and nothing a test run writes may
land in the work tree: the tracking store and deployments go to a temporary folder that
every kernel nbval starts inherits through the environment.

Every cell nbval executes must also read clean (#16): no stderr output and no warning text
(a library's log line or a Python warning) in any output of a notebook in ``notebooks/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from tests.notebook_outputs import unclean_outputs

_STATE = tempfile.mkdtemp(prefix="nbdeploy-tests-")


def pytest_configure(config: object) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_STATE}/mlflow.db")
    os.environ.setdefault("NBDEPLOY_HOME", f"{_STATE}/deployments")


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    outputs = getattr(item, "test_outputs", None)  # a cell nbval executed
    if outputs:
        found = unclean_outputs(outputs)
        if found:
            raise AssertionError(f"{item.nodeid}: output a reader should not see:\n" + "\n".join(found))
    return result
