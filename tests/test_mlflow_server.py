"""The register / promote / models flow against a real `mlflow server` on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import free_port, running


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = shutil.which("mlflow")
    assert mlflow, "the mlflow console script is installed with the package"
    cmd = [
        mlflow,
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/server.db",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    with running(cmd, f"http://127.0.0.1:{port}/health", root / "server.log"):
        yield f"http://127.0.0.1:{port}"


def test_magics_against_a_tracking_server(ip: Any, name: str, mlflow_server: str) -> None:
    ip.run_line_magic("config", f"DeployMagics.tracking_uri = {mlflow_server!r}")
    try:
        mv = ip.run_line_magic("deploy", f"register model --name {name} --data X_train --target y_train")
        assert mv.version == 1 and mv.tracking_uri == mlflow_server
        assert mv.ui_url == f"{mlflow_server}/#/models/{name}/versions/1"
        assert "open in MLflow" in mv._repr_html_()
        ip.run_line_magic("deploy", f"register model --name {name} --data X_train")
        assert ip.run_line_magic("deploy", f"promote {name}/1 --force").aliases == ["champion"]
        listing = ip.run_line_magic("deploy", f"models {name}")
        assert [row[:2] for row in listing.rows] == [["2", ""], ["1", "@champion"]]
    finally:
        ip.run_line_magic("config", "DeployMagics.tracking_uri = ''")

    from mlflow import MlflowClient

    c = MlflowClient(mlflow_server)
    assert c.get_model_version_by_alias(name, "champion").version == "1"
    import nbdeploy.registry

    nbdeploy.config.configure(tracking_uri=mlflow_server)
    try:
        profile = nbdeploy.registry.load_profile(nbdeploy.resolve(f"{name}/1"))
    finally:
        nbdeploy.config.configure(tracking_uri=None)
    assert profile is not None and profile["rows"] == 426


def test_cli_against_a_tracking_server(cancer: dict[str, Any], name: str, mlflow_server: str) -> None:
    import nbdeploy
    from nbdeploy.validation import validate

    nbdeploy.configure(tracking_uri=mlflow_server)
    try:
        nbdeploy.register(cancer["model"], name, cancer["X_train"])
        validate(f"{name}/1", cancer["X_test"], cancer["y_test"])  # promote needs a passed validation
    finally:
        nbdeploy.configure(tracking_uri=None)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    cli = [sys.executable, "-m", "nbdeploy.cli"]
    out = subprocess.run([*cli, "promote", f"{name}/1"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"ModelVersion {name}/1  @champion")
    out = subprocess.run([*cli, "models", name], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == f"Versions of {name}"
    assert "@champion" in out.stdout
    bad = subprocess.run([*cli, "promote", f"{name}/4"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"nbdeploy: error: Model {name!r} has no version 4; its versions are 1."
