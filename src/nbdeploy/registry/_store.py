"""The tracking store in force and one ``MlflowClient`` per store.

>>> client().search_registered_models(max_results=5)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nbdeploy import config

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["client", "experiment_id", "tracking_uri", "using_tracking_uri"]

_clients: dict[str, MlflowClient] = {}


def tracking_uri() -> str:
    """The tracking URI in force, honouring a URI set with ``mlflow.set_tracking_uri``.

    >>> tracking_uri()   # doctest: +SKIP
    'sqlite:////home/ada/project/mlflow.db'
    """
    from mlflow.tracking import get_tracking_uri, is_tracking_uri_set

    if config.explicit_tracking_uri() is None and is_tracking_uri_set():
        return get_tracking_uri()
    return config.tracking_uri()


def client() -> MlflowClient:
    """An ``MlflowClient`` for the tracking store in force (one per URI).

    >>> client().get_registered_model("cancer")   # doctest: +SKIP
    """
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri not in _clients:
        _clients[uri] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _clients[uri]


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``log_model``) at ``uri`` and restore it afterwards.

    MLflow's own ``_use_tracking_uri`` restores by calling ``set_tracking_uri(None)``, which
    deletes ``MLFLOW_TRACKING_URI`` from the environment; this restores both as they were.

    >>> with using_tracking_uri(tracking_uri()):   # doctest: +SKIP
    ...     mlflow.sklearn.load_model("models:/cancer/1")
    """
    import os

    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved_global, saved_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = saved_global
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def experiment_id(c: MlflowClient) -> str:
    """The id of nbdeploy's experiment, created (artifacts beside a SQLite store) if missing.

    >>> experiment_id(client())   # doctest: +SKIP
    '1'
    """
    from mlflow.exceptions import MlflowException

    name = config.experiment_name()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(c.create_experiment(name, artifact_location=config.artifact_root(tracking_uri())))
    except MlflowException:  # created concurrently by another kernel
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)
