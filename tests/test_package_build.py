"""``%deploy package`` (#14): the build context's manifests validate against the Kubernetes
schemas offline, its exact entry point runs in a fresh virtualenv built only from its
requirements and answers the protocol battery as the notebook's deployment does, and the
image is built where a Docker daemon and the base image are available."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import nbdeploy
from nbdeploy.deployments.package import package
from tests.helpers import battery, free_port, usage_error

KUBERNETES = "1.30.0"


TOKEN = "s3cret-token-of-thirty-two-chars"
LOG_KEY = "ab" * 32


@pytest.fixture(scope="module")
def packaged(cancer: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A deployment as users have them: served from a kernel (--attach), keeping hashed
    inputs, under a name Kubernetes would refuse as it is; packaged, then stopped."""
    name = f"Pkg_Model-{os.getpid()}"
    v = nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    dep = nbdeploy.serve(v.ref, name=name, attach=True, log_inputs="hashed")
    try:
        out = tmp_path_factory.mktemp("context") / "ctx"
        yield v, Path(package(dep.name, "docker", out).path)
    finally:
        dep.stop()


def _dockerfile(context: Path) -> tuple[dict[str, str], list[str], str]:
    """(ENV, CMD, USER) of the Dockerfile as docker reads them (one ENV line with continuations)."""
    text = (context / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"(\w+)=(\S+)", next(ln for ln in text.splitlines() if ln.startswith("ENV "))[4:]))
    cmd = json.loads(next(ln for ln in text.splitlines() if ln.startswith("CMD "))[4:])
    user = next(ln for ln in text.splitlines() if ln.startswith("USER "))[5:].strip()
    return env, cmd, user


def test_the_manifests_validate_and_take_their_requests_from_the_load_test(
    cancer: dict[str, Any], serving: Callable[..., Any], name: str, tmp_path: Path
) -> None:
    import kubernetes_validate

    v = nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    dep = serving(v.ref, name=name)
    if shutil.which("wrk"):
        report = dep.loadtest(cancer["X_test"], connections=[4], duration=2)
        cpu_pct, peak = report.levels[0]["cpu_pct"], report.peak_rss_mb
    else:  # the sizing from a load test is covered where wrk is installed; here the defaults
        cpu_pct = peak = None
    out = package(name, "k8s", tmp_path / "k8s-context")
    kinds = set()
    for path in sorted((out.path / "k8s").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises ValidationError
        kinds.add(doc["kind"])
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret"}
    pod = yaml.safe_load((out.path / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"
    assert container["securityContext"]["runAsNonRoot"] is True
    requests = container["resources"]["requests"]
    if cpu_pct is not None:
        assert out.sizing is not None and out.sizing.measured
        assert int(requests["cpu"][:-1]) == max(100, -(-cpu_pct * 10 // 100) * 100)
        assert int(requests["memory"][:-2]) == -(-peak * 1.25 // 1)
    ray = package(name, "kuberay", tmp_path / "ray-context")
    service = yaml.safe_load((ray.path / "k8s" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService" and "ray[serve]==" in (ray.path / "requirements.txt").read_text()
    application = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert application["import_path"] == "nbdeploy.serving.ray_package:app"
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the Ray extra is not installed: the RayService's application is not built")
    # the builder Serve calls, in a process of its own (this one, like a kernel, never imports Ray):
    # a bound application of the packaged model, whose Replica the Ray tests start
    code = ("import sys, nbdeploy.serving.ray_package as p; from ray.serve import Application; "
            f"print(isinstance(p.app({application['args']!r}), Application))")  # fmt: skip
    env = {**os.environ, "NBDEPLOY_PACKAGE": str(ray.path), "NBDEPLOY_TOKEN": TOKEN, "NBDEPLOY_STATE": str(tmp_path)}
    built = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert built.stdout.strip().splitlines()[-1:] == ["True"], built.stderr[-2000:]
    assert "ray" not in sys.modules


def test_the_entry_point_serves_from_a_fresh_virtualenv_of_the_packaged_requirements(
    cancer: dict[str, Any], packaged: tuple[Any, Path], serving: Callable[..., Any], tmp_path: Path
) -> None:
    v, context = packaged
    requirements = (context / "requirements.txt").read_text()
    assert not re.search(r"^(mlflow|jupyter|ipykernel|ipython|ray)\b", requirements, re.MULTILINE | re.IGNORECASE)
    env, cmd, user = _dockerfile(context)
    assert user != "root" and user != "0" and cmd == ["python", "-m", "nbdeploy.serving.container"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(context / "requirements.txt")],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    assert not re.search(r"^(mlflow|jupyter|ipykernel|ipython|ray)\b", installed.stdout, re.MULTILINE | re.I)
    port = free_port()
    none = str(tmp_path / "none")
    run_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), **env, "PORT": str(port),
               "NBDEPLOY_PACKAGE": str(context), "PYTHONPATH": str(context), "NBDEPLOY_STATE": str(tmp_path / "state"),
               "NBDEPLOY_TOKEN_FILE": none, "NBDEPLOY_LOG_KEY_FILE": none}  # fmt: skip

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, *cmd[1:]], env={**run_env, **extra}, cwd=context, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    assert "no token: set NBDEPLOY_TOKEN" in run().stderr
    for bad in ("REPLACE-WITH-A-LONG-RANDOM-TOKEN", "short"):  # the Secret template's placeholder, a guessable one
        refused = run(NBDEPLOY_TOKEN=bad)
        assert refused.returncode == 2 and "placeholder or shorter than 16" in refused.stderr, refused.stderr
    no_key = run(NBDEPLOY_TOKEN=TOKEN)
    assert no_key.returncode == 2 and "set NBDEPLOY_LOG_KEY" in no_key.stderr, no_key.stderr
    subprocess.run(["chmod", "-R", "a-w", str(context)], check=True)  # as the image's /app: nothing writes there
    proc = subprocess.Popen([python, *cmd[1:]], env={**run_env, "NBDEPLOY_TOKEN": TOKEN, "NBDEPLOY_LOG_KEY": LOG_KEY},
                            cwd=context, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        no_bearer = httpx.post(url + "/invocations", content=b"{}", headers={"Content-Type": "application/json"})
        assert no_bearer.status_code == 401
        ours = serving(v.ref, name=f"pkg-local-{os.getpid()}")
        expected = cancer["model"].predict(cancer["X_test"].head(5)).tolist()
        for label, (payload, headers) in battery(cancer["X_test"]).items():
            a = httpx.post(
                url + "/invocations", content=payload, headers={**headers, "Authorization": f"Bearer {TOKEN}"}
            )
            b = httpx.post(ours.url + "/invocations", content=payload, headers=headers)
            assert a.status_code == b.status_code, (label, a.text[:300], b.text[:300])
            if a.status_code == 200:
                assert a.json() == b.json(), label
                if label != "integers for doubles":
                    assert a.json()["predictions"] == expected, label
        time.sleep(1.0)  # the packager's kernel is not this server's parent: --attach was dropped
        assert proc.poll() is None
        logged = [json.loads(line) for line in (tmp_path / "state" / "requests.jsonl").read_text().splitlines()]
        answered = [r for r in logged if r.get("status") == 200]
        assert answered and all(r.get("inputs_private") == "hashed" for r in answered)  # as the deployment logged
    finally:
        proc.terminate()
        proc.wait(30)
        subprocess.run(["chmod", "-R", "u+w", str(context)], check=False)


def test_the_image_builds_where_docker_can(packaged: tuple[Any, Path]) -> None:
    _, context = packaged
    if shutil.which("docker") is None:
        pytest.skip("no docker client here (Debian's docker.io provides one)")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon runs here: the image cannot be built (the context is checked by the venv test)")
    base = re.search(r"^FROM (\S+)", (context / "Dockerfile").read_text(), re.MULTILINE)[1]  # type: ignore[index]
    if subprocess.run(["docker", "pull", base], capture_output=True, timeout=300).returncode != 0:
        pytest.skip(f"the base image {base} cannot be pulled here (no access to its registry)")
    tag = f"nbdeploy-test-{os.getpid()}"
    built = subprocess.run(["docker", "build", "-t", tag, str(context)], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    size = subprocess.run(["docker", "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True, text=True)
    print(f"\nimage {tag}: {int(size.stdout) / 1e6:.0f} MB")
    subprocess.run(["docker", "image", "rm", tag], capture_output=True)


def test_hostile_package_options_are_one_sentence(ip: Any, two_versions: str, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    cases = {
        f"package {two_versions}/1 --to helm {tmp_path / 'a'}": "invalid choice: 'helm'",
        f"package {two_versions}/1 --to docker {tmp_path / 'full'}": "is not an empty folder",
        f"package {two_versions}/1 --to docker {tmp_path / 'file'}": "is not an empty folder",
        f"package {two_versions}/1 --to k8s {tmp_path / 'b'} --replicas 0": "Invalid --replicas 0",
        f"package nosuchmodel --to docker {tmp_path / 'c'}": "nosuchmodel",
    }
    for line, expected in cases.items():
        assert expected in usage_error(ip, line), line
    assert not (tmp_path / "c").exists() and not (tmp_path / "b").exists()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "is not an empty folder" in usage_error(ip, f"package {two_versions}/1 --to docker {tmp_path / 'dangling'}")
    from nbdeploy import config

    inside = config.home() / "somewhere"
    assert "write the build context somewhere of its own" in usage_error(
        ip, f"package {two_versions}/1 --to docker {inside}"
    )


def test_a_failure_half_way_leaves_no_folder(
    two_versions: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import metadata

    from nbdeploy.deployments import package_files

    real = metadata.version
    monkeypatch.setattr(package_files.metadata, "version", lambda d: real(d) if d != "psutil" else real("no-such-dist"))
    with pytest.raises(nbdeploy.errors.InvalidInputError, match="psutil is not installed here"):
        package(f"{two_versions}/1", "docker", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its half-built twin


def test_names_become_what_kubernetes_and_docker_take(two_versions: str, tmp_path: Path) -> None:
    import kubernetes_validate

    from nbdeploy.deployments.package_files import kube_name

    for given, expected in {
        "Fraud_Model.v2": "fraud-model-v2",
        "7up": "m-7up",
        "run-": "run",
        "A" * 80: "a" * 63,
    }.items():
        assert kube_name(given) == expected
    out = package(f"{two_versions}/1", "kuberay", tmp_path / "ray", image="Registry.example/Cancer:1")
    assert (out.path / "k8s" / "secret.yaml").exists() and "wget" in (out.path / "Dockerfile").read_text()
    secret = yaml.safe_load((out.path / "k8s" / "secret.yaml").read_text())
    kubernetes_validate.validate(secret, KUBERNETES, strict=True)
    service = yaml.safe_load((out.path / "k8s" / "rayservice.yaml").read_text())
    pods = [
        service["spec"]["rayClusterConfig"]["headGroupSpec"],
        *service["spec"]["rayClusterConfig"]["workerGroupSpecs"],
    ]
    for pod in pods:  # the token mounted in every pod that may build the application
        assert pod["template"]["spec"]["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
    assert service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
