"""Starting and stopping real processes for tests: free ports, readiness, process groups."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from nbdeploy.deployments.ray_client import free_port

__all__ = ["JSON", "battery", "eventually", "free_port", "imported_after", "running", "stop_group", "usage_error",
           "wait_http"]


def usage_error(ip: Any, line: str) -> str:
    """The message of the ``UsageError`` that ``%deploy LINE`` raises (exactly that class:
    IPython shows a subclass with a traceback)."""
    import pytest
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as err:
        ip.run_line_magic("deploy", line)
    assert type(err.value) is UsageError
    return str(err.value)


def eventually(get: Callable[[], Any], ok: Callable[[Any], bool] = bool, timeout: float = 30.0) -> Any:
    """``get()`` once ``ok(get())`` holds, polling; the last value when the deadline passes
    (the caller asserts on it, so a failure shows what was seen)."""
    deadline = time.monotonic() + timeout
    value = get()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = get()
    return value


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Terminate the process group of ``proc`` and wait; kill it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the leader


@contextlib.contextmanager
def running(
    cmd: Sequence[str], ready_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group until the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_http(ready_url, proc, log)
        yield proc
    finally:
        stop_group(proc)


def imported_after(statements: str, modules: Sequence[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``statements``."""
    import sys

    code = f"import sys\n{statements}\nprint(','.join(m for m in {list(modules)!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


JSON = {"Content-Type": "application/json"}


def battery(X: Any) -> dict[str, tuple[bytes, dict[str, str]]]:
    head = X.head(5)
    split = json.loads(head.to_json(orient="split", index=False))
    records = json.loads(head.to_json(orient="records"))
    cols = list(X.columns)
    js = lambda doc: json.dumps(doc).encode()  # noqa: E731
    bad_type = [["oops", *row[1:]] for row in split["data"][:1]]
    return {
        "dataframe_split": (js({"dataframe_split": split}), JSON),
        "dataframe_split with index": (
            js({"dataframe_split": json.loads(head.to_json(orient="split"))}),
            JSON,
        ),
        "dataframe_records": (js({"dataframe_records": records}), JSON),
        "instances": (js({"instances": records}), JSON),
        "inputs columnar": (js({"inputs": {c: head[c].tolist() for c in cols}}), JSON),
        "inputs records": (js({"inputs": records}), JSON),
        "params": (js({"dataframe_split": split, "params": {"threshold": 0.5}}), JSON),
        "csv": (head.to_csv(index=False).encode(), {"Content-Type": "text/csv"}),
        "json charset": (js({"dataframe_split": split}), {"Content-Type": "application/json; charset=utf-8"}),
        "columns reordered": (
            js({"dataframe_records": [dict(reversed(list(r.items()))) for r in records]}),
            JSON,
        ),
        "extra column": (js({"dataframe_records": [{**r, "extra": 1} for r in records]}), JSON),
        "integers for doubles": (
            js({"dataframe_records": [{c: int(v) for c, v in r.items()} for r in records]}),
            JSON,
        ),
        "missing column": (
            js({"dataframe_split": {"columns": cols[1:], "data": [r[1:] for r in split["data"]]}}),
            JSON,
        ),
        "wrong type": (js({"dataframe_split": {"columns": cols, "data": bad_type}}), JSON),
        "malformed json": (b'{"dataframe_split": {', JSON),
        "json list": (b"[1, 2, 3]", JSON),
        "unknown key": (js({"data": split["data"]}), JSON),
        "empty body": (b"", JSON),
        "unsupported content type": (b"a,b\n1,2\n", {"Content-Type": "text/plain"}),
    }


def rows_with_secrets(cancer: dict[str, Any], n: int) -> Any:
    """Served rows unlike any training row: numbers with a tail of their own, emails of nobody."""
    X = cancer["X_test"][list(cancer["X_test"].columns[:5])].head(n) + 0.000123457
    return X.assign(email=[f"secret-person-{i}@private.example" for i in range(n)])
