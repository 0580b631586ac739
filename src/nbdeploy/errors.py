"""Exceptions raised by nbdeploy.

Every message is one sentence that says what failed, why, and what to do next; the
magics show it as an ``IPython.core.error.UsageError`` without a traceback.

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

__all__ = [
    "AliasNotFoundError",
    "DeploymentError",
    "DeploymentNotFoundError",
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
]


class NbdeployError(Exception):
    """Base class of every error nbdeploy raises on purpose."""


class InvalidInputError(NbdeployError, ValueError):
    """An argument has a value nbdeploy cannot use."""


class InvalidReferenceError(InvalidInputError):
    """A model reference does not match any accepted form."""


class NotFoundError(NbdeployError, LookupError):
    """A model, version, alias or deployment that was named does not exist."""


class ModelNotFoundError(NotFoundError):
    """No registered model has this name."""


class VersionNotFoundError(NotFoundError):
    """The registered model has no such version."""


class AliasNotFoundError(NotFoundError):
    """The registered model has no such alias."""


class TrackingError(NbdeployError):
    """The MLflow tracking store could not be reached or used."""


class DeploymentError(NbdeployError):
    """A serving process could not be started, reached, updated or stopped."""


class DeploymentNotFoundError(NotFoundError):
    """No deployment has this name."""


class ValidationFailedError(NbdeployError):
    """A validation run with ``strict=True`` failed at least one gate.

    ``report`` is the :class:`~nbdeploy.validation.ValidationReport`, already recorded.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the one sentence.

        ``%deploy validate --strict`` lets this error through (not as a ``UsageError``, which
        IPython only prints), so the cell fails in JupyterLab, nbval and nbclient alike.
        """
        return [f"{type(self).__name__}: {self}"]


class PromotionRefusedError(NbdeployError):
    """``promote`` refused a version whose last validation failed or that was never validated."""


def require(module: str, extra: str, what: str) -> None:
    """The one sentence naming the extra to install when ``what`` needs ``module`` and it is
    not installed (the base install keeps only the notebook workflow's packages)."""
    if importlib.util.find_spec(module) is None:
        raise InvalidInputError(f"{what} needs {module}, which is not installed here: pip install 'nbdeploy[{extra}]'.")
