"""%deploy serve / list / status / logs / predict / update / rollback / stop in a real shell."""

from __future__ import annotations

from typing import Any

import pytest

import nbdeploy
from tests.helpers import usage_error


def test_serving_subcommands(
    ip: Any, two_versions: str, name: str, cancer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    st = ip.run_line_magic("deploy", f"serve {two_versions}/1 --name {name} --max-batch 64 --max-wait-ms 1")
    try:
        assert (st.state, st.version) == ("running", 1)
        dep = nbdeploy.get(name)
        assert dep.spec.max_batch == 64 and dep.spec.max_wait_ms == 1.0
        preds = ip.run_line_magic("deploy", f"predict {name} --data 'X_test.head(20)'")
        assert preds.tolist() == cancer["model"].predict(cancer["X_test"].head(20)).tolist()
        assert ip.run_line_magic("deploy", f"status {name}").url == dep.url
        assert [name, "running"] in [r[:2] for r in ip.run_line_magic("deploy", "list").rows]
        ip.run_line_magic("deploy", f"logs {name} -n 1")
        assert "nbdeploy serving" in capsys.readouterr().out
        assert ip.run_line_magic("deploy", f"update {name} {two_versions}/2").version == 2
        assert ip.run_line_magic("deploy", f"rollback {name}").version == 1
        assert usage_error(ip, f"rollback {name}") == (
            f"Deployment {name!r} has served only one version: nothing to roll back to."
        )
        assert usage_error(ip, f"serve {two_versions}/1 --name {name}") == (
            f"Deployment {name!r} is already running at {dep.url}: stop it first or choose another name."
        )
    finally:
        ip.run_line_magic("deploy", f"stop {name}")
    assert capsys.readouterr().out.strip().endswith(f"Stopped {name}.")
    assert nbdeploy.get(name).state() == "stopped"
    assert usage_error(ip, f"predict {name} --data X_test") == (
        f"Deployment {name!r} is stopped: serve it again to use it. See docs/deployments.md#states"
    )


def test_serving_usage_errors(ip: Any, two_versions: str) -> None:
    assert usage_error(ip, "stop") == "Give either a deployment NAME or --all to stop."
    assert usage_error(ip, "status nope").startswith("No deployment is named 'nope'; deployments: ")
    no_nine = f"Model {two_versions!r} has no version 9; its versions are 1, 2. See docs/references.md#model-references"
    assert usage_error(ip, f"serve {two_versions}/9") == no_nine
    port = "Invalid port 70000: use 1-65535, or 0 for a free port."
    assert usage_error(ip, f"serve {two_versions} --port 70000") == port
    assert usage_error(ip, "serve x --port abc") == "%deploy serve: argument --port: invalid int value: 'abc'."
    assert usage_error(ip, "predict nope") == "%deploy predict: the following arguments are required: --data."


def test_stop_all(ip: Any, two_versions: str, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("deploy", f"serve {two_versions} --name stop-all-a")
    ip.run_line_magic("deploy", "stop --all")
    assert "stop-all-a" in capsys.readouterr().out
    assert all(row[1] != "running" for row in ip.run_line_magic("deploy", "list").rows)


def test_a_generated_token_is_never_printed(
    ip: Any, two_versions: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("deploy", f"serve {two_versions}/1 --name {name} --host 0.0.0.0 --insecure-http")
    try:
        out = capsys.readouterr().out
        token = nbdeploy.get(name).token
        assert token and token not in out  # a cell's output is saved in the .ipynb
        assert out.strip() == (
            f"Clients need a bearer token: it is kept in {nbdeploy.get(name).path / 'token'} (owner-only); "
            f"read it with nbdeploy.get({name!r}).token."
        )
    finally:
        nbdeploy.get(name).stop()
