"""Load a model from a local MLflow model folder without importing MLflow when possible.

The kernel downloads the model's artifacts into the deployment folder; the server reads
``MLmodel`` and unpickles the estimator directly (MLflow's import alone costs ~1.5 s), and
falls back to ``mlflow.pyfunc`` for any other flavor or format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy import model_copy

__all__ = ["LoadedModel", "load", "read_signature"]


@dataclass
class LoadedModel:
    """A model ready to ``predict``, with the signature it was registered with."""

    predict: Any
    inputs: list[dict[str, Any]] | None
    outputs: list[dict[str, Any]] | None
    path: str


def _meta(folder: Path) -> dict[str, Any]:
    import yaml

    meta: dict[str, Any] = yaml.safe_load((folder / "MLmodel").read_text())
    return meta


def read_signature(path: str | Path) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """The input and output columns of the model's signature, without loading the model."""
    signature = _meta(Path(path)).get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else None
    outputs = json.loads(signature["outputs"]) if signature.get("outputs") else None
    return inputs, outputs


def load(path: str | Path) -> LoadedModel:
    """Load the MLflow model stored in folder ``path``: only a copy nbdeploy wrote, unchanged
    since (:func:`nbdeploy.model_copy.verify`), since unpickling runs the file's code."""
    folder = Path(path)
    model_copy.verify(folder)
    meta = _meta(folder)
    inputs, outputs = read_signature(folder)
    sk = (meta.get("flavors") or {}).get("sklearn") or {}
    if sk.get("serialization_format") in ("cloudpickle", "pickle") and sk.get("pickled_model"):
        import cloudpickle

        with (folder / sk["pickled_model"]).open("rb") as fh:
            model = cloudpickle.load(fh)
        return LoadedModel(model.predict, inputs, outputs, str(folder))
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(folder))
    return LoadedModel(pyfunc.predict, inputs, outputs, str(folder))
