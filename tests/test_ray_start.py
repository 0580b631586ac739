"""Starting nbdeploy's own local Ray cluster when its head cannot come up (trust #16).

The failure is real: the head's port is held by a socket bound here (bound, not listening, so
nothing answers on it), and ``ray start --head`` exits with code 1 after its GCS fails to bind.
Only the choice of port is steered; every process is Ray's own. That a failed head is started
once more, on another port, is shown by ``tests/test_ray.py``'s local-cluster test (one head
start fewer in the suite: each costs about 30 s here).
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
    assert re.search(r"its head process \(pid \d+\) exited with code 1; the end of ", said), said
    assert str(log_file) in said and "Failed to start GCS" in said, said
    assert not (home / ".ray" / "cluster.json").exists()  # no record, no temp folder, no process left
    (failed_head,) = heads
    assert not Path(failed_head["temp_dir"]).exists()
    assert not subprocess.run(["pgrep", "-f", failed_head["temp_dir"]], capture_output=True).stdout
