"""The one door to MLflow's tracking and model registry.

>>> import nbdeploy
>>> mv = nbdeploy.register(model, name="cancer", X=X_train, y=y_train)   # doctest: +SKIP
>>> nbdeploy.promote("cancer/1", alias="champion")                       # doctest: +SKIP

One module per concern; none imports MLflow before a function needs it:

- ``_store``: the tracking URI in force, one client per store, nbdeploy's experiment.
- ``log``: logging a fitted model and registering it as a version (``register``).
- ``lookup``: resolving references; loading a version's model, profile and files.
- ``promotion``: aliases, and the validation records that promotion reads.
- ``listing``: registered models and the versions of one model.
- ``versions``: what the registry returns (``ModelVersion``, ``ModelList``), as text and HTML.
- ``lineage``: where a version came from (git commit, library versions, notebook).
"""

from __future__ import annotations

from nbdeploy.registry._store import client, tracking_uri
from nbdeploy.registry.listing import models
from nbdeploy.registry.log import EXAMPLE_ROWS, MODEL_PATH, PROFILE_PATH, SIGNATURE_ROWS, register
from nbdeploy.registry.lookup import download_model, load_model, load_profile, model_size, resolve, validation_metric
from nbdeploy.registry.promotion import (
    FORCED_TAG,
    REFUSED_TAG,
    VALIDATION_FAILED_TAG,
    VALIDATION_TAG,
    promote,
    record_validation,
    start_validation_run,
)

__all__ = [
    "EXAMPLE_ROWS",
    "FORCED_TAG",
    "MODEL_PATH",
    "PROFILE_PATH",
    "REFUSED_TAG",
    "SIGNATURE_ROWS",
    "VALIDATION_FAILED_TAG",
    "VALIDATION_TAG",
    "client",
    "download_model",
    "load_model",
    "load_profile",
    "model_size",
    "models",
    "promote",
    "record_validation",
    "register",
    "resolve",
    "start_validation_run",
    "tracking_uri",
    "validation_metric",
]
