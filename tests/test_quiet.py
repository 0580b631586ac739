"""Quiet by default (#16 item 2): during nbdeploy's calls the libraries it drives leave no log
line, warning or stderr text under a cell unless the user turns the level up; outside them
nothing of the user's own logging or warnings changes. The notebooks' cells are checked
for the same in a real kernel by the root conftest.py (every cell nbval runs)."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from nbdeploy import _quiet
from nbdeploy._quiet import quiet, set_log_level


@pytest.fixture(autouse=True)
def default_level() -> Iterator[None]:
    yield
    set_log_level("ERROR")


def said(capsys: pytest.CaptureFixture[str]) -> str:
    """What reached the cell's stderr (pytest's capture stands for the kernel's stream)."""
    return capsys.readouterr().err


def _library_talks() -> None:
    """What MLflow, alembic and scikit-learn do on a first register: log, warn, write stderr."""
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    logging.getLogger("alembic.runtime.migration").warning("Will assume non-transactional DDL.")
    warnings.warn("X does not have valid feature names", UserWarning, stacklevel=1)
    sys.stderr.write("Downloading artifacts: 100%|##########| 5/5\r\n")
    sys.stderr.write("Loading model: 3/5")  # a progress bar's last line, with no newline


def test_nothing_of_the_libraries_shows_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.addHandler(handler := logging.StreamHandler(sys.stderr))  # as MLflow does
    try:
        with quiet():
            _library_talks()
    finally:
        mlflow_logger.removeHandler(handler)
    assert said(capsys) == ""


def test_turned_up_everything_shows_with_its_source(capsys: pytest.CaptureFixture[str]) -> None:
    set_log_level("debug")
    with quiet():
        _library_talks()
    err = said(capsys)
    assert "INFO mlflow.store.db.utils: Creating initial MLflow database tables..." in err
    assert "WARNING alembic.runtime.migration: Will assume non-transactional DDL." in err
    assert "UserWarning: X does not have valid feature names" in err
    assert "Downloading artifacts: 100%" in err and "INFO nbdeploy.libraries: Loading model: 3/5" in err


def test_warning_level_shows_warnings_not_info(capsys: pytest.CaptureFixture[str]) -> None:
    set_log_level("WARNING")
    with quiet():
        _library_talks()
    err = said(capsys)
    assert "Creating initial" not in err and "Downloading" not in err
    assert "non-transactional DDL" in err and "valid feature names" in err


def test_a_bad_level_is_one_sentence() -> None:
    with pytest.raises(ValueError, match="'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        set_log_level("LOUD")


def test_outside_a_call_the_users_logging_and_warnings_are_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    mlflow_logger = logging.getLogger("mlflow")
    handler = logging.StreamHandler(sys.stderr)
    mlflow_logger.addHandler(handler)
    cell_stderr = sys.stderr
    before = (list(mlflow_logger.handlers), mlflow_logger.level, mlflow_logger.propagate, warnings.showwarning)
    try:
        with quiet():
            with quiet():  # nested: a command calling the API
                pass
            assert sys.stderr is not cell_stderr
        assert (list(mlflow_logger.handlers), mlflow_logger.level, mlflow_logger.propagate) == before[:3]
        assert warnings.showwarning is before[3] and sys.stderr is cell_stderr
        mlflow_logger.setLevel(logging.INFO)
        mlflow_logger.info("the user's own MLflow call")
    finally:
        mlflow_logger.removeHandler(handler)
        mlflow_logger.setLevel(before[1])
    assert "the user's own MLflow call" in said(capsys)


def test_a_library_configured_during_the_call_keeps_its_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow sets its loggers' handlers when first imported, which may be inside the call."""
    huey = logging.getLogger("huey")
    own = logging.StreamHandler(sys.stderr)
    try:
        with quiet():
            huey.handlers = [own]
        assert huey.handlers == [own]
    finally:
        huey.handlers = []


def test_calls_overlapping_in_threads_restore_once_the_last_ends(capsys: pytest.CaptureFixture[str]) -> None:
    """A quiet call in one thread hides nothing of another's (the panel's poller, the user's)."""
    cell_stderr = sys.stderr
    inside, release = threading.Event(), threading.Event()

    def other_call() -> None:
        with quiet():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=other_call)
    with quiet():
        worker.start()
        assert inside.wait(10)
    assert sys.stderr is not cell_stderr  # the thread's call is still going on
    print("the main thread's own line", file=sys.stderr)
    warnings.warn("the main thread's own warning", UserWarning, stacklevel=1)
    assert "the main thread's own line" in said(capsys)
    release.set()
    worker.join(10)
    assert sys.stderr is cell_stderr and _quiet._saved.calls == 0


def test_nbdeploys_own_notice_reaches_the_cell_during_a_call(capsys: pytest.CaptureFixture[str]) -> None:
    with quiet():
        print("nbdeploy: the 'serve' event was not recorded", file=_quiet.stderr())
    assert "was not recorded" in said(capsys)


def test_the_public_functions_are_quiet() -> None:
    import nbdeploy

    assert nbdeploy.resolve.__wrapped__ is nbdeploy.registry.resolve  # type: ignore[attr-defined]


def test_a_handler_set_up_during_a_call_speaks_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow (or Ray) sets up its handler on first import, inside the first call: the stream it
    keeps passes through once the call is over, and an error it writes during it still shows."""
    ray_like = logging.getLogger("huey.first_import")
    with quiet():
        handler = logging.StreamHandler(sys.stderr)  # as a library does when imported here
        ray_like.addHandler(handler)
        try:
            sys.stderr.write("2026/12/01 10:00:00 ERROR mlflow.store: the store is locked\n")
        except Exception:
            raise
    try:
        ray_like.error("an error of the user's own call, later")
        err = said(capsys)
        assert "ERROR nbdeploy.libraries: 2026/12/01 10:00:00 ERROR mlflow.store: the store is locked" in err
        assert "an error of the user's own call, later" in err
    finally:
        ray_like.removeHandler(handler)


def test_what_a_user_must_act_on_still_shows(capsys: pytest.CaptureFixture[str]) -> None:
    from nbdeploy._quiet import loud

    def as_python_shows(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        print(f"{category.__name__}: {message}", file=file or sys.stderr)

    InconsistentVersionWarning = type("InconsistentVersionWarning", (UserWarning,), {})  # scikit-learn's name
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = as_python_shows  # the kernel's, where pytest has its recorder
        with quiet():
            warnings.warn("Trying to unpickle estimator from version 1.2 when using 1.9", InconsistentVersionWarning,
                          stacklevel=1)  # fmt: skip
            warnings.warn("X does not have valid feature names", UserWarning, stacklevel=1)
            logging.getLogger("mlflow.pyfunc").warning("Detected one or more mismatches between the model's deps")
            with loud():  # the user's expression, evaluated inside the command
                print("the user's own print", file=sys.stderr)
    err = said(capsys)
    assert "InconsistentVersionWarning: Trying to unpickle estimator from version 1.2" in err
    assert "mismatches between the model's deps" in err and "the user's own print" in err
    assert "valid feature names" not in err
