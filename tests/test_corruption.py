"""The state folder, damaged: each state file of a live deployment damaged in several ways
(empty, garbage, truncated, a symbolic link), and every ``nbdeploy`` command run on it.
Each answers, or says in one sentence what is wrong; none raises; nothing outside the
folder is written through a link; and ``stop --all`` leaves no server running."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbdeploy import cli
from nbdeploy.deployments import processes
from nbdeploy.model_copy import MANIFEST

pytestmark = pytest.mark.timeout(300)


def _truncate(path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b"{}"
    path.unlink(missing_ok=True)
    path.write_bytes(data[: max(1, len(data) // 2)])


def _symlink(outside: Path) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.symlink_to(outside)

    return damage


DAMAGES: dict[str, Callable[[Path, Path], None]] = {
    "empty": lambda path, outside: (path.unlink(missing_ok=True), path.write_bytes(b"")),
    "garbage": lambda path, outside: (path.unlink(missing_ok=True), path.write_bytes(b"\xff\x00{12a")),
    "truncated": lambda path, outside: _truncate(path),
    "symlink": lambda path, outside: _symlink(outside)(path),
}
FILES = ["spec.json", "pid", "port", "token", "requests.jsonl", "feedback.jsonl", "alerts.jsonl", "server.log",
         ".lock", "manifest"]  # fmt: skip
CASES = [(file, damage) for file in FILES for damage in DAMAGES]
# two deployments per run, each damaged its own way: half as many servers to start
PAIRS = [(CASES[i], CASES[(i + len(CASES) // 2) % len(CASES)]) for i in range(len(CASES) // 2)]


def _damage(folder: Path, file: str, damage: str, outside: Path) -> None:
    path = next((folder / "models").rglob(MANIFEST)) if file == "manifest" else folder / file
    DAMAGES[damage](path, outside)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``nbdeploy ARGV`` in this process: its exit status and what it said on stderr."""
    status = cli.main(list(argv))  # an exception here is a traceback a user would have seen
    err = capsys.readouterr().err.strip()
    if status:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("nbdeploy: error: "), (argv, err)
        assert lines[0].endswith((".", ")")) and "Traceback" not in err, (argv, err)
    return status, err


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a[0]}-{a[1]}+{b[0]}-{b[1]}" for a, b in PAIRS])
def test_every_command_on_a_damaged_folder_is_one_sentence_and_stop_all_stops_everything(
    serving: Any, two_versions: str, cancer: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    first: tuple[str, str], second: tuple[str, str],
) -> None:  # fmt: skip
    outside = tmp_path / "not-nbdeploys.txt"
    outside.write_text("precious\n")
    rows = tmp_path / "rows.csv"
    cancer["X_test"].head(3).to_csv(rows, index=False)
    ref = f"{two_versions}/1"
    deps = []
    for file, damage in (first, second):
        dep = serving(ref, name=f"c-{file.strip('.').replace('.', '-')}-{damage}-{os.urandom(2).hex()}")
        _damage(dep.path, file, damage, outside)
        deps.append(dep)
    pids = [dep.pid for dep in deps]
    for dep in deps:
        name = dep.name
        commands = [
            ["list"], ["status", name], ["logs", name], ["monitor", name, "--once"],
            ["predict", name, "--data", str(rows)], ["alerts", name], ["serve", ref, "--name", name],
        ]  # fmt: skip
        for argv in commands:
            _run(capsys, *argv)
    _run(capsys, "stop", "--all")
    for dep, pid in zip(deps, pids, strict=True):
        assert processes.find_server(str(dep.path)) is None, f"{dep.name} still runs"
        assert pid is None or not processes.alive(pid, str(dep.path))
        status, _ = _run(capsys, "serve", ref, "--name", dep.name)  # serving again on the damaged folder
        if status == 0:
            assert _run(capsys, "stop", dep.name)[0] == 0
        assert processes.find_server(str(dep.path)) is None
    assert outside.read_text() == "precious\n"  # nothing written through a link
    assert oct(outside.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
