"""Validate a registered model version on held-out data, with gates that can fail CI.

>>> import nbdeploy
>>> report = nbdeploy.validate("cancer/2", X_test, y_test,          # doctest: +SKIP
...                            gates=["f1>=0.9", "f1>=baseline-0.01"], slices=["mean radius"])
>>> report.passed, report.metrics["f1"], report.baseline             # doctest: +SKIP
(True, 0.962, 'cancer/1')

The report shows as HTML in a notebook and as a few lines of text in logs; it is recorded
in MLflow (``validation.json``, ``validation.html``, metrics, version tags), and
:func:`nbdeploy.promote` refuses versions whose last validation did not pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from nbdeploy.errors import AliasNotFoundError, Docs, InvalidInputError, ValidationFailedError
from nbdeploy.validation.report import ValidationReport

__all__ = ["AUTO", "ValidationReport", "validate"]

#: ``baseline=AUTO``: the version holding ``@champion``, when there is one and it is not ``ref``.
AUTO = "auto"
ARTIFACT_DIR = "validation"


def _gate_list(gates: str | Iterable[str] | None) -> list[Any]:
    from nbdeploy.validation.gates import parse_gate

    if gates is None:
        return []
    return [parse_gate(g) for g in ([gates] if isinstance(gates, str) else gates)]


def _baseline(mv: Any, baseline: str | None) -> Any:
    """The baseline's version, or ``None`` for no baseline."""
    from nbdeploy import registry

    if baseline is None or baseline.strip().lower() == "none":
        return None
    if baseline == AUTO:
        try:
            champion = registry.resolve(f"{mv.name}@champion")
        except AliasNotFoundError:
            return None
        return None if champion.version == mv.version else champion
    base = registry.resolve(baseline)
    if (base.name, base.version) == (mv.name, mv.version):
        raise InvalidInputError(
            f"The baseline {baseline!r} is {mv.ref}, the version being validated; "
            "name another version or pass --baseline none."
        )
    return base


def _candidate(model: Any, mv: Any) -> Any:
    from nbdeploy import registry
    from nbdeploy.validation.build import Candidate

    # A tensor signature (a model registered with an array) names no columns to select.
    columns = [] if any(kind.startswith("tensor") for _, kind in mv.inputs) else mv.inputs
    return Candidate(model, mv.ref, columns, registry.load_profile(mv), registry.model_size(mv))


def _record(report: ValidationReport, mv: Any) -> None:
    from nbdeploy import registry
    from nbdeploy.reprs import page
    from nbdeploy.validation.summary import summary

    report.run_id = registry.start_validation_run(mv)
    values = {f"validation_{k}": v for k, v in report.metrics.items()}
    for m, (lo, hi) in report.intervals.items():
        values.update({f"validation_{m}_ci_low": lo, f"validation_{m}_ci_high": hi})
    for m, (lo, hi) in report.delta_intervals.items():  # the paired interval of candidate minus baseline
        values.update({f"validation_{m}_delta_ci_low": lo, f"validation_{m}_delta_ci_high": hi})
    failed = report.failed_gates
    values["validation_gates_failed"] = float(len(failed))
    tags = {
        registry.VALIDATION_TAG: report.verdict,
        "nbdeploy.validation.gates": "; ".join(g.gate.text for g in report.gates) or "(none)",
        registry.VALIDATION_FAILED_TAG: "; ".join(g.gate.text for g in failed) or "(none)",
        "nbdeploy.validation.baseline": report.baseline or "none",
        "nbdeploy.validation.run": report.run_id,
        "nbdeploy.validation.report": f"runs:/{report.run_id}/{ARTIFACT_DIR}/validation.html",
        "nbdeploy.validation.time": report.created,
    }
    registry.record_validation(
        mv,
        report.run_id,
        files={
            f"{ARTIFACT_DIR}/validation.json": json.dumps(report.to_dict(), indent=1, allow_nan=False),
            f"{ARTIFACT_DIR}/validation.html": page(f"Validation of {report.model}", report._repr_html_()),
        },
        metrics={k: v for k, v in values.items() if v == v},  # NaN: not measured, not logged
        tags=tags,
        summary=summary(report, tags["nbdeploy.validation.report"], mv.tags.get("nbdeploy.card")),
        event=f"{report.summary()} on {report.rows} rows, baseline {report.baseline or 'none'}; "
        f"report {tags['nbdeploy.validation.report']}",
    )


def validate(
    ref: str,
    X: Any,
    y: Any,
    *,
    gates: str | Iterable[str] | None = None,
    baseline: str | None = AUTO,
    slices: str | Iterable[str] | None = None,
    strict: bool = False,
    resamples: int = 200,
    seed: int = 0,
    latency_calls: int = 50,
    record: bool = True,
    confidence: float | str | None = None,
    explain: bool = True,
    explain_rows: int = 500,
    shap: bool = False,
) -> ValidationReport:
    """Validate the version ``ref`` on ``X``/``y`` and record the report against it.

    ``gates`` are ``METRIC OP VALUE`` strings; ``baseline`` is a model reference, ``None``
    (or ``"none"``) for no baseline, or ``"auto"``: the version holding ``@champion``.
    ``slices`` names columns of ``X`` to break metrics down by. With ``strict``, a failed
    gate (or one left unevaluated) raises :class:`~nbdeploy.errors.ValidationFailedError`
    after the report is recorded. ``resamples`` bootstrap resamples (``seed``) give the
    intervals; ``latency_calls`` single-row predictions give the latency percentiles. With
    ``confidence`` (e.g. 0.95) every gate without a level of its own (``f1>=0.9 @95%``) is
    decided on its one-sided bootstrap bound, a baseline gate on the paired difference's.
    With ``explain`` the report has an Explain section (permutation importance, partial
    dependence) computed on ``explain_rows`` rows; ``shap`` adds TreeSHAP values (the
    ``explain`` extra).

    >>> validate("cancer/2", X_test, y_test, gates=["f1>=baseline-0.01"], strict=True)   # doctest: +SKIP
    """
    from nbdeploy import registry
    from nbdeploy.tasks import detect_task
    from nbdeploy.validation import metrics
    from nbdeploy.validation.build import build_report
    from nbdeploy.validation.gates import check_metrics
    from nbdeploy.validation.scoring import has_proba

    level = _check_options(confidence, resamples, explain, explain_rows, shap)
    parsed = [g.with_confidence(level) for g in _gate_list(gates)]  # malformed gates fail before anything loads
    slice_list = [slices] if isinstance(slices, str) else list(slices or [])
    model, mv = registry.load_model(ref)
    task, proba = detect_task(model), has_proba(model)
    check_metrics(parsed, metrics.available(task, proba), task, metrics.unavailable(task, proba))
    base = _baseline_candidate(mv, baseline, task)
    report = build_report(_candidate(model, mv), X, y, baseline=base, gates=parsed, slices=slice_list, strict=strict,
                          resamples=resamples, seed=seed, latency_calls=latency_calls, explain=explain,
                          explain_rows=explain_rows, shap=shap)  # fmt: skip
    if record:
        _record(report, mv)
    if strict and not report.passed:
        failed = report.failed_gates
        gates_failed = ", ".join(str(g) for g in failed)
        message = f"Validation of {mv.ref} failed {len(failed)} of {len(report.gates)} gates: {gates_failed}."
        raise ValidationFailedError(message, report)
    return report


def _check_options(confidence: float | str | None, resamples: int, explain: bool, explain_rows: Any,
                   shap: bool) -> float | None:  # fmt: skip
    """One sentence for options that cannot work together, before anything loads; the confidence level."""
    from nbdeploy.validation.gates import check_confidence

    level = check_confidence(confidence) if confidence is not None else None
    if level is not None and resamples <= 0:
        raise InvalidInputError(
            "A confidence is decided on the bootstrap: give resamples above 0 (200 by default).", docs=Docs.CONFIDENCE
        )
    if shap and not explain:
        raise InvalidInputError(
            "--shap (shap=True) adds to the Explain section, which --no-explain leaves out.", docs=Docs.EXPLAIN
        )
    if explain and (isinstance(explain_rows, bool) or not isinstance(explain_rows, int) or explain_rows < 10):
        raise InvalidInputError(f"--explain-rows (explain_rows) is {explain_rows!r}; the Explain section needs a "
                                "whole number of rows, at least 10.", docs=Docs.EXPLAIN)  # fmt: skip
    if shap:
        from nbdeploy.validation.shap_values import check_installed

        check_installed()
    return level


def _baseline_candidate(mv: Any, baseline: str | None, task: str) -> Any:
    """The baseline to compare with (``None``: none), loaded; it must do the same task."""
    from nbdeploy import registry
    from nbdeploy.tasks import detect_task

    base_mv = _baseline(mv, baseline)
    if base_mv is None:
        return None
    base_model, _ = registry.load_model(base_mv)
    if detect_task(base_model) != task:
        raise InvalidInputError(
            f"The baseline {base_mv.ref} is a {detect_task(base_model)} model but {mv.ref} is a {task} "
            "model; name a baseline of the same kind or pass --baseline none."
        )
    return _candidate(base_model, base_mv)
