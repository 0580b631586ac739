"""Exceptions raised by nbdeploy.

Every message is one sentence that says what failed, why, and what to do next; the
magics show it as an ``IPython.core.error.UsageError`` without a traceback.

    NbdeployError
    ├── InvalidInputError        a value the caller passed is unusable (also a ValueError)
    │   └── InvalidReferenceError    a model reference that does not parse
    ├── NotFoundError            something named does not exist (also a LookupError)
    │   ├── ModelNotFoundError
    │   ├── VersionNotFoundError
    │   └── AliasNotFoundError
    └── TrackingError            the MLflow tracking store could not be used
"""

from __future__ import annotations

__all__ = [
    "AliasNotFoundError",
    "DeploymentError",
    "DeploymentNotFoundError",
    "InvalidInputError",
    "InvalidReferenceError",
    "ModelNotFoundError",
    "NbdeployError",
    "NotFoundError",
    "TrackingError",
    "VersionNotFoundError",
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
