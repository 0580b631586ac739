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
    assert bad.stderr.strip() == (
        f"nbdeploy: error: Model {name!r} has no version 4; its versions are 1. See docs/references.md#model-references"
    )


def test_the_report_reads_right_in_mlflows_artifact_view_and_the_version_says_how_it_did(
    cancer: dict[str, Any], name: str, mlflow_server: str
) -> None:
    """The report as MLflow's UI loads it (its ``get-artifact`` route, in a real Chromium)
    decodes as UTF-8; the version's description keeps the user's words and holds one
    summary of the latest validation."""
    from pathlib import Path

    import httpx
    from mlflow import MlflowClient

    import nbdeploy
    from nbdeploy.validation import validate

    chromium = "/usr/bin/chromium"
    nbdeploy.configure(tracking_uri=mlflow_server)
    try:
        nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"], description="Trained on 2025.")
        validate(f"{name}/1", cancer["X_test"], cancer["y_test"], gates=["f1<=0.5"])  # fails
        report = validate(f"{name}/1", cancer["X_test"], cancer["y_test"], gates=["f1>=0.9", "accuracy>=0.9 @95%"])
    finally:
        nbdeploy.configure(tracking_uri=None)
    described = MlflowClient(mlflow_server).get_model_version(name, "1").description
    assert described.startswith("Trained on 2025.\n\n<!-- nbdeploy:validation -->\n")
    assert described.count("nbdeploy validation") == 1 and "FAILED" not in described  # the latest only
    lo, hi = report.intervals["accuracy"]
    assert f"**nbdeploy validation: PASSED (2 of 2 gates passed)** on {report.rows} rows" in described
    assert f"- accuracy {report.metrics['accuracy']:.4g} (95% CI {lo:.4g} to {hi:.4g})" in described
    assert "- gate `accuracy >= 0.9 @95%`: pass" in described
    assert f"- report: runs:/{report.run_id}/validation/validation.html" in described

    raw = httpx.get(f"{mlflow_server}/get-artifact?path=validation/validation.html&run_uuid={report.run_id}")
    assert raw.status_code == 200 and b'<meta charset="utf-8">' in raw.content
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    experiment = MlflowClient(mlflow_server).get_run(report.run_id).info.experiment_id
    view = f"{mlflow_server}/#/experiments/{experiment}/runs/{report.run_id}/artifacts/validation/validation.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(view)
            page.wait_for_selector("iframe", timeout=60_000)
            frame = page.frame_locator("iframe").first
            text = frame.locator("body").inner_text(timeout=60_000)
        finally:
            browser.close()
    assert "\u2713 pass" in text and "\u00e2\u0153" not in text  # a check mark, not its Latin-1 reading
