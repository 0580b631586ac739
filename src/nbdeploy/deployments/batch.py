"""Batch scoring: a model version over a file or a DataFrame, in parallel chunks, to a file.

>>> nbdeploy.batch("cancer@champion", "customers.parquet", "scores.parquet", workers=2)  # doctest: +SKIP
Scored 1,000,000 rows with cancer/3 in 9.8 s (102,000 rows/s, 2 workers) to scores.parquet.

``workers`` processes (``nbdeploy.serving.batch_worker``, :mod:`.batch_process`) each load the
model once; :mod:`.batch_run` keeps each busy (one chunk ahead) and this thread writes the
answers in input order, so memory is bounded by the chunk size, whatever the input's
(:mod:`.batch_io` reads and writes). Columns are checked before any process starts, each
chunk as the server checks a request, and a chunk that breaks the signature stops the run
with a sentence naming its rows.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy.errors import InvalidInputError, require
from nbdeploy.reprs import fit
from nbdeploy.spec import BATCH_CHUNK_ROWS

__all__ = ["BatchResult", "batch"]


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote: the file, rows, time, and the MLflow run that records it."""

    path: Path
    rows: int
    model: str
    seconds: float
    workers: int
    chunk_rows: int
    run_id: str | None
    not_recorded: str | None = None  # why no MLflow run records the job (the tracking store failed)
    startup_seconds: float = 0.0  # of ``seconds``: until every process had loaded the model

    def __repr__(self) -> str:
        rate = f"{self.rows / self.seconds:,.0f} rows/s, " if self.seconds > 0 and self.rows else ""
        run = f"; MLflow run {self.run_id}" if self.run_id else ""
        if self.not_recorded:
            run = f"; not recorded in MLflow: {self.not_recorded}"
        return fit(f"Scored {self.rows:,} rows with {self.model} in {self.seconds:.1f} s ({rate}{self.workers} "
                   f"worker{'s' if self.workers != 1 else ''}) to {self.path}{run}.")  # fmt: skip

    def _repr_html_(self) -> str:
        from nbdeploy.reprs import card, esc

        return card(f"Batch scoring with {esc(self.model)}", f"<p>{esc(repr(self))}</p>")

    def frame(self) -> Any:
        """The predictions as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.path) if self.path.suffix.lower() != ".csv" else pd.read_csv(self.path)


def _model_path(ref: str) -> tuple[str, str, str | None]:
    """The local copy of ``ref``'s model (kept under NBDEPLOY_HOME/_batch), its label and version."""
    from nbdeploy import config
    from nbdeploy.deployments.models import fetch

    entry = fetch(ref, config.home() / "_batch")
    return entry.model_path, entry.resolved or ref, str(entry.version) if entry.version is not None else None


def _check_columns(source: Any, model_path: str) -> bool:
    """Refuse input without a column the model requires (one sentence, before any process
    starts); whether the ``--key`` column is one the model takes (else it is not sent)."""
    from nbdeploy.model_entry import read_signature

    try:
        inputs, _ = read_signature(model_path)
    except (OSError, ValueError):
        inputs = None
    named = [c for c in inputs or [] if "name" in c]
    missing = [str(c["name"]) for c in named if c.get("required", True) and str(c["name"]) not in source.columns]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InvalidInputError(f"--data is missing {len(missing)} column(s) the model takes: {shown}.")
    return source.key is None or source.key in {str(c["name"]) for c in named}


def _end(processes: list[Any], threads: list[threading.Thread], spool: Any, failed: bool) -> None:
    """Stop the processes (at once after a failure: nobody reads their answers), then the threads."""
    if failed:
        for p in processes:
            p.kill()
    for p in processes:
        p.stop(timeout=1 if failed else 10)
    for t in threads:
        if t.is_alive():
            t.join(timeout=5)
    if spool is not None:
        spool.remove()


def batch(ref: str, data: Any, out: str | Path, *, chunk_rows: int = BATCH_CHUNK_ROWS, workers: int | None = None,
          proba: bool = True, key: str | None = None, progress: Any = None, log_run: bool = True,
          target: str = "local", address: str | None = None) -> BatchResult:  # fmt: skip
    """Score ``data`` (a CSV/Parquet path or a DataFrame) with ``ref`` into ``out`` (.parquet or .csv).

    ``target="ray"`` runs it on Ray Data at ``address`` (or ``RAY_ADDRESS``, or nbdeploy's
    local cluster), ``workers`` actors (default: one per CPU of the cluster)."""
    require("pyarrow", "batch", "Batch scoring")
    from nbdeploy.deployments.batch_io import Input, Output
    from nbdeploy.deployments.batch_process import ScoringProcess, Spool
    from nbdeploy.deployments.batch_run import Run

    if target not in ("local", "ray"):
        raise InvalidInputError(f"Unknown target {target!r}: use local or ray.")
    _check_sizes(workers, chunk_rows)
    if target == "ray":
        return _batch_on_ray(ref, data, Path(out), chunk_rows, workers, proba, key, progress, log_run, address)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = cores if workers is None else workers
    source = Input(data, chunk_rows, key)
    output = Output(Path(out), source)
    model_path, label, version = _model_path(ref)
    run = Run(source, workers, key, _check_columns(source, model_path), progress)
    started = time.perf_counter()
    processes: list[Any] = []
    threads: list[threading.Thread] = []
    spool, failed = None, True
    try:
        spool = Spool()
        processes += [ScoringProcess(model_path, proba, max(1, cores // workers), spool) for _ in range(workers)]
        for p in processes:
            p.ready()
        startup = time.perf_counter() - started
        threads += [threading.Thread(target=run.drive, args=(p,), daemon=True) for p in processes]
        for t in threads:
            t.start()
        rows = run.write(output)
        if output.writer is None:
            raise InvalidInputError("--data has no rows to score.")
        output.commit()
        failed = False
    except BaseException as exc:
        run.fail(exc)
        output.discard()
        raise
    finally:
        try:
            _end(processes, threads, spool, failed)
        except KeyboardInterrupt:  # interrupted again while cleaning up: kill what is left, then stop
            _end(processes, [], spool, True)
            raise
    if progress is not None:
        progress(rows, rows)  # the end, also where the total was not known
    seconds = time.perf_counter() - started
    return BatchResult(output.path, rows, label, seconds, workers, chunk_rows,
                       *_record(log_run, label, version, source, output.path, rows, seconds, workers, chunk_rows),
                       startup)  # fmt: skip


def _check_sizes(workers: int | None, chunk_rows: int) -> None:
    """One sentence for a worker count or chunk size out of range (either target)."""
    if workers is not None and not 1 <= workers <= 256:
        raise InvalidInputError(f"Invalid worker count {workers}: use 1 to 256.")
    if not 1 <= chunk_rows <= 50_000_000:
        raise InvalidInputError(f"Invalid chunk size {chunk_rows} rows: use 1 to 50,000,000.")


def _batch_on_ray(ref: str, data: Any, out: Path, chunk_rows: int, workers: int | None, proba: bool, key: str | None,
                  progress: Any, log_run: bool, address: str | None) -> BatchResult:  # fmt: skip
    from nbdeploy.deployments.batch_io import Input, Output
    from nbdeploy.deployments.batch_ray import run_on_ray

    source = Input(data, chunk_rows, key)
    output = Output(out, source)
    model_path, label, version = _model_path(ref)
    send_key = _check_columns(source, model_path)
    started = time.perf_counter()
    try:
        rows, used = run_on_ray(source, output, model_path, send_key, chunk_rows=chunk_rows, workers=workers,
                                proba=proba, address=address, progress=progress)  # fmt: skip
        output.partial.replace(output.path)
    except BaseException:
        output.discard()
        raise
    seconds = time.perf_counter() - started
    recorded = _record(log_run, label, version, source, output.path, rows, seconds, used, chunk_rows)
    return BatchResult(output.path, rows, label, seconds, used, chunk_rows, *recorded)


def _record(log_run: bool, *args: Any) -> tuple[str | None, str | None]:
    """The MLflow run recording the job (its id), or why there is none: the predictions are
    written either way, so a tracking store that fails does not fail the job."""
    if not log_run:
        return None, None
    from nbdeploy.registry.batch_runs import record_batch

    try:
        return record_batch(*args), None
    except Exception as exc:
        return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
