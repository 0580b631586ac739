"""``batch --target ray``: the same job on Ray Data, for data beyond one machine.

The kernel checks what it can (the input's columns, ``--key``, ``--out``), then runs the
driver :mod:`nbdeploy.serving.ray_batch` in a process of its own (the kernel never imports
Ray) on the cluster at ``--address`` (or ``RAY_ADDRESS``; without either, nbdeploy's local
cluster, stopped afterwards when no deployment uses it). The driver writes the answers under
the output's temporary name; the kernel renames it once the driver says it is done, and
records the MLflow run as a local job does.

>>> nbdeploy.batch("cancer@champion", "big.parquet", "scores.parquet", target="ray")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy._files import open_log
from nbdeploy.deployments import processes
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError

__all__ = ["DRIVER", "run_on_ray"]

DRIVER = "nbdeploy.serving.ray_batch"


def _require_ray_data() -> None:
    ray = importlib.util.find_spec("ray")  # without importing it (find_spec("ray.data") would)
    places = ray.submodule_search_locations or [] if ray is not None else []
    found = any((Path(p) / "data" / "__init__.py").exists() for p in places)
    if not found:
        raise DeploymentError(
            "--target ray needs Ray Data, which is not installed here: pip install 'nbdeploy[ray]'.", docs=Docs.EXTRAS
        )


def _frame_file(source: Any, folder: Path) -> Path | None:
    """A DataFrame written where the driver reads it (a file path is read as it is)."""
    if source.path is not None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for left in folder.glob("frame-*.parquet"):  # what a killed kernel left
        pid = left.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            left.unlink(missing_ok=True)
    path = folder / f"frame-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    try:
        table = pa.Table.from_pandas(source.data, preserve_index=False)
        pq.write_table(table.rename_columns([str(c) for c in table.column_names]), path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        path.unlink(missing_ok=True)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"--data cannot be sent to Ray: {why} (give each column one type).") from None
    return path


def _drive(job: dict[str, Any], log_path: Path, progress: Any) -> dict[str, Any]:
    """Run the driver, following its ``{"done": N}`` lines; its last line."""
    from nbdeploy.deployments.ray_client import driver_environment

    with open_log(log_path) as log:
        proc = subprocess.Popen([sys.executable, "-m", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, env={**driver_environment(job["address"]), "PYTHONUNBUFFERED": "1"},
                                start_new_session=True)  # fmt: skip
    processes.children[proc.pid] = proc
    last: dict[str, Any] = {}
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                last = json.loads(line)
            if "done" in last and progress is not None:
                progress(int(last["done"]), job.get("total"))
        proc.wait(timeout=60)  # it exits once it has answered
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C), or hung after its answer: it goes
            try:
                processes.stop_group(proc.pid, DRIVER, timeout=5)
            except KeyboardInterrupt:  # interrupted again: no more waiting
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, 9)
                raise
        processes.children.pop(proc.pid, None)
    if "ok" not in last:
        raise DeploymentError(f"The Ray batch driver ended with code {proc.returncode} and no answer; see {log_path}.")
    return last


def run_on_ray(source: Any, output: Any, model_path: str, send_key: bool, *, chunk_rows: int, workers: int | None,
               proba: bool, address: str | None, progress: Any) -> tuple[int, int]:  # fmt: skip
    """Score ``source`` into ``output`` on Ray Data; ``(rows, workers)``."""
    from nbdeploy.deployments.ray_client import resolve_address, stop_local_cluster_if_unused

    _require_ray_data()
    folder = config.home() / "_batch"
    frame_file, resolved, started = None, "", False
    try:
        frame_file = _frame_file(source, folder)
        resolved, started = resolve_address(address)
        answer = _drive(_job(source, output, model_path, send_key, frame_file, resolved, chunk_rows, workers, proba),
                        folder / "ray-batch.log", progress)  # fmt: skip
    finally:
        if frame_file is not None:
            frame_file.unlink(missing_ok=True)
        if started:
            stop_local_cluster_if_unused(resolved)
    if not answer["ok"]:
        raise InvalidInputError(str(answer.get("error") or "The Ray batch job failed."))
    if not answer.get("rows"):
        raise InvalidInputError("--data has no rows to score.")
    return int(answer["rows"]), int(answer.get("workers") or 0)


def _job(source: Any, output: Any, model_path: str, send_key: bool, frame_file: Path | None, resolved: str,
         chunk_rows: int, workers: int | None, proba: bool) -> dict[str, Any]:  # fmt: skip
    return {"address": resolved, "model_path": model_path, "data": str(frame_file or source.path),
           "kind": "parquet" if frame_file else source.kind, "out": str(output.partial), "csv": output.kind == "csv",
           "proba": proba, "key": source.key, "send_key": send_key, "chunk_rows": chunk_rows, "workers": workers,
           "total": source.total, "parent": os.getpid(), "columns": list(source.columns)}  # fmt: skip
