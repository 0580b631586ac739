"""Finding registered versions and reading what they hold (model, profile, files).

>>> mv = resolve("cancer@champion")          # doctest: +SKIP
>>> model, mv = load_model("cancer/3")       # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy.errors import AliasNotFoundError, Docs, InvalidInputError, ModelNotFoundError, VersionNotFoundError
from nbdeploy.refs import ModelRef, parse_ref
from nbdeploy.registry._store import client, mlflow_errors, tracking_uri, using_tracking_uri
from nbdeploy.registry.log import PROFILE_PATH
from nbdeploy.registry.versions import ModelVersion

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "download_model",
    "fetch_version",
    "load_model",
    "load_profile",
    "model_size",
    "registered_model",
    "resolve",
    "validation_metric",
]


def _existing_models(c: MlflowClient) -> str:
    names = sorted(m.name for m in c.search_registered_models(max_results=1000))
    return "registered models: " + ", ".join(names) if names else "no model is registered yet"


def registered_model(c: MlflowClient, name: str) -> Any:
    """The registered model ``name``, or an error naming the models that exist.

    >>> registered_model(client(), "cancer").aliases   # doctest: +SKIP
    {'champion': '3'}
    """
    from mlflow.exceptions import MlflowException

    with mlflow_errors(f"reading the model {name!r}"):
        try:
            return c.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # mlflow_errors says what failed and what to do
            raise ModelNotFoundError(f"No registered model is named {name!r}; {_existing_models(c)}.") from None


def resolve(ref: str | ModelRef) -> ModelVersion:
    """The registered version a reference points to, with a precise error when it does not exist.

    >>> resolve("cancer@champion").version   # doctest: +SKIP
    3
    """
    r = parse_ref(ref) if isinstance(ref, str) else ref
    if r.name is None:
        raise InvalidInputError(
            f"{r} is a run artifact, not a registered model version: register it first.", docs=Docs.REFERENCES
        )
    with mlflow_errors(f"resolving {r}"):
        c = client()
        return fetch_version(c, r.name, _number(c, r.name, r))


def _number(c: MlflowClient, name: str, r: ModelRef) -> int:
    """The version number that ``r`` (a reference to the model ``name``) points to."""
    rm = registered_model(c, name)
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
    return number


def fetch_version(c: MlflowClient, name: str, number: int) -> ModelVersion:
    """A version with its signature (from the MLmodel file) and its run's metrics.

    >>> fetch_version(client(), "cancer", 3).metrics   # doctest: +SKIP
    {'training_f1': 0.99}
    """
    from mlflow.models import get_model_info

    uri = tracking_uri()
    with mlflow_errors(f"reading {name}/{number}"):
        mv = c.get_model_version(name, str(number))
        with using_tracking_uri(uri):
            signature = get_model_info(mv.source or f"models:/{name}/{number}").signature
        metrics = c.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return ModelVersion.from_mlflow(
        mv,
        tracking_uri=uri,
        signature=signature.to_dict() if signature is not None else None,
        metrics=metrics,
    )


def load_model(ref: str | ModelRef | ModelVersion) -> tuple[Any, ModelVersion]:
    """The fitted scikit-learn model of a registered version, with the version.

    >>> model, mv = load_model("cancer@champion")   # doctest: +SKIP
    """
    import mlflow.sklearn

    mv = ref if isinstance(ref, ModelVersion) else resolve(ref)
    # A temporary folder, so that large models are not left behind in /tmp.
    with mlflow_errors(f"loading {mv.ref}"), using_tracking_uri(tracking_uri()), tempfile.TemporaryDirectory() as tmp:
        model = mlflow.sklearn.load_model(mv.uri, dst_path=tmp)
    return model, mv


def model_size(mv: ModelVersion) -> int | None:
    """Bytes of a version's serialized model file (``model.pkl``), or ``None`` if it has none.

    >>> model_size(resolve("cancer/1"))   # doctest: +SKIP
    81234
    """
    import mlflow.artifacts

    with mlflow_errors(f"listing the files of {mv.ref}"), using_tracking_uri(tracking_uri()):
        files = mlflow.artifacts.list_artifacts(artifact_uri=mv.uri)
    sizes = [f.file_size for f in files if f.path.rsplit("/", 1)[-1] in ("model.pkl", "model.skops")]
    return int(sizes[0]) if sizes and sizes[0] is not None else None


def load_profile(mv: ModelVersion) -> dict[str, Any] | None:
    """The training-data profile registered with a version, or ``None`` if it has none.

    >>> load_profile(resolve("cancer/1"))["rows"]   # doctest: +SKIP
    426
    """
    import json

    if not mv.run_id or "nbdeploy.profile" not in mv.tags:
        return None
    with mlflow_errors(f"reading the profile of {mv.ref}"), tempfile.TemporaryDirectory() as tmp:
        path = client().download_artifacts(mv.run_id, PROFILE_PATH, tmp)
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data


def download_model(uri: str, dst: str | Path) -> Path:
    """Copy the MLflow model at ``uri`` (``models:/…``, ``runs:/…``) into the folder ``dst``.

    Serving processes load from this local copy, so they need neither MLflow nor the
    tracking store to start.

    >>> download_model("models:/cancer/3", ".nbdeploy/cancer/model")   # doctest: +SKIP
    """
    import mlflow.artifacts

    target = Path(dst)
    target.mkdir(parents=True, exist_ok=True)
    with mlflow_errors(f"downloading {uri}"), using_tracking_uri(tracking_uri()):
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
    return Path(local)


def validation_metric(ref: str, metric: str) -> float | None:
    """The version's figure for ``metric`` in its latest validation (``None``: never validated,
    or that metric was not measured).

    >>> validation_metric("cancer/2", "accuracy")   # doctest: +SKIP
    0.9580
    """
    mv = resolve(ref)
    run_id = mv.tags.get("nbdeploy.validation.run")
    if not run_id:
        return None
    with mlflow_errors(f"reading the validation of {mv.ref}"):
        value = client().get_run(run_id).data.metrics.get(f"validation_{metric}")
    return None if value is None else float(value)
