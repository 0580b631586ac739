"""Quiet calls: what the libraries nbdeploy drives say goes to a logger, not under the cell.

MLflow gives its loggers a handler of its own that writes to stderr (``INFO ... Creating
initial MLflow database tables...`` in red under the first ``register``), and MLflow and
scikit-learn raise warnings a user cannot act on. During one of nbdeploy's calls their
records and warnings go to the ``nbdeploy.libraries`` logger instead, which shows what is at
or above :func:`log_level` (``ERROR`` by default; ``%config DeployMagics.log_level =
"DEBUG"`` or ``NBDEPLOY_LOG_LEVEL`` turn it up). Anything a user must act on is nbdeploy's
own sentence (an error), never a library's log line; nbdeploy's own notices are written to
:func:`stderr`, the cell's.

Only nbdeploy's calls are quieted: a user's own MLflow calls in the same kernel log as
MLflow configured them. Calls nest (a command calling the API) and restore everything on
the way out.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["LIBRARY_LOGGERS", "log_level", "quiet", "quieted", "set_log_level", "stderr"]

# the loggers of what nbdeploy drives in the kernel (MLflow's store migrations log as alembic)
LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "huey", "sklearn", "papermill", "urllib3", "httpx")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_logger = logging.getLogger("nbdeploy.libraries")
_F = TypeVar("_F", bound=Callable[..., Any])


class _ToStderr(logging.StreamHandler):
    """Writes to the cell's own stderr: the one before a quiet call diverted ``sys.stderr``."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self) -> Any:
        return stderr()

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it
        pass


def _level_from_env() -> str:
    name = os.environ.get("NBDEPLOY_LOG_LEVEL", "ERROR").upper()
    return name if name in LEVELS else "ERROR"


def set_log_level(name: str) -> None:
    """What of the libraries' records and warnings shows: one of :data:`LEVELS`."""
    upper = str(name).upper()
    if upper not in LEVELS:
        raise ValueError(f"log level {name!r} is not one of {', '.join(LEVELS)}")
    _logger.setLevel(upper)


def log_level() -> str:
    return logging.getLevelName(_logger.level)


_logger.addHandler(_ToStderr())
_logger.propagate = False
set_log_level(_level_from_env())


def stderr() -> TextIO:
    """The stream nbdeploy's own messages go to: the real ``sys.stderr``, also during a quiet call."""
    return _saved.stderr or sys.stderr


class _Forward(logging.Handler):
    """Hands a library's record to ``nbdeploy.libraries``, keeping the library's name."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= _logger.level:
            _logger.handle(record)


class _LinesToLog(io.TextIOBase):
    """``sys.stderr`` during a quiet call: each line written is an INFO record (MLflow's own
    handler, which it installs when first imported, writes to whatever ``sys.stderr`` is)."""

    def __init__(self) -> None:
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                _logger.info("%s", line)
        return len(text)

    def flush_pending(self) -> None:
        """The last line, written without its newline (a progress bar's)."""
        if self._pending.strip():
            _logger.info("%s", self._pending)
        self._pending = ""


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any) -> None:
    _logger.warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


class _Saved:
    """What a quiet call changed, to restore when the last one (of any thread) ends."""

    def __init__(self) -> None:
        self.depth = 0
        self.stderr: TextIO | None = None
        self.showwarning: Any = None
        self.loggers: list[tuple[logging.Logger, list[logging.Handler], int, bool]] = []
        self.forward = _Forward()


_saved = _Saved()
_lock = threading.Lock()


def _divert() -> None:
    _saved.stderr, sys.stderr = sys.stderr, _LinesToLog()
    _saved.showwarning, warnings.showwarning = warnings.showwarning, _show_warning
    _saved.loggers = []
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        _saved.loggers.append((lib, lib.handlers, lib.level, lib.propagate))
        lib.handlers, lib.propagate = [_saved.forward], False
        lib.setLevel(_logger.level)


def _restore() -> None:
    if isinstance(sys.stderr, _LinesToLog):
        sys.stderr.flush_pending()
    sys.stderr, _saved.stderr = _saved.stderr, None
    warnings.showwarning = _saved.showwarning
    for lib, handlers, level, propagate in _saved.loggers:
        if lib.handlers == [_saved.forward]:  # a library configured during the call keeps its own
            lib.handlers, lib.propagate = handlers, propagate
            lib.setLevel(level)
    _saved.loggers = []


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """For the duration: library log records, warnings and stderr go to ``nbdeploy.libraries``."""
    with _lock:
        if _saved.depth == 0:
            _divert()
        _saved.depth += 1
    try:
        yield
    finally:
        with _lock:
            _saved.depth -= 1
            if _saved.depth == 0:
                _restore()


def quieted(function: _F) -> _F:
    """``function`` run inside :func:`quiet`."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with quiet():
            return function(*args, **kwargs)

    return call  # type: ignore[return-value]
