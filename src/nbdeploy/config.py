"""Where nbdeploy keeps its state: the MLflow tracking store and the deployments folder.

Resolution order for the tracking store: an explicit setting (``%config
DeployMagics.tracking_uri`` or :func:`configure`), then ``MLFLOW_TRACKING_URI``, then an
embedded SQLite store ``mlflow.db`` in the working directory. For SQLite stores artifacts
go to one folder beside the database, ``mlartifacts/``, never to a scattered ``./mlruns``.

>>> configure(tracking_uri="sqlite:////tmp/demo/mlflow.db")
>>> artifact_root("sqlite:////tmp/demo/mlflow.db")
'file:///tmp/demo/mlartifacts'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nbdeploy.errors import InvalidInputError

__all__ = [
    "artifact_root",
    "configure",
    "core_hour_price",
    "display_uri",
    "experiment_name",
    "explicit_tracking_uri",
    "home",
    "set_core_hour_price",
    "settings",
    "tracking_uri",
]

DEFAULT_EXPERIMENT = "nbdeploy"


@dataclass
class Settings:
    """Values set from code or ``%config``; ``None`` means "use the environment"."""

    tracking_uri: str | None = None
    experiment: str | None = None
    home: str | None = None
    core_hour_price: float | None = None


settings = Settings()


_KEEP: Any = object()


def configure(*, tracking_uri: str | None = _KEEP, experiment: str | None = _KEEP, home: str | None = _KEEP) -> None:
    """Override the tracking URI, experiment name or deployments folder for this process.

    Only the settings passed change; ``None`` or ``""`` goes back to the environment.
    """
    for name, value in (("tracking_uri", tracking_uri), ("experiment", experiment), ("home", home)):
        if value is not _KEEP:
            setattr(settings, name, value or None)


def set_core_hour_price(price: float | None) -> None:
    """The price of one CPU core for an hour that ``serve`` gives servers by default (``None``:
    ``NBDEPLOY_CORE_HOUR_PRICE``, else no cost figures)."""
    settings.core_hour_price = price


def core_hour_price() -> float | None:
    """The default price of a core-hour: :func:`set_core_hour_price`, else the environment."""
    if settings.core_hour_price is not None:
        return settings.core_hour_price
    text = os.environ.get("NBDEPLOY_CORE_HOUR_PRICE", "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        raise InvalidInputError(f"Invalid NBDEPLOY_CORE_HOUR_PRICE {text[:40]!r}: use a number such as 0.04.") from None


def explicit_tracking_uri() -> str | None:
    """The tracking URI set by :func:`configure` or ``MLFLOW_TRACKING_URI``, if any."""
    return settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_uri() -> str:
    """The tracking URI in force now."""
    return explicit_tracking_uri() or "sqlite:///" + str(Path.cwd() / "mlflow.db")


def artifact_root(uri: str) -> str | None:
    """Artifact location for experiments nbdeploy creates, or ``None`` to let the server pick.

    A SQLite store keeps its artifacts in ``mlartifacts/`` beside the database file; a
    tracking server (``http://``) decides for itself (its ``--artifacts-destination``).
    """
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = uri[len("sqlite:///") :]
        if not db or db == ":memory:":
            return None
        return (Path(db).resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_name() -> str:
    """Experiment that holds the runs nbdeploy creates."""
    return settings.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def home() -> Path:
    """Folder that holds one sub-folder per deployment (``NBDEPLOY_HOME``, else ``.nbdeploy``)."""
    return Path(settings.home or os.environ.get("NBDEPLOY_HOME") or Path.cwd() / ".nbdeploy").resolve()


def display_uri(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@``, for reprs and messages."""
    parsed = urlparse(uri)
    if "@" not in parsed.netloc:
        return uri
    return parsed._replace(netloc="***@" + parsed.netloc.rsplit("@", 1)[1]).geturl()


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (where a server may go without a token)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
