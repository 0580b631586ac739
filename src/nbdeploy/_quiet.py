"""Quiet calls: what the libraries nbdeploy drives say goes to a logger, not under the cell.

MLflow gives its loggers a handler of its own that writes to stderr (``INFO ... Creating
initial MLflow database tables...`` in red under the first ``register``), and MLflow and
scikit-learn raise warnings a user cannot act on. During one of nbdeploy's calls their
records and warnings go to the ``nbdeploy.libraries`` logger instead, which shows what is at
or above :func:`log_level` (``ERROR`` by default; ``%config DeployMagics.log_level =
"DEBUG"`` or ``NBDEPLOY_LOG_LEVEL`` turn it up). Anything a user must act on is nbdeploy's
own sentence (an error), never a library's log line; nbdeploy's own notices are written to
:func:`stderr`, the cell's.

Only nbdeploy's calls are quieted, in the thread that makes them: a user's own MLflow calls,
another thread's output and the user's own expressions (``--data X.head()``, run under
:func:`loud`) speak as they would without nbdeploy; warnings a user must act on (a model
pickled by another scikit-learn) still show. Calls nest (a command calling the API) and the
last one to end restores everything.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["LIBRARY_LOGGERS", "log_level", "loud", "quiet", "quieted", "set_log_level", "stderr"]

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
    return sys.stderr.real if isinstance(sys.stderr, _StderrProxy) else sys.stderr


# The diversion is per thread: a quiet call in one thread (a command; the panel's poller is
# not one) never hides what another thread's code says.
_local = threading.local()


def _in_call() -> bool:
    return getattr(_local, "depth", 0) > 0


# what a user must act on even from a library (a model pickled by another scikit-learn version,
# dependencies that differ from the model's): shown as it would be without nbdeploy
_MUST_SEE_WARNINGS = ("InconsistentVersionWarning",)


def _must_see(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING and "mismatch" in record.getMessage()


class _Forward(logging.Handler):
    """A library logger's only handler while quiet calls run: in a thread inside one, its
    records go to ``nbdeploy.libraries``; elsewhere, to the handlers it had before."""

    def __init__(self, before: list[logging.Handler], level_before: int, propagate_before: bool) -> None:
        super().__init__()
        self.before, self.level_before, self.propagate_before = before, level_before, propagate_before

    def emit(self, record: logging.LogRecord) -> None:
        if _in_call():
            if record.levelno >= _logger.level or _must_see(record):
                _logger.handle(record)
            return
        if record.levelno < self.level_before:
            return
        for handler in self.before + (logging.root.handlers if self.propagate_before else []):
            if record.levelno >= handler.level:
                handler.handle(record)


_LEVEL_WORD = re.compile(r"\b(CRITICAL|ERROR|WARNING|INFO|DEBUG)\b")
_LEVELS_BY_NAME = {"CRITICAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
                   "INFO": logging.INFO, "DEBUG": logging.DEBUG}  # fmt: skip


def _level_of(line: str) -> int:
    """A written line's level: an error and a traceback stay errors (shown by default)."""
    if "Traceback (most recent call last)" in line:
        return logging.ERROR
    word = _LEVEL_WORD.search(line)
    return _LEVELS_BY_NAME[word.group(1)] if word else logging.INFO


class _StderrProxy(io.TextIOBase):
    """``sys.stderr`` while quiet calls run: in a thread inside one, each line is a record of
    ``nbdeploy.libraries`` at the level it names (MLflow's handler, which it installs when
    first imported, writes to whatever ``sys.stderr`` is); elsewhere, and for a handler that
    kept it after the call, the real stream."""

    def __init__(self, real: TextIO) -> None:
        self.real = real

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not _in_call():
            return self.real.write(text)
        *lines, _local.pending = (getattr(_local, "pending", "") + text).replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                _logger.log(_level_of(line), "%s", line)
        return len(text)

    def flush(self) -> None:
        if not _in_call():
            self.real.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty...: the real stream's
        return getattr(self.real, name)


def _flush_pending() -> None:
    """The thread's last line, written without its newline (a progress bar's)."""
    pending, _local.pending = getattr(_local, "pending", ""), ""
    if pending.strip():
        _logger.log(_level_of(pending), "%s", pending)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:  # fmt: skip
    if not _in_call():
        _saved.showwarning(message, category, filename, lineno, file, line)
    elif category.__name__ in _MUST_SEE_WARNINGS:  # to the real stream: not back into the call's
        _saved.showwarning(message, category, filename, lineno, file or stderr(), line)
    else:
        _logger.warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


class _Saved:
    """What the first quiet call (of any thread) changed, restored when the last one ends."""

    def __init__(self) -> None:
        self.calls = 0
        self.showwarning: Any = None
        self.loggers: list[tuple[logging.Logger, _Forward, int]] = []


_saved = _Saved()
_lock = threading.Lock()


def _divert() -> None:
    if not isinstance(sys.stderr, _StderrProxy):
        sys.stderr = _StderrProxy(sys.stderr)
    _saved.showwarning, warnings.showwarning = warnings.showwarning, _show_warning
    _saved.loggers = []
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        forward = _Forward(lib.handlers, lib.getEffectiveLevel(), lib.propagate)
        _saved.loggers.append((lib, forward, lib.level))
        lib.handlers, lib.propagate = [forward], False
        lib.setLevel(min(_logger.level, lib.getEffectiveLevel()))  # records the other threads' see too


def _restore() -> None:
    if isinstance(sys.stderr, _StderrProxy):  # else someone replaced it since: the proxy passes through
        sys.stderr = sys.stderr.real
    if warnings.showwarning is _show_warning:
        warnings.showwarning = _saved.showwarning
    for lib, forward, level in _saved.loggers:
        if lib.handlers == [forward]:  # a library configured during the call keeps its own
            lib.handlers, lib.propagate = forward.before, forward.propagate_before
            lib.setLevel(level)
    _saved.loggers = []


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """For the duration, in this thread: library log records, warnings and stderr go to
    ``nbdeploy.libraries``."""
    with _lock:
        if _saved.calls == 0:
            _divert()
        _saved.calls += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        if _local.depth == 0:
            _flush_pending()
        with _lock:
            _saved.calls -= 1
            if _saved.calls == 0:
                _restore()


@contextlib.contextmanager
def loud() -> Iterator[None]:
    """Inside a quiet call, the user's own code (an expression given as ``--data``) speaks as
    it would without nbdeploy."""
    depth, _local.depth = getattr(_local, "depth", 0), 0
    try:
        yield
    finally:
        _local.depth = depth


def quieted(function: _F) -> _F:
    """``function`` run inside :func:`quiet`."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with quiet():
            return function(*args, **kwargs)

    return call  # type: ignore[return-value]
