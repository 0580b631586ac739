"""A run's record: its start and end in ``runs.jsonl``, its MLflow run, and the webhook.

Whatever a run's steps raise, its end is written: an :class:`~.pipeline.Outcome` as it is
said, one of nbdeploy's errors as its sentence, anything else as ``failed`` with the
exception (its traceback in ``job.log``). A run that ends ``failed`` or ``rejected`` changed
nothing; the webhook hears of every end.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nbdeploy.deployments.retrain_files import JobFiles
from nbdeploy.errors import NbdeployError, with_docs
from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.retraining.pipeline import Outcome, RunContext, run_steps
from nbdeploy.retraining.spec import RetrainSpec
from nbdeploy.retraining.triggers import Trigger

__all__ = ["ENDED", "one_run", "said"]

_webhooks = AlertBook()  # its sender thread retries a webhook with backoff, never blocking a run
#: Runs of this process whose end is recorded (a stop does not record them again).
ENDED: set[int] = set()


def said(text: str) -> None:
    """A line of ``job.log`` (the job's stdout), with its time."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC  {text}", flush=True)


def one_run(spec: RetrainSpec, files: JobFiles, number: int, trigger: Trigger,
            stopping: threading.Event) -> dict[str, Any]:  # fmt: skip
    """Run ``number`` from start to end record; the end record."""
    started = time.time()
    steps: list[str] = []

    def say(text: str) -> None:
        steps.append(text)
        said(f"run {number}: {text}")

    ctx = RunContext(spec, files, number, trigger, stopping, say)
    try:
        files.append_run({"run": number, "event": "started", "started": started, "trigger": trigger.to_dict()})
        said(f"run {number}: {trigger.reason}")
        outcome, why = run_steps(ctx)
    except Outcome as exc:
        outcome, why = exc.outcome, exc.why
    except NbdeployError as exc:
        outcome, why = "failed", with_docs(exc)
    except Exception as exc:  # a bug or a library's failure: the job must outlive it
        traceback.print_exc(file=sys.stdout)
        outcome, why = "failed", f"{type(exc).__name__}: {exc}"[:1000]
    if stopping.is_set() and outcome == "failed":  # its kernel was killed by the stop
        outcome, why = "stopped", f"the job was stopped during this run ({why})"
    end = {"run": number, "event": "ended", "ended": time.time(), "seconds": round(time.time() - started, 3),
           "outcome": outcome, "why": why, "steps": steps, **ctx.found}  # fmt: skip
    _end(files, end)  # first: what happened is on disk before the store is asked (which may hang)
    ENDED.add(number)
    said(f"run {number}: {outcome}: {why}")
    if spec.webhook:
        told = {k: end.get(k) for k in ("run", "outcome", "why", "candidate", "run_id")}
        _webhooks.record({"ts": time.time(), "job": f"retrain {spec.deployment}", "rule": "retrain", "state": outcome,
                          **told}, spec.webhook)  # fmt: skip
    artifact = _finish_mlflow(ctx, end)
    if artifact:
        _end(files, {"run": number, "notebook_artifact": artifact})
        end["notebook_artifact"] = artifact
    return end


def _end(files: JobFiles, doc: dict[str, Any]) -> None:
    try:
        files.append_run(doc)
    except OSError as exc:  # a full disk: the log still says it
        said(f"run {doc.get('run')}: its record could not be written to runs.jsonl: {exc}")


def _finish_mlflow(ctx: RunContext, end: dict[str, Any]) -> str | None:
    """The run's tags and executed notebook in MLflow (the notebook's artifact URI); a store
    that fails is said in the log, never raised (``runs.jsonl`` already says what happened)."""
    from nbdeploy.registry.retrain_runs import finish_retrain_run

    run_id = ctx.found.get("run_id")
    if not run_id:
        return None
    tags = {f"nbdeploy.retrain.{k}": end[k] for k in ("outcome", "why", "candidate", "report", "verdict") if end.get(k)}
    notebook = Path(end["notebook"]) if end.get("notebook") else None
    try:
        finish_retrain_run(run_id, tags, {"retrain": notebook} if notebook else {},
                           failed=end["outcome"] in ("failed", "rejected", "stopped"))  # fmt: skip
    except Exception as exc:
        said(f"run {end['run']}: not recorded in MLflow: {str(exc).strip()[:300]}")
        return None
    return f"runs:/{run_id}/retrain/{notebook.name}" if notebook is not None and notebook.is_file() else None
