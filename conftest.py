"""Session-wide test environment, for tests/ and the notebooks nbval runs.

MLflow must not phone home (the machines are offline), and nothing a test run writes may
land in the work tree: the tracking store and deployments go to a temporary folder that
every kernel nbval starts inherits through the environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_STATE = tempfile.mkdtemp(prefix="nbdeploy-tests-")


def pytest_configure(config: object) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_STATE}/mlflow.db")
    os.environ.setdefault("NBDEPLOY_HOME", f"{_STATE}/deployments")


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_STATE, ignore_errors=True)
