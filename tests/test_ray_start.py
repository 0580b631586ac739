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
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbdeploy import config
from nbdeploy.deployments import ray_auth, ray_client, ray_gcs
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


def test_a_head_whose_gcs_fails_is_named_and_leaves_nothing(
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
    reason = f"its GCS server exited: could not listen on port {taken_port} (Address already in use)"
    assert said.startswith(f"The local Ray cluster did not start: {reason}; the end of {log_file}:"), said
    logged = [line for line in log_file.read_text().splitlines() if line.startswith("nbdeploy: ")]
    assert logged[-1].endswith(f"stopped: {reason}") and "Failed to start the grpc server" in logged[0], logged
    assert not (home / ".ray" / "cluster.json").exists()  # no record, no temp folder, no process left
    (failed_head,) = heads
    assert not Path(failed_head["temp_dir"]).exists()
    assert not subprocess.run(["pgrep", "-f", failed_head["temp_dir"]], capture_output=True).stdout


FATAL = (
    "E1202 04:32:27.043108775   23263 chttp2_server.cc:1059] UNKNOWN:No address added "
    '{children:[UNKNOWN:Address already in use {syscall:"bind", os_error:"Address already in use", errno:98}]}\n'
    "[2026-12-02 04:32:27,076 C 23263 23263] (gcs_server) grpc_server.cc:134:  An unexpected system state has "
    "occurred. You have likely discovered a bug in Ray. Please report this issue at https://github.com/ray-project/"
    "ray/issues and we'll work with you to fix it. Check failed: server_ Failed to start the grpc server. The "
    "specified port is 44935. This means that Ray's core components will not be able to function correctly.\n"
)


def _gcs_log(temp: Path, text: str | bytes, name: str = "gcs_server.err") -> Path:
    logs = temp / "session_2026-12-02_04-32-27_002638_1" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / name
    log.write_bytes(text if isinstance(text, bytes) else text.encode())
    return log


def test_the_gcs_fatal_line_is_said_in_a_few_words_and_kept_whole_for_the_log(tmp_path: Path) -> None:
    """Ray's boilerplate ("you have likely discovered a bug") is left out of what the user
    reads; gRPC's cause is added; the whole line goes to ray.log."""
    _gcs_log(tmp_path, FATAL)
    (tmp_path / "session_latest").symlink_to(next(tmp_path.glob("session_2026*")))
    failure = ray_gcs.gcs_failure(str(tmp_path))
    assert failure == ("could not listen on port 44935 (Address already in use)", FATAL.splitlines()[1])
    _gcs_log(tmp_path, FATAL.replace("Failed to start the grpc server. The specified port is 44935. ", "x. "))
    assert ray_gcs.gcs_failure(str(tmp_path)).reason == "server_ x"  # another check: what failed


def test_only_a_whole_fatal_line_in_a_regular_file_of_this_user_counts(tmp_path: Path) -> None:
    """Ray's log folders are writable by everyone: warnings, errors, garbage, a line still being
    written, a FIFO (which would block a reader), a link to /dev/zero (an endless line), a huge
    file and another user's file are not a failure, and reading them neither blocks nor raises."""
    log = _gcs_log(tmp_path, b"\xff\xfe garbage\x00\n" * 3 + b"[2026-12-02 04:44:05,076 W 1 1] (gcs_server) slow\n"
                   b"[2026-12-02 04:44:05,077 E 1 1] (gcs_server) a retried error\n")  # fmt: skip
    assert ray_gcs.gcs_failure(str(tmp_path)) is None
    assert ray_gcs.gcs_failure(str(tmp_path / "nothing-here")) is None
    log.write_text(FATAL.rstrip("\n"))  # its last line not whole yet
    assert ray_gcs.gcs_failure(str(tmp_path)) is None
    log.write_bytes(b"x" * (64 << 20) + FATAL.encode())  # beyond what is read
    assert ray_gcs.gcs_failure(str(tmp_path)) is None
    log.unlink()
    os.mkfifo(log)
    assert ray_gcs.gcs_failure(str(tmp_path)) is None
    log.unlink()
    log.symlink_to("/dev/zero")
    assert ray_gcs.gcs_failure(str(tmp_path)) is None
    _gcs_log(tmp_path, FATAL, "gcs_server.1.err")  # ... and a planted link hides no real failure beside it
    assert ray_gcs.gcs_failure(str(tmp_path)) is not None
    (log.parent / "gcs_server.1.err").unlink()
    log.unlink()
    log.write_text(FATAL)
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(log, 65534, 65534)
        assert ray_gcs.gcs_failure(str(tmp_path)) is None
        os.chown(log, 0, 0)
    assert ray_gcs.gcs_failure(str(tmp_path)) is not None


def test_a_tampered_or_stale_record_is_never_adopted_stopped_or_removed_blindly(home: Path) -> None:
    """cluster.json naming a live process that is not this head, or a folder nbdeploy did not
    make, is ignored; a record of a head that died is removed with its temp folder."""
    record = home / ".ray" / "cluster.json"
    record.parent.mkdir(parents=True)
    precious = home / "precious"
    precious.mkdir()
    for temp_dir in (str(precious), "/tmp/nbd-ray-x/../../" + str(precious), "/"):
        record.write_text(json.dumps({"address": "127.0.0.1:1", "pid": os.getpid(), "temp_dir": temp_dir}))
        assert ray_client._local_cluster() is None and not ray_client.stop_local_cluster("127.0.0.1:1")
        assert precious.is_dir() and record.exists()
    stale = tempfile.mkdtemp(prefix="nbd-ray-", dir="/tmp")
    record.write_text(json.dumps({"address": "127.0.0.1:1", "pid": os.getpid(), "temp_dir": stale}))
    assert ray_client._local_cluster() is None  # this process is no head of that folder
    assert not Path(stale).exists() and not record.exists()


def test_only_nbdeploys_own_cluster_gets_its_token_and_the_users_settings_stay_for_others(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver for nbdeploy's head gets that head's token in place of the user's Ray settings
    (Kubernetes' token review included); a driver for another cluster keeps the user's, but
    never a path to nbdeploy's token; a record without a token (an earlier head) gives none."""
    folder = home / ".ray"
    folder.mkdir()
    token = folder / "auth_token-6379"
    record = {"address": "127.0.0.1:6379", "pid": 1, "temp_dir": "/tmp/nbd-ray-x", "token": str(token)}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the users")
    monkeypatch.setenv("RAY_ENABLE_K8S_TOKEN_AUTH", "true")
    own = ray_auth.driver_env("127.0.0.1:6379", record)
    assert own["RAY_AUTH_MODE"] == "token" and own["RAY_AUTH_TOKEN_PATH"] == str(token)
    assert "RAY_AUTH_TOKEN" not in own and "RAY_ENABLE_K8S_TOKEN_AUTH" not in own
    other = ray_auth.driver_env("10.0.0.5:6379", record)
    assert other["RAY_AUTH_TOKEN"] == "the users" and "RAY_AUTH_TOKEN_PATH" not in other
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))  # the docs' recipe, set in the kernel by mistake
    assert "RAY_AUTH_TOKEN_PATH" not in ray_auth.driver_env("10.0.0.5:6379", record)
    for earlier in ({**record, "token": None}, {**record, "token": "/etc/passwd"}, None):
        assert ray_auth.driver_env("127.0.0.1:6379", earlier).get("RAY_AUTH_TOKEN") == "the users"


def test_a_head_counts_as_up_once_ray_says_its_raylet_registered_or_it_outlived_rays_wait(tmp_path: Path) -> None:
    """``ray start`` writes ray_current_cluster once the head's raylet has registered; a driver
    started before then may not find it. The folder is writable by everyone, so a head old
    enough to have registered (or exited) is up whatever the file's fate: deleting it must not
    get a live head stopped."""
    now = time.time()
    assert not ray_gcs.registered(str(tmp_path), now)
    assert not ray_gcs.registered(str(tmp_path), "long ago")  # a tampered record's time counts for nothing
    (tmp_path / "ray_current_cluster").write_text("127.0.0.1:6379")
    assert ray_gcs.registered(str(tmp_path), now)
    (tmp_path / "ray_current_cluster").unlink()
    assert ray_gcs.registered(str(tmp_path), now - ray_gcs.HEAD_WAIT_S - 1)
    assert not ray_gcs.registered(str(tmp_path / "gone"), now)
