"""Promotion (aliases) and the validation records promotion reads.

Validation writes ``nbdeploy.validation`` ("passed"/"failed") on a version, a gated load
test ``nbdeploy.loadtest``; ``promote`` moves an alias only to a version whose last
validation passed and whose load test did not fail, unless forced.

>>> promote("cancer/2", alias="champion")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from nbdeploy.errors import PromotionRefusedError
from nbdeploy.refs import ModelRef, validate_alias
from nbdeploy.registry._store import client, experiment_id, mlflow_errors, set_alias, tracking_uri, using_tracking_uri
from nbdeploy.registry.history import record_event
from nbdeploy.registry.loadtests import LOADTEST_FAILED_TAG, LOADTEST_TAG
from nbdeploy.registry.lookup import fetch_version, resolve
from nbdeploy.registry.versions import SUMMARY_MARKER, ModelVersion

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "FORCED_TAG",
    "REFUSED_TAG",
    "VALIDATION_FAILED_TAG",
    "VALIDATION_TAG",
    "check_promotable",
    "promote",
    "record_validation",
    "start_validation_run",
]

# Version tags written by validation and read by promote.
VALIDATION_TAG = "nbdeploy.validation"
VALIDATION_FAILED_TAG = "nbdeploy.validation.failed"
REFUSED_TAG = "nbdeploy.promotion.refused"
FORCED_TAG = "nbdeploy.promotion.forced"


def promote(ref: str | ModelRef, alias: str = "champion", *, force: bool = False) -> ModelVersion:
    """Point ``alias`` of the model at the version ``ref`` resolves to.

    Only a version whose last validation passed (and whose last gated load test, if any,
    did not fail: :mod:`nbdeploy.registry.loadtests`) is promoted; ``force=True`` promotes
    any version. A refusal and a forced promotion are recorded as version tags
    (``nbdeploy.promotion.refused``, ``nbdeploy.promotion.forced``).

    >>> promote("cancer/2", alias="champion").aliases   # doctest: +SKIP
    ['champion']
    """
    validate_alias(alias)
    with mlflow_errors(f"promoting {ref} to @{alias}"):
        mv = resolve(ref)
        return _promote(client(), mv, alias, force=force)


def check_promotable(ref: str | ModelRef, alias: str = "champion", *, force: bool = False) -> None:
    """Raise the refusal :func:`promote` would raise (and tag it as promote does), without
    moving the alias: a caller checks the gate before it changes what it serves."""
    validate_alias(alias)
    with mlflow_errors(f"checking {ref} for @{alias}"):
        _gate(client(), resolve(ref), alias, force=force)


def _promote(c: MlflowClient, mv: ModelVersion, alias: str, *, force: bool) -> ModelVersion:
    """Move ``alias`` to ``mv`` if its validation passed (or ``force``); tag refusals and forced moves."""
    forced = _gate(c, mv, alias, force=force)
    set_alias(c, mv.name, alias, str(mv.version))
    record_event(c, mv, "promoted", f"to @{alias}" + (f", forced: {forced}" if forced else ""))
    return fetch_version(c, mv.name, mv.version)


def _gate(c: MlflowClient, mv: ModelVersion, alias: str, *, force: bool) -> str | None:
    """Raise :class:`PromotionRefusedError` unless the last validation of ``mv`` passed (or
    ``force``); returns why a forced promotion needed forcing (``None``: it did not)."""
    from datetime import datetime, timezone

    status = mv.tags.get(VALIDATION_TAG)
    loaded = mv.tags.get(LOADTEST_TAG)
    if status != "passed" or loaded == "failed":
        if status == "passed":  # the load test failed
            failed = mv.tags.get(LOADTEST_FAILED_TAG) or "its gates"
            reason, advice = f"its last load test failed on {failed}", "run %deploy loadtest again once it passes"
        elif status is None:
            reason = "it was never validated"
            advice = f"run %deploy validate {mv.ref} --data X --target Y first"
        else:
            failed = mv.tags.get(VALIDATION_FAILED_TAG) or "its gates"
            reason, advice = f"its last validation failed on {failed}", "validate it again once it passes"
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = f"{stamp}: @{alias}: {reason}"
        if not force:
            c.set_model_version_tag(mv.name, str(mv.version), REFUSED_TAG, record)
            record_event(c, mv, "promotion refused", f"to @{alias}: {reason}")
            raise PromotionRefusedError(
                f"Refusing to promote {mv.ref} to @{alias}: {reason}; {advice} "
                f"({'Deployment.loadtest' if status == 'passed' else 'nbdeploy.validate'} in Python), "
                "or pass --force (force=True) to promote it anyway."
            )
        c.set_model_version_tag(mv.name, str(mv.version), FORCED_TAG, record)
        return reason
    return None


def start_validation_run(mv: ModelVersion) -> str:
    """Create the run that will hold one validation of ``mv``; returns its id.

    >>> run_id = start_validation_run(resolve("cancer/2"))   # doctest: +SKIP
    """
    from mlflow.entities import LoggedModelInput

    with mlflow_errors(f"starting a validation run of {mv.ref}"), using_tracking_uri(tracking_uri()):
        c = client()
        run = c.create_run(
            experiment_id(c),
            run_name=f"validate-{mv.name}-{mv.version}",
            tags={"nbdeploy.model_version": mv.ref, "nbdeploy.run": "validation"},
        )
        if mv.source.startswith("models:/m-"):  # MLflow 3: the logged model is the run's input
            c.log_inputs(run.info.run_id, models=[LoggedModelInput(mv.source[len("models:/") :])])
    return str(run.info.run_id)


def record_validation(
    mv: ModelVersion,
    run_id: str,
    *,
    files: Mapping[str, str],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    summary: str | None = None,
    event: str | None = None,
) -> None:
    """Log a validation: ``files`` (artifact path -> text) and ``metrics`` in run ``run_id``
    (the metrics linked to the version's logged model), then ``tags`` on the version, one
    ``validated`` event (``event``: its sentence) and ``summary`` into its description
    (replacing the previous validation's, keeping the rest).

    >>> record_validation(mv, run_id, files={"report.md": text}, metrics={"f1": 0.97},
    ...                   tags={VALIDATION_TAG: "passed"})   # doctest: +SKIP
    """
    import time

    from mlflow.entities import Metric

    model_id = mv.source[len("models:/") :] if mv.source.startswith("models:/m-") else None
    stamp = int(time.time() * 1000)
    with mlflow_errors(f"recording the validation of {mv.ref}"), using_tracking_uri(tracking_uri()):
        c = client()
        for path, text in files.items():
            c.log_text(run_id, text, path)
        batch = [Metric(k, float(v), stamp, 0, model_id=model_id) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's batch limit
            c.log_batch(run_id, metrics=batch[start : start + 1000])
        c.set_terminated(run_id)
        for key, value in tags.items():
            c.set_model_version_tag(mv.name, str(mv.version), key, value[:5000])
        record_event(c, mv, "validated", event or tags.get(VALIDATION_TAG, "recorded"))
        if summary is not None:
            current = c.get_model_version(mv.name, str(mv.version)).description
            c.update_model_version(mv.name, str(mv.version), description=with_summary(current, summary))


def with_summary(description: str | None, text: str) -> str:
    """``description`` with its previous validation summary (after the marker) replaced by ``text``.

    >>> with_summary("Trained on 2025 data.\\n\\n<!-- nbdeploy:validation -->\\nold", "new")
    'Trained on 2025 data.\\n\\n<!-- nbdeploy:validation -->\\nnew'
    """
    kept = (description or "").split(SUMMARY_MARKER, 1)[0].rstrip()
    # MLflow stores at most 5,000 characters: the summary whole (cut only past 900), the user's words in the rest
    block = f"{SUMMARY_MARKER}\n{text}"
    if len(block) > SUMMARY_LIMIT:
        block = block[: SUMMARY_LIMIT - 1] + "\u2026"
    room = DESCRIPTION_LIMIT - len(block) - 2
    if len(kept) > room:
        kept = kept[: room - 1] + "\u2026"
    return f"{kept}\n\n{block}" if kept else block


DESCRIPTION_LIMIT = 5000  # a model version's description in MLflow's SQL stores (String(5000))
SUMMARY_LIMIT = 900  # the part below the marker: verdict, headline, at most 10 gates, the report and card
