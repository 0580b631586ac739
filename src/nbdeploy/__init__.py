"""nbdeploy: register, validate, serve and monitor models from a Jupyter notebook.

The plain-Python API is the core; ``%load_ext nbdeploy`` adds the ``%deploy`` magic over it.

>>> import nbdeploy
>>> mv = nbdeploy.register(model, name="cancer", X=X_train, y=y_train)   # doctest: +SKIP
>>> nbdeploy.promote("cancer/1", alias="champion")                       # doctest: +SKIP

Importing this package (and loading the extension) imports neither MLflow, pandas nor
scikit-learn: the public names below are loaded on first use.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from nbdeploy._version import __version__
from nbdeploy.errors import (
    AliasNotFoundError,
    DeploymentError,
    DeploymentNotFoundError,
    InvalidInputError,
    InvalidReferenceError,
    ModelNotFoundError,
    NbdeployError,
    NotFoundError,
    PromotionRefusedError,
    TrackingError,
    ValidationFailedError,
    VersionNotFoundError,
)

if TYPE_CHECKING:
    from nbdeploy.cards import ModelCard, card
    from nbdeploy.config import configure
    from nbdeploy.deployments import Deployment, DeploymentList, deployments, get, serve
    from nbdeploy.deployments.batch import batch
    from nbdeploy.refs import ModelRef, parse_ref
    from nbdeploy.registry import models, promote, register, resolve
    from nbdeploy.registry.versions import ModelList, ModelVersion
    from nbdeploy.retraining import RetrainJob, retrain
    from nbdeploy.spec import DeploymentSpec
    from nbdeploy.validation import ValidationReport, validate

__all__ = [
    "AliasNotFoundError",
    "Deployment",
    "DeploymentError",
    "DeploymentList",
    "DeploymentNotFoundError",
    "DeploymentSpec",
    "InvalidInputError",
    "InvalidReferenceError",
    "ModelCard",
    "ModelList",
    "ModelNotFoundError",
    "ModelRef",
    "ModelVersion",
    "NbdeployError",
    "NotFoundError",
    "PromotionRefusedError",
    "RetrainJob",
    "TrackingError",
    "ValidationFailedError",
    "ValidationReport",
    "VersionNotFoundError",
    "__version__",
    "batch",
    "card",
    "configure",
    "deployments",
    "get",
    "load_ipython_extension",
    "models",
    "parse_ref",
    "promote",
    "register",
    "resolve",
    "retrain",
    "serve",
    "unload_ipython_extension",
    "validate",
]

_LAZY = {
    "card": "nbdeploy.cards",
    "ModelCard": "nbdeploy.cards",
    "configure": "nbdeploy.config",
    "ModelRef": "nbdeploy.refs",
    "parse_ref": "nbdeploy.refs",
    "register": "nbdeploy.registry",
    "promote": "nbdeploy.registry",
    "models": "nbdeploy.registry",
    "resolve": "nbdeploy.registry",
    "ModelList": "nbdeploy.registry.versions",
    "ModelVersion": "nbdeploy.registry.versions",
    "validate": "nbdeploy.validation",
    "ValidationReport": "nbdeploy.validation",
    "serve": "nbdeploy.deployments",
    "batch": "nbdeploy.deployments.batch",
    "deployments": "nbdeploy.deployments",
    "get": "nbdeploy.deployments",
    "Deployment": "nbdeploy.deployments",
    "DeploymentList": "nbdeploy.deployments",
    "DeploymentSpec": "nbdeploy.spec",
    "retrain": "nbdeploy.retraining",
    "RetrainJob": "nbdeploy.retraining",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbdeploy' has no attribute {name!r}")
    if name == "deployments":  # the package itself, callable: see nbdeploy.deployments._Package
        return importlib.import_module(module)
    value = getattr(importlib.import_module(module), name)
    if inspect.isfunction(value):  # the libraries it drives log under the cell only if asked
        from nbdeploy._quiet import quieted

        value = quieted(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext nbdeploy``: registers the ``%deploy`` magic."""
    from nbdeploy.magics import DeployMagics

    ipython.register_magics(DeployMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext nbdeploy``."""
    ipython.magics_manager.registry.pop("DeployMagics", None)
    ipython.magics_manager.magics["line"].pop("deploy", None)
