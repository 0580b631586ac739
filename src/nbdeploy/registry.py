"""The one door to MLflow's tracking and model registry.

>>> import nbdeploy
>>> mv = nbdeploy.register(model, name="cancer", X=X_train, y=y_train)   # doctest: +SKIP
>>> nbdeploy.promote("cancer/1", alias="champion")                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config
from nbdeploy.config import display_uri
from nbdeploy.errors import (
    AliasNotFoundError,
    InvalidInputError,
    ModelNotFoundError,
    PromotionRefusedError,
    TrackingError,
    VersionNotFoundError,
)
from nbdeploy.refs import ModelRef, parse_ref, validate_alias, validate_name
from nbdeploy.versions import ModelList, ModelVersion

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "client",
    "load_model",
    "load_profile",
    "model_size",
    "models",
    "promote",
    "record_validation",
    "register",
    "resolve",
    "start_validation_run",
]

PROFILE_PATH = "nbdeploy/profile.json"
MODEL_PATH = "model"
EXAMPLE_ROWS = 5
SIGNATURE_ROWS = 200
# Pinned from the kernel so MLflow does not spend seconds inferring them in a subprocess.
_REQUIREMENTS = ("scikit-learn", "numpy", "scipy", "pandas", "cloudpickle")
_clients: dict[str, MlflowClient] = {}
# Version tags written by validation and read by promote.
VALIDATION_TAG = "nbdeploy.validation"
VALIDATION_FAILED_TAG = "nbdeploy.validation.failed"
REFUSED_TAG = "nbdeploy.promotion.refused"
FORCED_TAG = "nbdeploy.promotion.forced"


def tracking_uri() -> str:
    """The tracking URI in force, honouring a URI set with ``mlflow.set_tracking_uri``."""
    from mlflow.tracking import get_tracking_uri, is_tracking_uri_set

    if config.explicit_tracking_uri() is None and is_tracking_uri_set():
        return get_tracking_uri()
    return config.tracking_uri()


def client() -> MlflowClient:
    """An ``MlflowClient`` for the tracking store in force (one per URI)."""
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri not in _clients:
        _clients[uri] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _clients[uri]


@contextlib.contextmanager
def _using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``log_model``) at ``uri`` and restore it afterwards.

    MLflow's own ``_use_tracking_uri`` restores by calling ``set_tracking_uri(None)``, which
    deletes ``MLFLOW_TRACKING_URI`` from the environment; this restores both as they were.
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


def _experiment_id(c: MlflowClient) -> str:
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


def _requirements() -> list[str]:
    pins = []
    for dist in _REQUIREMENTS:
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
) -> ModelVersion:
    """Log a fitted scikit-learn ``model`` to MLflow and register it as a new version of ``name``.

    With ``X`` the version gets a signature, an input example and a training-data profile;
    with ``y`` too, training metrics. ``source`` is the notebook path, recorded as lineage.

    >>> register(model, name="cancer", X=X_train, y=y_train, alias="candidate")  # doctest: +SKIP
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from nbdeploy.lineage import lineage_tags
    from nbdeploy.stats.profile import compute_profile
    from nbdeploy.tasks import check_fitted, detect_task, training_metrics

    validate_name(name)
    if alias is not None:
        validate_alias(alias)
    check_fitted(model)
    X, y = _check_data(X, y)
    user_tags = _check_tags(tags)

    signature = example = profile = None
    metrics: dict[str, float] = {}
    if X is not None:
        head = X.iloc[:SIGNATURE_ROWS] if hasattr(X, "iloc") else X[:SIGNATURE_ROWS]
        try:
            with warnings.catch_warnings():
                # MLflow's hint about integer columns fires for every integer prediction
                # (class labels), which can never be missing.
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
                signature = infer_signature(head, model.predict(head))
        except Exception as exc:
            raise InvalidInputError(f"The model cannot predict on the data ({type(exc).__name__}: {exc}).") from None
        example = X.iloc[:EXAMPLE_ROWS] if hasattr(X, "iloc") else X[:EXAMPLE_ROWS]
        profile = compute_profile(X)
        if y is not None:
            metrics = training_metrics(detect_task(model), y, model.predict(X))

    c = client()
    uri = tracking_uri()
    version_tags = {
        **lineage_tags(source=source, data_fingerprint=profile["fingerprint"] if profile else None),
        "nbdeploy.task": detect_task(model),
        **user_tags,
    }
    with _using_tracking_uri(uri):
        run = c.create_run(_experiment_id(c), run_name=f"register-{name}", tags=version_tags)
        run_id = run.info.run_id
        with mlflow.start_run(run_id=run_id), _quiet("mlflow.sklearn", "mlflow.models"):
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_PATH,
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
                # cloudpickle round-trips every estimator (skops refuses tree ensembles
                # unless each type is trusted); the file is read by the same team's servers.
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
            if profile is not None:
                mlflow.log_dict(profile, PROFILE_PATH)
                version_tags["nbdeploy.profile"] = f"runs:/{run_id}/{PROFILE_PATH}"
            if metrics:
                mlflow.log_metrics({f"training_{k}": v for k, v in metrics.items()})
        _ensure_registered_model(c, name)
        mv = c.create_model_version(
            name,
            info.model_uri,
            run_id=run_id,
            tags=version_tags,
            description=description,
            model_id=info.model_id,
        )
        if alias:
            c.set_registered_model_alias(name, alias, mv.version)
    return ModelVersion.from_mlflow(
        c.get_model_version(name, mv.version),
        tracking_uri=uri,
        signature=signature.to_dict() if signature is not None else None,
        metrics={f"training_{k}": v for k, v in metrics.items()},
    )


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


def _existing_models(c: MlflowClient) -> str:
    names = sorted(m.name for m in c.search_registered_models(max_results=1000))
    return "registered models: " + ", ".join(names) if names else "no model is registered yet"


def _registered_model(c: MlflowClient, name: str) -> Any:
    """The registered model ``name``, or an error naming the models that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            first = str(exc.message).strip().splitlines()[0][:300] if exc.message else type(exc).__name__
            raise TrackingError(f"The tracking store {display_uri(tracking_uri())} failed: {first}") from None
        raise ModelNotFoundError(f"No registered model is named {name!r}; {_existing_models(c)}.") from None


def resolve(ref: str | ModelRef) -> ModelVersion:
    """The registered version a reference points to, with a precise error when it does not exist.

    >>> resolve("cancer@champion").version   # doctest: +SKIP
    3
    """

    r = parse_ref(ref) if isinstance(ref, str) else ref
    if r.name is None:
        raise InvalidInputError(f"{r} is a run artifact, not a registered model version: register it first.")
    c = client()
    rm = _registered_model(c, r.name)
    if r.alias is not None:
        aliases = dict(rm.aliases or {})
        if r.alias not in aliases:
            known = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items()))
            raise AliasNotFoundError(
                f"Model {r.name!r} has no alias {r.alias!r}; "
                + (f"its aliases are {known}." if known else "it has no aliases yet.")
            )
        number = int(aliases[r.alias])
    else:
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{r.name}'"))
        if not versions:
            raise VersionNotFoundError(f"Model {r.name!r} has no versions yet.")
        number = versions[-1] if r.version is None else r.version
        if number not in versions:
            raise VersionNotFoundError(
                f"Model {r.name!r} has no version {number}; its versions are {', '.join(map(str, versions))}."
            )
    return _version(c, r.name, number)


def _version(c: MlflowClient, name: str, number: int) -> ModelVersion:
    """A version with its signature (from the MLmodel file) and its run's metrics."""
    from mlflow.models import get_model_info

    mv = c.get_model_version(name, str(number))
    uri = tracking_uri()
    with _using_tracking_uri(uri):
        signature = get_model_info(mv.source or f"models:/{name}/{number}").signature
    metrics = c.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return ModelVersion.from_mlflow(
        mv,
        tracking_uri=uri,
        signature=signature.to_dict() if signature is not None else None,
        metrics=metrics,
    )


def promote(ref: str | ModelRef, alias: str = "champion", *, force: bool = False) -> ModelVersion:
    """Point ``alias`` of the model at the version ``ref`` resolves to.

    Only a version whose last validation passed is promoted; ``force=True`` promotes any
    version. A refusal and a forced promotion are recorded as version tags
    (``nbdeploy.promotion.refused``, ``nbdeploy.promotion.forced``).

    >>> promote("cancer/2", alias="champion").aliases   # doctest: +SKIP
    ['champion']
    """
    from datetime import datetime, timezone

    validate_alias(alias)
    mv = resolve(ref)
    c = client()
    status = mv.tags.get(VALIDATION_TAG)
    if status != "passed":
        if status is None:
            reason = "it was never validated"
            advice = f"run %deploy validate {mv.ref} --data X --target Y first"
        else:
            failed = mv.tags.get(VALIDATION_FAILED_TAG) or "its gates"
            reason, advice = f"its last validation failed on {failed}", "validate it again once it passes"
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = f"{stamp}: @{alias}: {reason}"
        if not force:
            c.set_model_version_tag(mv.name, str(mv.version), REFUSED_TAG, record)
            raise PromotionRefusedError(
                f"Refusing to promote {mv.ref} to @{alias}: {reason}; {advice} "
                "(nbdeploy.validate in Python), or pass --force (force=True) to promote it anyway."
            )
        c.set_model_version_tag(mv.name, str(mv.version), FORCED_TAG, record)
    c.set_registered_model_alias(mv.name, alias, str(mv.version))
    return _version(c, mv.name, mv.version)


def load_model(ref: str | ModelRef | ModelVersion) -> tuple[Any, ModelVersion]:
    """The fitted scikit-learn model of a registered version, with the version.

    >>> model, mv = load_model("cancer@champion")   # doctest: +SKIP
    """
    import mlflow.sklearn

    mv = ref if isinstance(ref, ModelVersion) else resolve(ref)
    # A temporary folder, so that large models are not left behind in /tmp.
    with _using_tracking_uri(tracking_uri()), tempfile.TemporaryDirectory() as tmp:
        model = mlflow.sklearn.load_model(mv.uri, dst_path=tmp)
    return model, mv


def model_size(mv: ModelVersion) -> int | None:
    """Bytes of a version's serialized model file (``model.pkl``), or ``None`` if it has none."""
    import mlflow.artifacts

    with _using_tracking_uri(tracking_uri()):
        files = mlflow.artifacts.list_artifacts(artifact_uri=mv.uri)
    sizes = [f.file_size for f in files if f.path.rsplit("/", 1)[-1] in ("model.pkl", "model.skops")]
    return int(sizes[0]) if sizes and sizes[0] is not None else None


def start_validation_run(mv: ModelVersion) -> str:
    """Create the run that will hold one validation of ``mv``; returns its id."""
    from mlflow.entities import LoggedModelInput

    c = client()
    with _using_tracking_uri(tracking_uri()):
        run = c.create_run(
            _experiment_id(c),
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
) -> None:
    """Log a validation: ``files`` (artifact path -> text) and ``metrics`` in run ``run_id``
    (the metrics linked to the version's logged model), then ``tags`` on the version."""
    import time

    from mlflow.entities import Metric

    c = client()
    model_id = mv.source[len("models:/") :] if mv.source.startswith("models:/m-") else None
    stamp = int(time.time() * 1000)
    with _using_tracking_uri(tracking_uri()):
        for path, text in files.items():
            c.log_text(run_id, text, path)
        batch = [Metric(k, float(v), stamp, 0, model_id=model_id) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's batch limit
            c.log_batch(run_id, metrics=batch[start : start + 1000])
        c.set_terminated(run_id)
        for key, value in tags.items():
            c.set_model_version_tag(mv.name, str(mv.version), key, value[:5000])


def models(name: str | None = None) -> ModelList:
    """Registered models (``name=None``) or the versions of one model, newest first.

    >>> models("cancer")   # doctest: +SKIP
    """
    c = client()
    if name is None:
        return ModelList.of_models(c.search_registered_models(max_results=1000))
    validate_name(name)
    aliases = _registered_model(c, name).aliases or {}
    versions = c.search_model_versions(f"name='{name}'")
    return ModelList.of_versions(name, versions, aliases)


def load_profile(mv: ModelVersion) -> dict[str, Any] | None:
    """The training-data profile registered with a version, or ``None`` if it has none."""
    import json

    if not mv.run_id or "nbdeploy.profile" not in mv.tags:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client().download_artifacts(mv.run_id, PROFILE_PATH, tmp)
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data


def download_model(uri: str, dst: str | Path) -> Path:
    """Copy the MLflow model at ``uri`` (``models:/…``, ``runs:/…``) into the folder ``dst``.

    Serving processes load from this local copy, so they need neither MLflow nor the
    tracking store to start.
    """
    import mlflow.artifacts

    target = Path(dst)
    target.mkdir(parents=True, exist_ok=True)
    with _using_tracking_uri(tracking_uri()):
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
    return Path(local)
