"""One model version a deployment serves (:class:`ModelEntry`), shared by the deployment
spec and its experiments (:mod:`nbdeploy.spec`, :mod:`nbdeploy.experiment`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["ModelEntry", "pickled_sklearn", "read_mlmodel", "read_signature"]


class _ReadAsDict:
    """``spec["max_batch"]``, ``spec.get("ray")``, ``"ray" in spec``: how ``Deployment.spec``
    and ``Deployment.current`` (dicts until 0.2) were read. Deprecated: read attributes."""

    def _as_dict(self) -> dict[str, Any]:
        doc = asdict(self)  # type: ignore[call-overload]
        if hasattr(self, "alert_window"):
            doc["alert_window"] = self.alert_window  # written to spec.json before 0.2
        return doc

    def _warn(self, key: str) -> None:
        import warnings

        warnings.warn(
            f"{type(self).__name__} is not a dict since 0.2: read .{key} instead of [{key!r}] or .get({key!r}).",
            DeprecationWarning,
            stacklevel=3,
        )

    def __getitem__(self, key: str) -> Any:
        self._warn(key)
        return self._as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        self._warn(key)
        return self._as_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._as_dict()


@dataclass
class ModelEntry(_ReadAsDict):
    """One model version a deployment served: the history that ``rollback`` walks back."""

    ref: str
    model_path: str
    resolved: str | None = None
    version: int | None = None
    task: str | None = None
    profile_path: str | None = None
    at: float = 0.0

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def profile(self) -> dict[str, Any] | None:
        """The training-data profile copied beside the model, if there is one."""
        if self.profile_path and Path(self.profile_path).exists():
            data: dict[str, Any] = json.loads(Path(self.profile_path).read_text())
            return data
        return None


def read_mlmodel(folder: str | Path) -> dict[str, Any]:
    """The ``MLmodel`` file of a local model folder, as a dict."""
    import yaml

    meta: dict[str, Any] = yaml.safe_load((Path(folder) / "MLmodel").read_text())
    return meta


def pickled_sklearn(meta: dict[str, Any]) -> str | None:
    """The pickle file of a scikit-learn flavor the server unpickles itself (``None``: the
    model is loaded through MLflow's pyfunc)."""
    sk = (meta.get("flavors") or {}).get("sklearn") or {}
    ok = sk.get("serialization_format") in ("cloudpickle", "pickle") and sk.get("pickled_model")
    return str(sk["pickled_model"]) if ok else None


def read_signature(folder: str | Path) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """The input and output columns of the model's signature, without loading the model."""
    signature = read_mlmodel(folder).get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else None
    outputs = json.loads(signature["outputs"]) if signature.get("outputs") else None
    return inputs, outputs


def read_serving_example(folder: str | Path) -> dict[str, Any] | None:
    """The example request MLflow saved with the model (``serving_input_example.json``), if any."""
    try:
        doc = json.loads((Path(folder) / "serving_input_example.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
