"""Exceptions raised by nbdeploy.

Every message is one sentence that says what failed, why, and what to do next; the
magics show it as an ``IPython.core.error.UsageError`` without a traceback. An error whose
fix the docs explain carries that section (``docs``, one of :class:`Docs`): the faces add
``See docs/FILE.md#section`` to the sentence, and Python 3.11's traceback shows it as a note.

    NbdeployError
    ├── InvalidInputError        a value the caller passed is unusable (also a ValueError)
    │   ├── InvalidReferenceError    a model reference that does not parse
    │   └── RuleError                an alert rule that does not parse
    │                                (nbdeploy.monitoring.alerts.RuleError)
    ├── NotFoundError            something named does not exist (also a LookupError)
    │   ├── ModelNotFoundError
    │   ├── VersionNotFoundError
    │   ├── AliasNotFoundError
    │   └── DeploymentNotFoundError
    ├── DeploymentError          a server could not be started, reached, updated or stopped
    ├── TrackingError            the MLflow tracking store could not be used
    ├── ValidationFailedError    a strict validation failed a gate (``.report`` holds it;
    │                            the magic raises it as is, so that the cell fails)
    └── PromotionRefusedError    promote refused a version not validated, or failed
"""

from __future__ import annotations

import importlib.util
import re
import sys

__all__ = [
    "AliasNotFoundError",
    "DeploymentError",
    "DeploymentNotFoundError",
    "Docs",
    "InvalidInputError",
    "InvalidReferenceError",
    "ModelNotFoundError",
    "NbdeployError",
    "NotFoundError",
    "PromotionRefusedError",
    "TrackingError",
    "ValidationFailedError",
    "VersionNotFoundError",
    "require",
    "with_docs",
    "without_docs",
]


class Docs:
    """The sections of nbdeploy's docs that say how to fix an error (paths from the
    repository's root; a test checks that each file and heading exists)."""

    EXTRAS = "docs/index.md#extras"
    TRACKING = "docs/index.md#settings"
    REFERENCES = "docs/references.md#model-references"
    WHICH_MODELS = "docs/register.md#which-models"
    DATA = "docs/validate.md#--data-x---target-y-required"
    GATES = "docs/validate.md#--gate-expr-repeatable"
    CONFIDENCE = "docs/validate.md#--confidence-level"
    METRICS = "docs/validate.md#metrics"
    EXPLAIN = "docs/validate.md#--no-explain---explain-rows-n---shap"
    PROMOTE = "docs/promote.md#gated-promotion"
    STATES = "docs/deployments.md#states"
    WINDOWS = "docs/monitor.md#windows"
    ALERTS = "docs/monitor.md#alerts"
    EXPERIMENT_RULES = "docs/experiments.md#promotion-and-rollback-by-rules"
    ROUTING = "docs/experiments.md#how-a-request-finds-its-variant"
    RETRAIN = "docs/continuous-training.md#deploy-retrain-retrain-on-drift-on-a-schedule-or-by-hand"
    RETRAIN_NOTEBOOK = "docs/continuous-training.md#what-the-notebook-gets-and-what-it-must-do"
    RETRAIN_PROCESS = "docs/continuous-training.md#the-jobs-process"
    LOADTEST = "docs/capacity.md#deploy-loadtest-name"
    LOADTEST_GATES = "docs/capacity.md#gates-and---strict"
    SIZING = "docs/capacity.md#sizing-deploy-recommend-name---rps-n---p99-ms-ms"
    COST = "docs/capacity.md#what-serving-costs-while-it-serves"
    PACKAGE = "docs/capacity.md#deploy-package-nameref---to-dockerk8skuberay-dir"
    THREAT_MODEL = "docs/security.md#the-threat-model"
    HTTPS = "docs/security.md#https"
    TOKENS = "docs/security.md#roles-and-tokens"
    PRIVATE_LOGS = "docs/security.md#private-request-logs"
    ERASING = "docs/security.md#erasing-a-persons-records"
    RAY = "docs/scale-out.md#starting-a-cluster"


class NbdeployError(Exception):
    """Base class of every error nbdeploy raises on purpose.

    ``docs`` names the section that explains the fix (a :class:`Docs` value), or is None;
    a subclass may set a default for all its errors.
    """

    docs: str | None = None

    def __init__(self, *args: object, docs: str | None = None) -> None:
        super().__init__(*args)
        if docs is not None:
            self.docs = docs
        if self.docs and sys.version_info >= (3, 11):  # shown under a Python traceback
            self.add_note(f"See {self.docs}")


def with_docs(exc: BaseException) -> str:
    """The error's sentence, with the docs section that explains its fix when it has one:
    what ``%deploy`` and the CLI show (on a line of its own after a message of several lines,
    such as one that ends with a log's last lines)."""
    docs, text = getattr(exc, "docs", None), str(exc)
    if not docs:
        return text
    return text + ("\n" if "\n" in text else " ") + f"See {docs}"


def without_docs(text: str) -> str:
    """``text`` without the link :func:`with_docs` ended it with, in either of its forms: a
    sentence kept elsewhere (the CLI's last line, in a version tag and a webhook)."""
    return re.sub(r"[ \n]See docs/\S+\s*$", "", text)


class InvalidInputError(NbdeployError, ValueError):
    """An argument has a value nbdeploy cannot use."""


class InvalidReferenceError(InvalidInputError):
    """A model reference does not match any accepted form."""

    docs = Docs.REFERENCES


class NotFoundError(NbdeployError, LookupError):
    """A model, version, alias or deployment that was named does not exist."""


class ModelNotFoundError(NotFoundError):
    """No registered model has this name."""

    docs = Docs.REFERENCES


class VersionNotFoundError(NotFoundError):
    """The registered model has no such version."""

    docs = Docs.REFERENCES


class AliasNotFoundError(NotFoundError):
    """The registered model has no such alias."""

    docs = Docs.REFERENCES


class TrackingError(NbdeployError):
    """The MLflow tracking store could not be reached or used."""

    docs = Docs.TRACKING


class DeploymentError(NbdeployError):
    """A serving process could not be started, reached, updated or stopped."""


class DeploymentNotFoundError(NotFoundError):
    """No deployment has this name."""


class ValidationFailedError(NbdeployError):
    """A validation run with ``strict=True`` failed at least one gate.

    ``report`` is the :class:`~nbdeploy.validation.ValidationReport`, already recorded.
    """

    def __init__(self, message: str, report: object = None, *, docs: str | None = None) -> None:
        super().__init__(message, docs=docs)
        self.report = report

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the one sentence.

        ``%deploy validate --strict`` lets this error through (not as a ``UsageError``, which
        IPython only prints), so the cell fails in JupyterLab, nbval and nbclient alike.
        """
        return [f"{type(self).__name__}: {self}"]


class PromotionRefusedError(NbdeployError):
    """``promote`` refused a version whose last validation failed or that was never validated."""

    docs = Docs.PROMOTE


def require(module: str, extra: str, what: str) -> None:
    """The one sentence naming the extra to install when ``what`` needs ``module`` and it is
    not installed (the base install keeps only the notebook workflow's packages)."""
    if importlib.util.find_spec(module) is None:
        raise InvalidInputError(
            f"{what} needs {module}, which is not installed here: pip install 'nbdeploy[{extra}]'.", docs=Docs.EXTRAS
        )
