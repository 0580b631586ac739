"""Listing registered models and the versions of one model.

>>> models()           # doctest: +SKIP
>>> models("cancer")   # doctest: +SKIP
"""

from __future__ import annotations

from nbdeploy.refs import validate_name
from nbdeploy.registry._store import client, mlflow_errors
from nbdeploy.registry.lookup import registered_model
from nbdeploy.registry.versions import ModelList

__all__ = ["models"]


def models(name: str | None = None) -> ModelList:
    """Registered models (``name=None``) or the versions of one model, newest first.

    >>> models("cancer")   # doctest: +SKIP
    """
    if name is None:
        with mlflow_errors("listing the registered models"):
            return ModelList.of_models(client().search_registered_models(max_results=1000))
    validate_name(name)
    with mlflow_errors(f"listing the versions of {name!r}"):
        c = client()
        aliases = registered_model(c, name).aliases or {}
        versions = c.search_model_versions(f"name='{name}'")
    return ModelList.of_versions(name, versions, aliases)
