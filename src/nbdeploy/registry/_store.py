"""The tracking store in force, one ``MlflowClient`` per store, and the one place where
what the store raises becomes a :class:`~nbdeploy.errors.TrackingError` with a next step.

>>> with mlflow_errors("listing models"):                 # doctest: +SKIP
...     client().search_registered_models(max_results=5)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from nbdeploy import config
from nbdeploy.config import display_uri
from nbdeploy.errors import InvalidInputError, NbdeployError, TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["client", "experiment_id", "mlflow_errors", "set_alias", "tracking_uri", "using_tracking_uri"]

# MLflow draws a progress bar for every artifact download (loading a model is one); with tqdm
# installed it lands under the cell as a widget. nbdeploy's downloads are small and quick, so
# the bar is off unless the user asked for it.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_clients: dict[str, MlflowClient] = {}
# The operation named by the outermost ``mlflow_errors`` block; inner blocks defer to it.
_doing: ContextVar[str | None] = ContextVar("nbdeploy_store_doing", default=None)
# Libraries whose exceptions mean the store (its server, database or artifact files) failed.
_DRIVERS = frozenset({"sqlite3", "psycopg", "psycopg2", "pymysql"})
_STORE_LIBRARIES = _DRIVERS | {"mlflow", "sqlalchemy", "urllib3", "requests"}


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
        with mlflow_errors("opening it"):  # a SQL store reads its schema here
            _clients[uri] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _clients[uri]


@contextlib.contextmanager
def mlflow_errors(doing: str) -> Iterator[None]:
    """Turn what the tracking store raises into one ``TrackingError`` sentence with a next step.

    nbdeploy's own errors pass through, so a caller that handles a specific MLflow error
    code (a missing model becomes ``ModelNotFoundError``) does so inside the block. Errors
    that are not the store's (a bug, a model that cannot be pickled) pass through too.
    Nested blocks defer to the outermost, which names the operation the user asked for.

    >>> with mlflow_errors("listing models"):   # doctest: +SKIP
    ...     client().search_registered_models()
    TrackingError: The tracking store http://127.0.0.1:5000 failed while listing models: [Errno 111]
    Connection refused; check that the MLflow server is running and reachable, or set
    MLFLOW_TRACKING_URI to another store.
    """
    if _doing.get() is not None:
        yield
        return
    token = _doing.set(doing)
    try:
        yield
    except NbdeployError:
        raise
    except Exception as exc:
        if not _from_store(exc):
            raise
        if _refused_request(exc):  # the store answered: it refused what was asked, it did not fail
            said = (str(getattr(exc, "message", exc)).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InvalidInputError(f"MLflow refused {doing}: {said.rstrip('.')}.") from None
        uri = tracking_uri()
        cause = _telling(exc)
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300].rstrip(".")
        message = f"The tracking store {display_uri(uri)} failed while {doing}: {first}; {_next_step(exc, uri)}."
        raise TrackingError(message) from None
    finally:
        _doing.reset(token)


# MLflow's codes for a request the store understood and refused (not a failure of the store)
_REFUSALS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                       "INVALID_STATE", "BAD_REQUEST"})  # fmt: skip


def _refused_request(exc: BaseException) -> bool:
    """An MLflow error with a client-side code and no OS or driver error behind it."""
    if getattr(exc, "error_code", None) not in _REFUSALS:
        return False
    return not any(isinstance(link, OSError) or _library(link) in _DRIVERS for link in _chain(exc))


def _library(exc: BaseException) -> str:
    return type(exc).__module__.split(".")[0]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes, outermost first, as Python shows them in a traceback."""
    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ if link.__cause__ is not None else None if link.__suppress_context__ else link.__context__


def _from_store(exc: BaseException) -> bool:
    # OSError covers refused connections, timeouts and unreadable artifact folders.
    return isinstance(exc, OSError) or any(c.__module__.split(".")[0] in _STORE_LIBRARIES for c in type(exc).__mro__)


def _telling(exc: BaseException) -> BaseException:
    """The cause that says why: the innermost OS or database-driver error, else ``exc`` itself.

    ("[Errno 111] Connection refused" rather than MLflow's retry summary around it.)
    """
    found = exc
    for link in _chain(exc):
        if isinstance(link, OSError) or _library(link) in _DRIVERS:
            found = link
    return found


def _next_step(exc: BaseException, uri: str) -> str:
    """What to do about a failure of the store at ``uri``, from its kind and the store's scheme."""
    # A URI set from code, %config or --tracking-uri wins over the environment variable.
    elsewhere = (
        "set MLFLOW_TRACKING_URI to another store"
        if config.settings.tracking_uri is None
        else "point nbdeploy at another tracking URI"
    )
    if getattr(exc, "error_code", None) in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return (
            "check your credentials for it (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD), or {elsewhere}"
        )
    path = next((link.filename for link in _chain(exc) if isinstance(link, OSError) and link.filename), None)
    if path is not None:  # a local artifact file or folder
        return f"check that {path} exists and that you may read and write it, or {elsewhere}"
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("http", "https"):
        return f"check that the MLflow server is running and reachable, or {elsewhere}"
    if scheme == "sqlite":
        return f"check that the file is a readable MLflow database, or {elsewhere}"
    if scheme in ("postgresql", "mysql", "mssql"):
        return f"check that the database is running and that the URI's user and password are right, or {elsewhere}"
    return f"check that the store is reachable and readable, or {elsewhere}"


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


def set_alias(c: MlflowClient, name: str, alias: str, version: str, tries: int = 3) -> None:
    """Point ``alias`` at ``version``. Two kernels moving one alias at once through a SQL
    store can collide on its primary key (``UniqueViolation``); the write is then retried,
    and a collision that persists is left to :func:`mlflow_errors` (one sentence)."""
    import time

    for attempt in range(tries):
        try:
            c.set_registered_model_alias(name, alias, version)
            return
        except Exception as exc:
            if attempt == tries - 1 or not any("unique" in str(link).lower() for link in _chain(exc)):
                raise
            time.sleep(0.05 * (attempt + 1))
