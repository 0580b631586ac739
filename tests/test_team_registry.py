"""A shared registry for a team: `mlflow server` on PostgreSQL, two kernels at once.

PostgreSQL (Debian's package) runs as a private cluster in a temporary folder on a free
loopback port; `mlflow server` uses it as its backend store. Two IPython shells, in two
processes, each register, validate and promote 10 versions of one model concurrently.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, running, stop_group

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
pytestmark = pytest.mark.skipif(
    not INITDB, reason="Debian's postgresql is not installed (apt-get install postgresql; .ci/run does)"
)


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the postgres user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    bindir = Path(INITDB[-1]).parent
    # not under pytest's tmp_path: its parents are private to root, and postgres runs as postgres
    data = Path(tempfile.mkdtemp(prefix="nbdeploy-pg-"))
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(data, pg.pw_uid, pg.pw_gid)
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        _as_postgres([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        ).returncode:
            assert server.poll() is None and time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.2)
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"], check=True
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        stop_group(server)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("team")
    port = free_port()
    mlflow = shutil.which("mlflow")
    assert mlflow
    cmd = [
        mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--backend-store-uri", postgres, "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with running(cmd, f"http://127.0.0.1:{port}/health", root / "server.log"):
        yield f"http://127.0.0.1:{port}"


KERNEL = """
import json
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "nbdeploy")
ip.run_cell('''
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(X, y)
''')
versions = []
for _ in range(10):
    mv = ip.run_line_magic("deploy", "register model --name team-model --data X --target y --tag kernel={who}")
    gate = "--gate accuracy>=0.9 --baseline none"
    ip.run_line_magic("deploy", f"validate team-model/{{mv.version}} --data X --target y {{gate}}")
    ip.run_line_magic("deploy", f"promote team-model/{{mv.version}} --alias champion")
    versions.append(mv.version)
print("VERSIONS " + json.dumps(versions))
"""


def test_two_kernels_register_validate_and_promote_concurrently(team_server: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": team_server}
    kernels = [
        subprocess.Popen(
            [sys.executable, "-c", KERNEL.format(who=who)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    outputs = [k.communicate(timeout=600) for k in kernels]
    for k, (_out, err) in zip(kernels, outputs, strict=True):
        assert k.returncode == 0, err[-3000:]
    got = [
        json.loads(next(line for line in out.splitlines() if line.startswith("VERSIONS "))[9:]) for out, _ in outputs
    ]
    assert sorted(got[0] + got[1]) == list(range(1, 21))  # no version lost, none given twice

    from mlflow import MlflowClient

    client = MlflowClient(team_server)
    versions = client.search_model_versions("name='team-model'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 21))
    by_kernel = {w: {int(v.version) for v in versions if v.tags.get("kernel") == w} for w in ("a", "b")}
    assert by_kernel == {"a": set(got[0]), "b": set(got[1])}
    assert all(v.tags.get("nbdeploy.validation") == "passed" for v in versions)
    champion = int(client.get_model_version_by_alias("team-model", "champion").version)
    assert champion in (got[0][-1], got[1][-1])  # the last promotion of one of the two kernels


REGISTER = """
import nbdeploy
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
nbdeploy.register(LogisticRegression(max_iter=300).fit(X, y), "team-alias", X, y)
"""

PROMOTER = """
import json, sys, time
from mlflow import MlflowClient
from nbdeploy.registry._store import mlflow_errors, set_alias
start, errors, client = float(sys.argv[1]), [], MlflowClient()
for i in range(ALIASES):
    time.sleep(max(0.0, start + i * 0.1 - time.time()))  # every process writes alias i at one instant
    try:
        with mlflow_errors("promoting"):  # what promote() wraps its writes in
            set_alias(client, "team-alias", f"a{i}", "1")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print("ERRORS " + json.dumps(errors))
""".replace("ALIASES", "60")


def test_processes_creating_the_same_aliases_at_once_never_collide(team_server: str) -> None:
    """Creating an alias is a read then an insert: two at once collide on its primary key
    (``UniqueViolation``); the write is retried, so neither sees the collision."""
    from mlflow import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": team_server}
    subprocess.run([sys.executable, "-c", REGISTER], env=env, check=True, capture_output=True, timeout=300)
    start = str(time.time() + 8)  # after every interpreter has imported nbdeploy and MLflow
    procs = [
        subprocess.Popen([sys.executable, "-c", PROMOTER, start], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        errors = json.loads(next(line for line in out.splitlines() if line.startswith("ERRORS "))[7:])
        assert errors == [], errors[:3]
    aliases = MlflowClient(team_server).get_registered_model("team-alias").aliases
    assert set(aliases) == {f"a{i}" for i in range(60)}
