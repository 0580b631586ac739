"""The MLflow run that records one batch-scoring job: the model version, where the rows came
from and went, and how many there were (tags ``nbdeploy.batch.*``, metrics ``rows`` and
``rows_per_s``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nbdeploy.registry._store import client, experiment_id, mlflow_errors

__all__ = ["record_batch"]


def record_batch(model: str, version: str | None, source: Any, out: Path, rows: int, seconds: float, workers: int,
                 chunk_rows: int) -> str:  # fmt: skip
    """Log a finished run for a batch job; its id."""
    from mlflow.entities import Metric, Param

    data = str(source.path) if source.path is not None else f"a DataFrame of {source.total:,} rows"
    tags = {"nbdeploy.kind": "batch", "nbdeploy.batch.model": model, "nbdeploy.batch.input": data[:5000],
            "nbdeploy.batch.output": str(out)[:5000], "nbdeploy.batch.rows": str(rows)}  # fmt: skip
    if version is not None:
        tags["nbdeploy.batch.model_version"] = version
    now = int(time.time() * 1000)
    with mlflow_errors("recording the batch run"):
        c = client()
        run = c.create_run(experiment_id(c), run_name=f"batch-{model.replace('/', '-v')}", tags=tags)
        run_id = str(run.info.run_id)
        c.log_batch(run_id,
                    metrics=[Metric("rows", rows, now, 0), Metric("seconds", seconds, now, 0),
                             Metric("rows_per_s", rows / seconds if seconds > 0 else 0.0, now, 0)],
                    params=[Param("workers", str(workers)), Param("chunk_rows", str(chunk_rows))])  # fmt: skip
        c.set_terminated(run_id)
    return run_id
