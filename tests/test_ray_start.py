"""Starting nbdeploy's own local Ray cluster when its head cannot come up (trust #16).

The failure is real: the head's port is held by a socket bound here (bound, not listening, so
nothing answers on it), and the head's GCS server aborts at once; ``ray start --head`` itself
would exit with code 1 only after about 40 s of its client's timeouts, so nbdeploy reads the
GCS's fatal line and stops the head. Only the choice of port is steered; every process is
Ray's own. That a failed head is started once more, on another port, is shown by
``tests/test_ray.py``'s local-cluster test (one head start fewer in the suite).
"""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbdeploy import config
from nbdeploy.deployments import ray_client
from nbdeploy.errors import DeploymentError
from tests.helpers import free_port

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[ray]')"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config.configure(home=tmp_path)
    yield tmp_path
    config.configure(home=None)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        yield held.getsockname()[1]


def test_a_head_that_exits_is_named_and_leaves_nothing(
    home: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = [taken_port]
    monkeypatch.setattr(ray_client, "free_port", lambda: ports.pop(0) if ports else free_port())
    log_file = home / ".ray" / "ray.log"
    heads: list[dict[str, Any]] = []  # every head started, as recorded in cluster.json
    spawn = ray_client._spawn_head
    monkeypatch.setattr(ray_client, "_spawn_head", lambda folder: heads.append(spawn(folder)) or heads[-1])

    with pytest.raises(DeploymentError) as failed:
        ray_client.start_local_cluster(tries=1)
    said = str(failed.value)
    assert re.search(r"its GCS server exited: .*Failed to start the grpc server.*; the end of ", said), said
    assert str(log_file) in said and f"port is {taken_port}" in said, said
    assert not (home / ".ray" / "cluster.json").exists()  # no record, no temp folder, no process left
    (failed_head,) = heads
    assert not Path(failed_head["temp_dir"]).exists()
    assert not subprocess.run(["pgrep", "-f", failed_head["temp_dir"]], capture_output=True).stdout


def test_only_a_fatal_line_of_the_gcs_counts_as_its_failure(tmp_path: Path) -> None:
    """Warnings, errors and garbage in a running GCS's log are not a failure; Ray's FATAL
    (``C``) line is, since the process aborts after it."""
    logs = tmp_path / "session_2026-12-02_04-44-05_1_2" / "logs"
    logs.mkdir(parents=True)
    err = logs / "gcs_server.err"
    err.write_bytes(b"\xff\xfe garbage\x00\n" * 3 + b"[2026-12-02 04:44:05,076 W 1 1] (gcs_server) slow\n"
                    b"[2026-12-02 04:44:05,077 E 1 1] (gcs_server) a retried error\n")  # fmt: skip
    assert ray_client._gcs_failure(str(tmp_path)) is None
    assert ray_client._gcs_failure(str(tmp_path / "nothing-here")) is None
    with err.open("a") as fh:
        fh.write("[2026-12-02 04:44:05,078 C 1 1] (gcs_server) grpc_server.cc:134: Check failed: server_ " + "x" * 5000)
    said = ray_client._gcs_failure(str(tmp_path))
    assert said is not None and said.startswith("(gcs_server) grpc_server.cc:134: Check failed") and len(said) <= 400
