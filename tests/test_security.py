"""HTTPS with a certificate made for the deployment (or the user's own), tokens with roles
added, revoked and rotated while the server serves, and plain HTTP off loopback only when asked."""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import nbdeploy
from nbdeploy.deployments import Deployment
from nbdeploy.deployments.events import local_user
from nbdeploy.deployments.tls import client_context, fingerprint, make_certificate
from nbdeploy.errors import DeploymentError
from nbdeploy.monitoring.replay import log_files
from nbdeploy.serving.app import ServerSettings, create_app
from nbdeploy.serving.loader import load
from nbdeploy.serving.requestlog import RequestLog, read_records
from nbdeploy.tokens import TokenEntry, entries_text
from tests.helpers import eventually, free_port, rows_with_secrets, usage_error

ROW: Callable[[Any], dict[str, Any]] = lambda X: {  # noqa: E731
    "dataframe_split": {"columns": list(X.columns), "data": [X.iloc[0].tolist()]}
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- each role against each endpoint (in process, the table written out) ---------------------

ROUTES = {  # path: (method, body)
    "/ping": ("GET", None), "/health": ("GET", None), "/version": ("GET", None), "/openapi.json": ("GET", None),
    "/invocations": ("POST", "row"), "/info": ("GET", None), "/metrics": ("GET", None),
    "/monitor": ("GET", None), "/experiment": ("GET", None), "/feedback": ("POST", {"id": "x", "label": 1}),
    "/admin/reload": ("POST", {}), "/admin/alerts": ("POST", {"rules": []}), "/admin/experiment": ("POST", {}),
    "/admin/forget": ("POST", {"ids": ["nobody"]}), "/admin/tokens": ("POST", {"action": "list"}),
}  # fmt: skip
PUBLIC = {"/ping", "/health", "/version"}
ALLOWED = {
    "predict": PUBLIC | {"/invocations", "/openapi.json"},
    "observe": PUBLIC | {"/invocations", "/openapi.json", "/info", "/metrics", "/monitor", "/experiment"},
    "feedback": PUBLIC | {"/feedback"},
    "admin": set(ROUTES),
}
NEEDED = {"/invocations": "predict", "/openapi.json": "predict", "/info": "observe", "/metrics": "observe",
          "/monitor": "observe", "/experiment": "observe", "/feedback": "feedback", "/admin/reload": "admin",
          "/admin/alerts": "admin", "/admin/experiment": "admin", "/admin/forget": "admin",
          "/admin/tokens": "admin"}  # fmt: skip


def test_each_role_against_each_endpoint(tmp_path: Path, cancer: dict[str, Any], model_path: Path) -> None:
    values = {role: f"{role}-secret-value" for role in ("predict", "observe", "feedback")}
    entries = [TokenEntry.make(f"{role}-app", role, value) for role, value in values.items()]
    (tmp_path / "tokens.json").write_text(entries_text(entries))
    values["admin"] = "the-owner-token"
    settings = ServerSettings(name="t", ref="t/1", version=1, token=values["admin"], require_token=True,
                              folder=str(tmp_path))  # fmt: skip
    log = RequestLog(tmp_path / "requests.jsonl")
    app = create_app(settings, load(model_path), log)
    assert {r.path for r in app.routes} == set(ROUTES)  # type: ignore[attr-defined]
    with TestClient(app) as client:
        for role, value in values.items():
            for path, (method, body) in ROUTES.items():
                payload = ROW(cancer["X_test"]) if body == "row" else body
                answer = client.request(method, path, json=payload, headers=bearer(value))
                if path in ALLOWED[role]:
                    assert answer.status_code not in (401, 403), (role, path, answer.text)
                else:
                    assert answer.status_code == 403, (role, path)
                    label = "owner" if role == "admin" else f"{role}-app"
                    needed = NEEDED[path]
                    assert answer.json()["message"] == (
                        f"This endpoint needs a token with the role {needed!r}; this one ({label!r}) has {role!r}."
                    )
    log.close()
    tokens = {r.get("token") for r in read_records(tmp_path / "requests.jsonl")}
    assert tokens == {"predict-app", "observe-app", "owner"}  # the label, never the value
    for value in values.values():
        assert value not in (tmp_path / "requests.jsonl").read_text()


@pytest.fixture(scope="module")
def model_path(cancer: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.models
    import mlflow.sklearn

    from nbdeploy.model_copy import write_manifest

    path = tmp_path_factory.mktemp("model") / "m"
    sig = mlflow.models.infer_signature(cancer["X_train"], cancer["model"].predict(cancer["X_train"]))
    mlflow.sklearn.save_model(cancer["model"], path, signature=sig, serialization_format="cloudpickle")
    write_manifest(path, {"uri": "test"})
    return path


# -- HTTPS ------------------------------------------------------------------------------------


def _served_fingerprint(url: str) -> str:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, int(port))))
    return "SHA-256 " + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def test_https_with_a_made_certificate_verifies_and_another_ca_fails(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any], tmp_path: Path
) -> None:
    X, model = cancer["X_test"], cancer["model"]
    d = serving(f"{two_versions}/1", name=name, host="0.0.0.0", tls=True)
    cert = d.spec.tls_cert
    assert d.url.startswith("https://127.0.0.1:")
    assert stat.S_IMODE((d.path / "tls" / "key.pem").stat().st_mode) == 0o600
    status = d.status()
    assert status.transport == f"HTTPS, certificate {fingerprint(cert)}"
    assert fingerprint(cert) == _served_fingerprint(d.url)  # what status shows is what the server presents
    # the text form wraps at 100 columns between words, never inside the fingerprint
    assert fingerprint(cert) in " ".join(repr(status).split()) and fingerprint(cert) in status._repr_html_()
    assert max(map(len, repr(status).splitlines())) <= 100
    # a real HTTPS client that trusts the certificate predicts (off loopback: with the token)
    ok = httpx.post(d.url + "/invocations", json=ROW(X), headers=bearer(d.token), verify=client_context(cert))
    assert ok.status_code == 200 and ok.json()["predictions"] == model.predict(X.head(1)).tolist()
    assert (d.predict(X.head(5)) == model.predict(X.head(5))).all()  # the kernel verifies it too
    # a client trusting another CA (another deployment's certificate), or only the system's, fails the handshake
    other, _ = make_certificate(tmp_path, "127.0.0.1")
    for verify in (client_context(other), True):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(d.url + "/ping", verify=verify)
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the HTTPS port gets no answer
        httpx.get(d.url.replace("https://", "http://") + "/ping", timeout=5)
    if shutil.which("curl"):  # another client, another TLS stack: curl with the certificate as its CA
        out = subprocess.run(["curl", "-sS", "--cacert", cert, d.url + "/ping"], capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr


def test_https_with_the_users_own_certificate(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "127.0.0.1")
    d = serving(f"{two_versions}/1", name=name, tls_cert=cert, tls_key=key)
    assert d.url.startswith("https://127.0.0.1:") and not (d.path / "tls").exists()
    assert _served_fingerprint(d.url) == fingerprint(cert)
    assert d.status().transport == f"HTTPS, certificate {fingerprint(cert)}"
    X = cancer["X_test"].head(3)
    assert (d.predict(X) == cancer["model"].predict(X)).all()


def test_transport_options_that_cannot_be_are_one_sentence(
    ip: Any, two_versions: str, name: str, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "127.0.0.1")
    (other := tmp_path / "other").mkdir()
    _, other_key = make_certificate(other, "127.0.0.1")
    ref = f"{two_versions}/1"
    cases = {
        f"serve {ref} --name {name} --host 0.0.0.0": "Serving on 0.0.0.0 sends tokens and rows in clear text to the "
        "network: add --tls (a certificate is made for the deployment), or --insecure-http to accept that (behind a "
        "TLS proxy, for example).",
        f"serve {ref} --name {name} --tls --insecure-http": "Choose --tls or --insecure-http, not both.",
        f"serve {ref} --name {name} --tls-cert {cert}": "Give --tls-cert and --tls-key together: the certificate "
        "and its private key.",
        f"serve {ref} --name {name} --tls-cert {tmp_path}/none.pem --tls-key {key}": f"Invalid --tls-cert: "
        f"{tmp_path}/none.pem is not a file.",
        f"serve {ref} --name {name} --tls-cert {cert} --tls-key {other_key}": "--tls-cert and --tls-key do not load "
        "as a PEM certificate and its private key",
        f"serve {ref} --name {name} --tls-cert {key} --tls-key {key}": "--tls-cert and --tls-key do not load",
        f"serve {ref} --name {name} --tls --target ray": "--tls is not available with --target ray: Ray's HTTP "
        "proxy is shared by every application of the cluster",
        f"serve {ref} --name {name} --host 127.0.0.2 --tls-cert {cert} --tls-key {key}": "--tls-cert is not valid "
        "for '127.0.0.2', where nbdeploy reaches the server: serve with --host set to a name the certificate holds",
    }  # fmt: skip
    for line, message in cases.items():
        assert usage_error(ip, line).startswith(message), line
    assert not (nbdeploy.config.home() / name / "spec.json").exists()  # nothing was started


# -- tokens added, revoked and rotated while serving ------------------------------------------


def _hammer(url: str, token: str, X: Any, stop: threading.Event, seen: list[int]) -> None:
    with httpx.Client(headers=bearer(token), timeout=30) as client:
        while not stop.is_set():
            seen.append(client.post(url + "/invocations", json=ROW(X)).status_code)


def test_revoked_and_rotated_tokens_are_refused_within_a_second_without_a_restart(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    d = serving(f"{two_versions}/1", name=name, token="owner-token-given-by-hand")  # a token: required on loopback
    pid = d.pid
    steady, leaving, rotating = (d.add_token("predict", label=label) for label in ("steady", "leaving", "rotating"))
    assert [e.label for e in d.tokens().entries] == ["steady", "leaving", "rotating"]

    def answers(token: str) -> int:
        return httpx.post(d.url + "/invocations", json=ROW(X), headers=bearer(token)).status_code

    assert eventually(lambda: answers(leaving.value), lambda s: s == 200, timeout=5) == 200
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    client = threading.Thread(target=_hammer, args=(d.url, steady.value, X, stop, seen))
    client.start()
    try:
        time.sleep(0.3)
        d.revoke_token("leaving")
        rotated = d.rotate_token("rotating")
        d.rotate_token("owner")
        time.sleep(1.0)  # the bound: a second after the change, the old values are refused
        assert answers(leaving.value) == 403 and answers(rotating.value) == 403
        assert answers("owner-token-given-by-hand") == 403
        assert answers(rotated.value) == 200
        assert (d.predict(X.head(2)) == cancer["model"].predict(X.head(2))).all()  # the kernel: the new owner value
        time.sleep(0.3)
    finally:
        stop.set()
        client.join()
    assert d.pid == pid  # no restart
    assert len(seen) > 10 and set(seen) == {200}  # the valid client lost nothing meanwhile
    logged = {r.get("token") for r in read_records(d.path / "requests.jsonl")}
    assert {"steady", "leaving", "rotating"} <= logged
    for made in (steady, leaving, rotating, rotated):  # values nowhere under the deployment folder
        for file in d.path.rglob("*"):
            if file.is_file():
                assert made.value.encode() not in file.read_bytes(), file
    kinds = [e["event"] for e in map(json.loads, (d.path / "audit.jsonl").read_text().splitlines())]
    assert kinds.count("token added") == 3 and "token revoked" in kinds and kinds.count("token rotated") == 2


def test_a_damaged_token_file_keeps_the_tokens_read_before(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    d = serving(f"{two_versions}/1", name=name, token="owner-token-given-by-hand")
    app = d.add_token("observe", label="dash")
    info = lambda: httpx.get(d.url + "/info", headers=bearer(app.value)).status_code  # noqa: E731
    assert eventually(info, lambda s: s == 200, timeout=5) == 200  # the server has read it
    (d.path / "tokens.json").write_text('{"tokens": [{"label": "x", "role": "root", "sha256": "00"}')
    time.sleep(1.0)
    assert info() == 200  # neither locked out
    assert httpx.get(d.url + "/info", headers=bearer("guess")).status_code == 403  # nor let in
    assert eventually(lambda: d.logs(), lambda log: "tokens: kept the tokens read before" in log)
    with pytest.raises(DeploymentError, match=r"The tokens of '.*' cannot be read: .*tokens.json cannot be read"):
        d.add_token("predict")
    (d.path / "tokens.json").write_text(json.dumps({"tokens": [{"label": "x", "role": ["admin"], "sha256": "0" * 64,
                                                                "created": 1}]}))  # fmt: skip
    with pytest.raises(DeploymentError, match="holds a token entry that is not valid"):
        d.tokens()
    assert (d.predict(X.head(2)) == cancer["model"].predict(X.head(2))).all()
    # a server started with a damaged file: the owner's token still answers, nobody else's
    d.stop()
    again = nbdeploy.deployments.start(d.name)
    assert (again.predict(X.head(2)) == cancer["model"].predict(X.head(2))).all()
    assert httpx.get(again.url + "/info", headers=bearer(app.value)).status_code == 403


def test_an_admin_token_manages_tokens_from_another_machine(dep: Any, cancer: dict[str, Any]) -> None:
    X = cancer["X_test"]
    ops = dep.add_token("admin", label="ops")
    dash = dep.add_token("observe", label="dash")

    def tokens(body: Any, token: str) -> httpx.Response:
        return httpx.post(dep.url + "/admin/tokens", json=body, headers=bearer(token))

    made = tokens({"action": "add", "role": "feedback", "label": "remote"}, ops.value).json()
    assert (made["label"], made["role"]) == ("remote", "feedback")

    def labels(token: str) -> int:
        return httpx.post(dep.url + "/feedback", json={"ids": [], "targets": []}, headers=bearer(token)).status_code

    assert labels(made["value"]) == 200  # at once: its first request
    assert httpx.post(dep.url + "/invocations", json=ROW(X), headers=bearer(made["value"])).status_code == 200
    assert "remote" in [e.label for e in dep.tokens().entries]  # the kernel sees what the remote admin did
    listed = tokens({"action": "list"}, ops.value).json()["tokens"]
    assert [t["label"] for t in listed] == ["owner", "ops", "dash", "remote"] and "value" not in str(listed)
    denied = tokens({"action": "list"}, dash.value)
    assert denied.status_code == 403 and "needs a token with the role 'admin'" in denied.json()["message"]
    for body, message in (({"action": "add", "role": "root"}, "Unknown role 'root'"),
                          ({"action": "add", "role": "predict", "label": "remote"}, "A token labelled 'remote'"),
                          ({"action": "revoke", "label": "owner"}, "The owner token is the kernel's own"),
                          ({"action": "rotate", "label": "nobody"}, f"Deployment {dep.name!r} has no token"),
                          ({"action": "rotate", "label": "owner"}, "The owner token is the kernel's own"),
                          ({"action": "drop"}, "The body must be JSON with 'action'"),
                          ({"action": "add", "role": ["admin"]}, "The body must be JSON with 'action'"),
                          ([1, 2], "The body must be JSON with 'action'")):  # fmt: skip
        answer = tokens(body, ops.value)
        assert answer.status_code == 400 and answer.json()["message"].startswith(message), (body, answer.text)
    assert tokens({"action": "revoke", "label": "remote"}, ops.value).json() == {"revoked": "remote"}
    time.sleep(0.3)  # past the server's look at the files
    assert labels(made["value"]) == 403
    remote = [(d.get("action"), d.get("label"), d["by"]) for d in dep.audit().lines
              if d["event"] == "POST /admin/tokens" and d["status"] == 200]  # fmt: skip
    assert remote == [("add", "remote", "token ops"), ("list", None, "token ops"), ("revoke", "remote", "token ops")]


def test_token_options_hostile_and_wrong_are_one_sentence(ip: Any, dep: Any, tmp_path: Path) -> None:
    ip.run_line_magic("deploy", f"token {dep.name} --add predict --label app")
    cases = {
        f"token {dep.name} --add root": "%deploy token: argument --add: invalid choice: 'root'",
        f"token {dep.name} --add predict --label ../x": "Invalid token label '../x': use up to 64 letters",
        f"token {dep.name} --add predict --label owner": "Invalid token label 'owner'",
        f"token {dep.name} --add predict --label {'x' * 65}": "Invalid token label",
        f"token {dep.name} --add predict --label app": "A token labelled 'app' exists: revoke or rotate it",
        f"token {dep.name} --revoke nobody": f"Deployment {dep.name!r} has no token labelled 'nobody'.",
        f"token {dep.name} --rotate nobody": f"Deployment {dep.name!r} has no token labelled 'nobody'.",
        f"token {dep.name} --revoke owner": "The owner token is the kernel's own: rotate it (--rotate owner) instead.",
        f"token {dep.name} --add predict --out {tmp_path}": f"Invalid --out {str(tmp_path)!r}: it is a folder",
        f"token {dep.name} --add predict --out {tmp_path}/no/such": "Invalid --out",
        f"token {dep.name} --add predict --revoke app": "Choose one of --add, --revoke.",
        f"token {dep.name} --label x": "--label and --out go with --add",
        "token nothere --list": "No deployment is named 'nothere'",
    }  # fmt: skip
    for line, message in cases.items():
        assert usage_error(ip, line).startswith(message), line
    assert [e.label for e in dep.tokens().entries] == ["app"]  # nothing half-made
    # a Ray deployment's replicas read no token file: one whose hub cannot be told changes nothing
    ray_folder = tmp_path / "on-ray"
    ray_folder.mkdir()
    spec = json.loads((dep.path / "spec.json").read_text())
    spec |= {"target": "ray", "ray": {"replicas": 2, "url": f"http://127.0.0.1:{free_port()}"}}
    (ray_folder / "spec.json").write_text(json.dumps(spec))
    (ray_folder / "token").write_text("t" * 43)
    on_ray = Deployment("on-ray", ray_folder)
    assert on_ray.add_token("predict", label="kept").label == "kept"  # stopped: the next deploy takes the files
    (ray_folder / "deployed").write_text(spec["ray"]["url"])  # deployed, but nothing answers there
    for change in (lambda: on_ray.add_token("predict"), lambda: on_ray.rotate_token("owner"),
                   lambda: on_ray.revoke_token("kept")):  # fmt: skip
        with pytest.raises(DeploymentError, match="The change was not saved: the replicas of 'on-ray' could not"):
            change()
    assert [e.label for e in on_ray.tokens().entries] == ["kept"] and (ray_folder / "token").read_text() == "t" * 43


def test_in_a_notebook_the_value_stays_out_of_the_output_and_the_cli_prints_it(
    ip: Any, dep: Any, cancer: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = ip.run_line_magic("deploy", f"token {dep.name} --add observe --label dash")
    shown = repr(made) + made._repr_html_() + capsys.readouterr().out
    assert made.value not in shown and ".value of this object" in shown
    out = tmp_path / "app.token"
    ip.run_line_magic("deploy", f"token {dep.name} --add feedback --out {out}")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    listed = ip.run_line_magic("deploy", f"token {dep.name} --list")
    assert [row[:2] for row in listed.rows()] == [["owner", "admin"], ["dash", "observe"], ["feedback-1", "feedback"]]
    cli = subprocess.run(["nbdeploy", "token", dep.name, "--add", "predict", "--label", "cli-app"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    label_line, value = cli.stdout.strip().splitlines()
    assert label_line == f"Token 'cli-app' of {dep.name} (role predict):"
    # the printed value is a working token: labelled in the request log
    X = cancer["X_test"]
    assert httpx.post(dep.url + "/invocations", json=ROW(X), headers=bearer(value)).status_code == 200
    assert httpx.post(dep.url + "/feedback", json={"id": "x", "label": 1}, headers=bearer(value)).status_code == 403
    assert eventually(lambda: [r.get("token") for r in read_records(dep.path / "requests.jsonl")],
                      lambda labels: "cli-app" in labels)  # fmt: skip


# -- the audit trail --------------------------------------------------------------------------


def test_the_audit_trail_names_who_changed_what(
    ip: Any, dep: Any, two_versions: str, cancer: dict[str, Any], tmp_path: Path
) -> None:
    from nbdeploy.cards import card

    dep.update(f"{two_versions}/2")
    dep.alerts(["p95_ms>500"])
    ops = dep.add_token("admin", label="ops")
    auth = bearer(ops.value)
    assert httpx.post(dep.url + "/admin/alerts", json={"rules": []}, headers=auth).status_code == 200
    bad = httpx.post(dep.url + "/admin/reload", json={"path": "/etc"}, headers=auth)
    assert bad.status_code == 400  # refused, and still recorded: an attempt is part of the trail
    dep.rollback()
    with open(dep.path / "audit.jsonl", "a") as fh:  # a torn line and a foreign one are skipped
        fh.write('{"ts": "yesterday", "event": "x"}\n{"ts": 1e9, "event": "tor')
    trail = dep.audit()
    kinds = [(d["event"], d["by"]) for d in trail.lines]
    me, by_ops = local_user(), "token ops"
    assert kinds == [("served", me), ("updated", me), ("alert rules changed", me), ("token added", me),
                     ("POST /admin/alerts", by_ops), ("POST /admin/reload", by_ops), ("rolled back", me)]  # fmt: skip
    rows = trail.rows()
    one, two = f"{two_versions}/1", f"{two_versions}/2"
    assert rows[1][3] == f"{one} -> {two}" and rows[6][3] == f"{two} -> {one}"
    assert "after ['p95_ms>500']" in rows[2][4] and rows[5][4] == "status 400, client 127.0.0.1"
    assert ops.value not in repr(trail) + trail._repr_html_()
    # refused attempts at admin routes are on record too, whoever tried
    assert httpx.post(dep.url + "/admin/reload", json={}).status_code == 401
    assert httpx.post(dep.url + "/admin/reload", json={}, headers=bearer("stolen?")).status_code == 403
    refused = [(d["by"], d["status"]) for d in dep.audit().lines if d["event"] == "POST /admin/reload"]
    # one line a client a minute (a scanner must not fill the disk): the second is counted, not written
    assert refused[-1] == ("no token", 401) and ("an unknown token", 403) not in refused
    shown = ip.run_line_magic("deploy", f"audit {dep.name} --since 1h")
    assert [d["event"] for d in shown.lines] == [d["event"] for d in dep.audit().lines]
    assert usage_error(ip, f"audit {dep.name} --since soon").startswith("Invalid --since 'soon'")
    cli = subprocess.run(["nbdeploy", "audit", dep.name], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "POST /admin/reload" in cli.stdout and by_ops in cli.stdout, cli.stderr
    history = repr(card(f"{two_versions}/2", log=False))  # the model card carries who did it, once
    assert f"by {me}" in history and "deployment updated" not in history  # not twice: the trail's line only
    # and the registry has it, for a team that shares it: tags on the version served
    from nbdeploy.deployments.events import wait_for_tags
    from nbdeploy.registry.lookup import resolve

    wait_for_tags()
    def tags(ref: str) -> set[tuple[str, str]]:  # other tests' deployments tag these versions too
        return {(k.rsplit(".", 1)[1], v) for k, v in resolve(ref).tags.items() if k.startswith("nbdeploy.event.")}

    assert ("deployment_updated", f"{dep.name} by {me}, replacing {one}") in tags(two)
    assert ("deployment_rolled_back", f"{dep.name} by {me}, replacing {two}") in tags(one)
    assert ("deployment_served", f"{dep.name} by {me}") in tags(one)


# -- a door for other systems: /openapi.json and snippets -------------------------------------


def test_openapi_validates_and_every_snippet_calls_the_model(
    ip: Any, serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any], tmp_path: Path
) -> None:
    import pandas as pd
    from openapi_spec_validator import validate

    owner = "owner-token-given-by-hand"
    d = serving(f"{two_versions}/1", name=name, tls=True, token=owner)  # the hardest case: HTTPS and a token
    verify = client_context(d.spec.tls_cert)
    assert httpx.get(d.url + "/openapi.json", verify=verify).status_code == 401
    doc = httpx.get(d.url + "/openapi.json", headers=bearer(owner), verify=verify).json()
    validate(doc)  # OpenAPI 3.0, by openapi-spec-validator
    body = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    formats = {f["title"]: f for f in body["schema"]["oneOf"]}
    assert set(formats) == {"dataframe_split", "dataframe_records", "instances", "inputs"}
    columns = formats["dataframe_split"]["properties"]["dataframe_split"]["properties"]["columns"]["items"]["enum"]
    assert columns == list(cancer["X_train"].columns)
    assert formats["instances"]["properties"]["instances"]["items"]["properties"]["mean radius"] == {"type": "number"}
    methods = formats["inputs"]["properties"]["params"]["properties"]["predict_method"]["enum"]
    assert "predict_proba" in methods and doc["paths"]["/invocations"]["post"]["security"] == [{"bearer": []}]
    example = body["example"]["dataframe_split"]  # the model's own input example
    expected = cancer["model"].predict(pd.DataFrame(example["data"][:1], columns=example["columns"])).tolist()
    app = d.add_token("predict", label="app", out=tmp_path / "app.token")
    runs = {
        "python": lambda code: ["python", str(_write(tmp_path / "call.py", code))],
        "curl": lambda code: ["bash", "-c", code],
        "javascript": lambda code: ["node", str(_write(tmp_path / "call.mjs", code))],
    }
    for lang, command in runs.items():
        for token_file in (None, app.written_to):
            snippet = d.snippet(lang, token_file=token_file)
            assert owner not in snippet.code and app.value not in snippet.code  # read from its file, never pasted
            env = {"NODE_EXTRA_CA_CERTS": d.spec.tls_cert, "PATH": "/usr/bin:/bin:" + str(Path(_python()).parent)}
            out = subprocess.run(command(snippet.code), capture_output=True, text=True, timeout=60, env=env)
            assert out.returncode == 0, (lang, token_file, out.stderr[-300:])
            answer = json.loads(out.stdout.strip())  # curl prints the whole answer, the others its predictions
            assert (answer["predictions"] if lang == "curl" else answer) == expected, (lang, out.stdout)
    shown = ip.run_line_magic("deploy", f"snippet {d.name} --lang curl")
    assert shown._repr_markdown_().startswith("```bash\ncurl -sS") and "--cacert" in shown.code
    assert usage_error(ip, f"snippet {d.name} --token-file {tmp_path}/none").startswith("Invalid --token-file")
    cli = subprocess.run(["nbdeploy", "snippet", d.name, "--lang", "python"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert cli.returncode == 0 and cli.stdout.strip() == d.snippet("python").code


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _python() -> str:
    import sys

    return sys.executable


# -- private request logs ---------------------------------------------------------------------


def test_hashed_and_redacted_inputs_never_reach_the_disk_and_drift_still_reports(
    serving: Callable[..., Any], with_email: str, name: str, cancer: dict[str, Any], tmp_path: Path
) -> None:
    d = serving(f"{with_email}/1", name=name, log_inputs="hashed", redact=["email"])
    assert stat.S_IMODE((d.path / "log.key").stat().st_mode) == 0o600
    X = rows_with_secrets(cancer, 120)
    ids = [d.predict(X.iloc[i : i + 3], with_id=True)[1] for i in range(0, 120, 3)]
    d.feedback(ids, [[0, 1, 0]] * len(ids))
    drift = eventually(lambda: d.snapshot()["windows"]["1m"]["drift"],
                       lambda rows: any(r["psi"] is not None for r in rows))  # fmt: skip
    reported = {r["name"] for r in drift if r["psi"] is not None}
    assert set(X.columns[:5]) <= reported  # drift reports on the numeric columns, from memory
    records = read_records(d.path / "requests.jsonl")
    assert len(records) == 40 and all(r["inputs_private"] == "hashed" for r in records)
    assert all(str(v).startswith("h:") for r in records for row in r["inputs"] for v in row)
    raw = [*X["email"], *(json.dumps(float(v)) for v in X.iloc[:, :5].to_numpy().ravel())]
    for file in d.path.rglob("*"):  # no raw value of any served row anywhere under the folder
        if file.is_file():
            content = file.read_bytes()
            leaked = [v for v in raw if v.encode() in content]
            assert not leaked, (file, leaked[:3])
    import pandas as pd

    exported = pd.read_parquet(d.export(out=tmp_path / "traffic.parquet", labelled=True).path)
    assert len(exported) == 120 and exported["email"].str.startswith("h:").all()  # the hashes, as text
    assert exported["mean radius"].str.startswith("h:").all() and exported["label"].notna().all()
    # equal values hash alike: forget --where finds a person by the keyed hash of their email
    gone = d.forget(where=f"email == '{X['email'].iloc[4]}'")
    assert gone == {"ids": 1, "removed": {"requests": 1, "feedback": 1}}
    assert ids[1] not in {r["id"] for r in read_records(d.path / "requests.jsonl")}
    # a restart rebuilds its windows from the log without reading hashes as numbers
    d.stop()
    restarted = nbdeploy.deployments.start(name)
    assert (restarted.predict(X.head(2)) == restarted.predict(X.head(2))).all()
    assert restarted.state() == "running" and "Traceback" not in restarted.logs(200)


def _shrink_log(d: Any, max_bytes: int) -> Any:
    """The deployment restarted with a request log that rotates every ``max_bytes``."""
    d.stop()
    spec = json.loads((d.path / "spec.json").read_text())
    (d.path / "spec.json").write_text(json.dumps(spec | {"log_max_bytes": max_bytes}))
    return nbdeploy.deployments.start(d.name)


def test_forget_removes_every_record_of_the_ids_from_every_file_while_serving(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    served = serving(f"{two_versions}/1", name=name)
    leftover = served.path / ".requests.jsonl.k1ll3d.forget"  # what a forget killed mid-way leaves
    leftover.write_text('{"id": "a copy"}\n')
    d = _shrink_log(served, 15_000)  # rotates every ~38 one-row requests
    assert not leftover.exists()  # swept when the server starts
    victims = [f"victim-{i}" for i in range(30)]
    for rid in victims:
        assert httpx.post(d.url + "/invocations", json=ROW(X), headers={"X-Request-Id": rid}).status_code == 200
        httpx.post(d.url + "/invocations", json=ROW(X))  # others between them, in every file
    d.feedback(victims, [1] * 30)
    stop, answered = threading.Event(), []  # type: ignore[var-annotated]

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():  # paced: the log's 6 files hold ~150 requests, rotation must drop none
                r = c.post(d.url + "/invocations", json=ROW(X))
                answered.append((r.status_code, r.headers.get("x-request-id")))
                time.sleep(0.02)

    load = threading.Thread(target=client)
    load.start()
    try:
        # the forget must meet rotated files: wait for two however slow the machine (one-row records, ~390 bytes)
        eventually(lambda: len(log_files(d.path / "requests.jsonl")), lambda n: n >= 3, timeout=60)
        result = d.forget(ids=victims)
        time.sleep(0.5)
    finally:
        stop.set()
        load.join()
    assert result == {"ids": 30, "removed": {"requests": 30, "feedback": 30}}
    files = [p for p in d.path.iterdir() if p.name.startswith(("requests.jsonl", "feedback.jsonl"))]
    assert len([p for p in files if p.name.startswith("requests.jsonl.")]) >= 2  # rotated files were read too
    for file in files:
        assert not any(v.encode() in file.read_bytes() for v in victims), file
    assert answered and {s for s, _ in answered} == {200}  # served throughout
    assert "nbdeploy_request_log_dropped_records 0.0" in httpx.get(d.url + "/metrics").text
    logged = {r["id"] for r in read_records(d.path / "requests.jsonl")}
    assert {rid for _, rid in answered} <= logged  # nothing answered meanwhile was lost
    forgot = [e for e in d.audit().lines if e["event"] == "forgot"][-1]
    assert (forgot["ids"], forgot["requests"], forgot["feedback"], forgot["by"]) == (30, 30, 30, local_user())
    # a stopped deployment's files are filtered by the kernel
    some = sorted(logged)[:3]
    d.stop()
    assert d.forget(ids=some)["removed"]["requests"] == 3
    assert not set(some) & {r["id"] for r in read_records(d.path / "requests.jsonl")}


def test_retention_removes_old_records_and_counts_them(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    d = serving(f"{two_versions}/1", name=name, retention="4s")
    first = [d.predict(X.head(1), with_id=True)[1] for _ in range(5)]
    d.feedback(first, [1] * 5)

    def left() -> set[str]:  # one pass removes requests, then labels: wait for both (a busy machine is slow)
        logged = read_records(d.path / "requests.jsonl") + read_records(d.path / "feedback.jsonl")
        return {r["id"] for r in logged} & set(first)

    assert eventually(left, lambda ids: not ids, timeout=30) == set()
    later = d.predict(X.head(1), with_id=True)[1]
    assert later in {r["id"] for r in read_records(d.path / "requests.jsonl")}
    metrics = httpx.get(d.url + "/metrics").text
    assert 'nbdeploy_log_records_deleted_total{log="requests",reason="retention"} 5.0' in metrics
    assert 'nbdeploy_log_records_deleted_total{log="feedback",reason="retention"} 5.0' in metrics


def test_privacy_options_and_forget_hostile_and_wrong_are_one_sentence(
    ip: Any, dep: Any, with_email: str, tmp_path: Path
) -> None:
    name = dep.name + "-other"
    cases = {
        f"serve {with_email}/1 --name {name} --redact e-mail": f"Invalid --redact 'e-mail': {with_email}/1 takes no "
        "such column (its columns: mean radius,",
        f"serve {with_email}/1 --name {name} --retention forever": "Invalid --retention 'forever'",
        f"serve {with_email}/1 --name {name} --log-inputs some": "%deploy serve: argument --log-inputs: invalid choice",
        f"forget {dep.name}": "Give --ids or --where (one of them).",
        f"forget {dep.name} --ids \"['a']\" --where 'x == 1'": "Give --ids or --where (one of them).",
        f"forget {dep.name} --where 'x > 1'": "Invalid --where 'x > 1': write COLUMN == VALUE",
        f"forget {dep.name} --where 'x == [1, 2]'": "Invalid --where value '[1, 2]': give one string, number",
        f"forget {dep.name} --ids list(range(100001))": "Give at most 100,000 ids per call",
        f"forget {dep.name} --ids \"'r-17'\"": "Give --ids as a list of request ids, not one string.",
        f"forget {dep.name} --where \"x == {'-' * 20000}1\"": "Invalid --where",
    }  # fmt: skip
    for line, message in cases.items():
        assert usage_error(ip, line).startswith(message), line
    auth = bearer(dep.token)
    for body, message in (({"ids": "r1"}, "The field 'ids' must be a list"), ({}, "The body must be JSON with 'ids'"),
                          ({"where": {"column": "x"}}, "The field 'where' must be"),
                          ({"ids": [{"deep": [[[]]]}]}, "The field 'ids' must be a list")):  # fmt: skip
        answer = httpx.post(dep.url + "/admin/forget", json=body, headers=auth)
        assert answer.status_code == 400 and answer.json()["message"].startswith(message), body
    assert httpx.post(dep.url + "/admin/forget", content=b"[" * 100_000, headers=auth).status_code == 400
    assert dep.forget(where="`mean radius` == 99999.5") == {"ids": 0, "removed": {"requests": 0, "feedback": 0}}
    # a damaged hashing key: the server does not start rather than log in clear
    private = nbdeploy.serve(f"{with_email}/1", name=name, redact=["email"])
    private.stop()
    (private.path / "log.key").write_text("not hex")
    with pytest.raises(DeploymentError, match=r"cannot hash the logged inputs: .*log\.key is missing or damaged"):
        nbdeploy.deployments.start(name)


def test_a_certificate_gone_is_one_sentence_never_an_unverified_call(
    serving: Callable[..., Any], two_versions: str, name: str
) -> None:
    d = serving(f"{two_versions}/1", name=name, tls=True)
    Path(d.spec.tls_cert).write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with pytest.raises(DeploymentError, match=r"certificate .* cannot be read .*: nbdeploy does not talk to a"):
        d.snapshot()
    assert "certificate" in d.status().transport  # status still answers, saying what it can
