"""Logging a fitted model to MLflow and registering it as a new version.

>>> mv = register(model, name="cancer", X=X_train, y=y_train)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from nbdeploy.errors import InvalidInputError
from nbdeploy.refs import validate_alias, validate_name
from nbdeploy.registry._store import client, experiment_id, mlflow_errors, set_alias, tracking_uri, using_tracking_uri
from nbdeploy.registry.versions import ModelVersion

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["EXAMPLE_ROWS", "MODEL_PATH", "PROFILE_PATH", "SIGNATURE_ROWS", "register"]

PROFILE_PATH = "nbdeploy/profile.json"
MODEL_PATH = "model"
EXAMPLE_ROWS = 5
SIGNATURE_ROWS = 200
# Pinned from the kernel so MLflow does not spend seconds inferring them in a subprocess.
_REQUIREMENTS = ("scikit-learn", "numpy", "scipy", "pandas", "cloudpickle")


def _model_distributions(model: Any) -> list[str]:
    """The installed distributions the model's own classes come from, beyond scikit-learn:
    an XGBoost or LightGBM estimator, alone or as a pipeline's step, must be importable
    wherever the version is served (``xgboost-cpu`` provides ``xgboost`` and is pinned as such)."""
    parts = [model]
    params = getattr(model, "get_params", None)
    if callable(params):
        with contextlib.suppress(Exception):  # an estimator whose get_params fails still logs
            parts += list(params(deep=True).values())
    roots = {type(p).__module__.split(".")[0] for p in parts} - {"builtins", "sklearn", "numpy", "pandas", "nbdeploy"}
    owners = metadata.packages_distributions()
    return sorted({dist for root in roots for dist in owners.get(root, [])})


def _requirements(model: Any = None) -> list[str]:
    pins = []
    for dist in (*_REQUIREMENTS, *_model_distributions(model)):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{dist}=={metadata.version(dist)}")
    return pins


def _check_data(X: Any, y: Any) -> tuple[Any, Any]:
    from nbdeploy.stats.profile import as_frame

    if X is None:
        if y is not None:
            raise InvalidInputError("A target was given without data: pass the data too.")
        return None, None
    try:
        frame = as_frame(X)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"The data is a {type(X).__name__}, which cannot be read as a table ({exc}).") from None
    if y is not None and len(y) != len(frame):
        raise InvalidInputError(
            f"The data has {len(frame)} rows but the target has {len(y)}; they must have the same number of rows."
        )
    return X, y


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidInputError(f"Invalid tag key {key!r}: keys must be non-empty strings.")
        out[key] = str(value)
    return out


@dataclass
class _Facts:
    """What the data tells about a model: signature, input example, profile, training metrics."""

    signature: Any = None
    example: Any = None
    profile: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _describe(model: Any, X: Any, y: Any) -> _Facts:
    from mlflow.models import infer_signature

    from nbdeploy.stats.profile import compute_profile
    from nbdeploy.tasks import detect_task, training_metrics

    if X is None:
        return _Facts()
    head = X.iloc[:SIGNATURE_ROWS] if hasattr(X, "iloc") else X[:SIGNATURE_ROWS]
    try:
        with warnings.catch_warnings():
            # MLflow's hint about integer columns fires for every integer prediction
            # (class labels), which can never be missing.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            signature = infer_signature(head, model.predict(head))
    except Exception as exc:
        raise InvalidInputError(f"The model cannot predict on the data ({type(exc).__name__}: {exc}).") from None
    return _Facts(
        signature=signature,
        example=X.iloc[:EXAMPLE_ROWS] if hasattr(X, "iloc") else X[:EXAMPLE_ROWS],
        profile=compute_profile(X),
        metrics=training_metrics(detect_task(model), y, model.predict(X)) if y is not None else {},
    )


def register(
    model: Any,
    name: str,
    X: Any = None,
    y: Any = None,
    *,
    alias: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    source: str | None = None,
    intended_use: str | None = None,
) -> ModelVersion:
    """Log a fitted scikit-learn ``model`` to MLflow and register it as a new version of ``name``.

    With ``X`` the version gets a signature, an input example and a training-data profile;
    with ``y`` too, training metrics. ``source`` is the notebook path, recorded as lineage;
    ``intended_use`` is what the model card says the model is for (tag ``nbdeploy.intended_use``).

    >>> register(model, name="cancer", X=X_train, y=y_train, alias="candidate")  # doctest: +SKIP
    """
    from nbdeploy.registry.lineage import lineage_tags, retrain_tags
    from nbdeploy.tasks import check_fitted, detect_task

    validate_name(name)
    if alias is not None:
        validate_alias(alias)
    check_fitted(model)
    X, y = _check_data(X, y)
    user_tags = _check_tags(tags)
    facts = _describe(model, X, y)
    version_tags = {
        **lineage_tags(source=source, data_fingerprint=facts.profile["fingerprint"] if facts.profile else None),
        "nbdeploy.task": detect_task(model),
        **({"nbdeploy.intended_use": intended_use[:5000]} if intended_use else {}),
        **retrain_tags(),  # inside a retraining job's notebook: the job's run, which finds the version by it
        **user_tags,
    }
    uri = tracking_uri()
    with mlflow_errors(f"registering {name!r}"), using_tracking_uri(uri):
        c = client()
        run_id, info = _log_run(c, name, model, facts, version_tags)
        _ensure_registered_model(c, name)
        mv = c.create_model_version(
            name, info.model_uri, run_id=run_id, tags=version_tags, description=description, model_id=info.model_id
        )
        if alias:
            set_alias(c, name, alias, str(mv.version))
        mv = c.get_model_version(name, mv.version)
    return ModelVersion.from_mlflow(
        mv,
        tracking_uri=uri,
        signature=facts.signature.to_dict() if facts.signature is not None else None,
        metrics={f"training_{k}": v for k, v in facts.metrics.items()},
    )


def _log_run(c: MlflowClient, name: str, model: Any, facts: _Facts, version_tags: dict[str, str]) -> tuple[str, Any]:
    """Log the model, its profile and metrics in a new run; adds the profile's tag to ``version_tags``."""
    import mlflow
    import mlflow.sklearn

    run_id = c.create_run(experiment_id(c), run_name=f"register-{name}", tags=version_tags).info.run_id
    with mlflow.start_run(run_id=run_id), _quiet("mlflow.sklearn", "mlflow.models"):
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_PATH,
            signature=facts.signature,
            input_example=facts.example,
            pip_requirements=_requirements(model),
            # cloudpickle round-trips every estimator (skops refuses tree ensembles
            # unless each type is trusted); the file is read by the same team's servers.
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
        if facts.profile is not None:
            mlflow.log_dict(facts.profile, PROFILE_PATH)
            version_tags["nbdeploy.profile"] = f"runs:/{run_id}/{PROFILE_PATH}"
        if facts.metrics:
            mlflow.log_metrics({f"training_{k}": v for k, v in facts.metrics.items()})
    return str(run_id), info


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence MLflow's per-call warnings (the pickle notice is answered in the docs)."""
    saved = [(log, log.level) for log in map(logging.getLogger, loggers)]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def _ensure_registered_model(c: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
