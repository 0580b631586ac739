"""Running the training notebook headless with papermill, its parameters injected.

papermill adds a cell after the one tagged ``parameters`` (or at the top when none is),
runs every cell in a fresh kernel, and saves the notebook with its outputs after each cell,
so a notebook that fails is kept with the cell that raised and its traceback. The kernel
inherits the job's environment, ``NBDEPLOY_RETRAIN_RUN`` included (see
:mod:`nbdeploy.registry.retrain_runs`); it exits on its own if the job process dies
(ipykernel polls its parent).

>>> execute(Path("train.ipynb"), Path("out.ipynb"), {"reason": "by hand"}, {}, 600.0, None)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nbdeploy.errors import InvalidInputError, NbdeployError

__all__ = ["NotebookFailed", "check_notebook", "execute"]


class NotebookFailed(NbdeployError):
    """The training notebook raised, or could not be run."""


def check_notebook(path: str | Path) -> Path:
    """The notebook's absolute path, once it reads as a notebook (one sentence otherwise)."""
    import nbformat

    nb = Path(path).expanduser().resolve()
    if nb.suffix != ".ipynb" or not nb.is_file():
        raise InvalidInputError(f"--notebook {str(path)!r} is not an .ipynb file.")
    try:
        with nb.open(encoding="utf-8") as fh:
            nbformat.read(fh, as_version=4)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = type(exc).__name__
        raise InvalidInputError(f"--notebook {str(path)!r} does not read as a notebook ({why}).") from None
    return nb


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _literal(path: Path) -> str:
    return str(path).replace("{", "{{").replace("}", "}}")


def execute(notebook: Path, out: Path, parameters: dict[str, Any], env: Mapping[str, str], cell_timeout_s: float,
            kernel: str | None) -> float:  # fmt: skip
    """Run ``notebook`` into ``out``; the seconds it took. :class:`NotebookFailed` names the
    cell and the exception when a cell raises (``out`` keeps its traceback)."""
    import papermill
    from papermill.exceptions import PapermillException, PapermillExecutionError

    logging.getLogger("papermill").setLevel(logging.WARNING)
    start = time.monotonic()
    try:
        with _environment(env):
            # papermill formats both paths with the parameters: a brace in a folder's name is kept as it is
            papermill.execute_notebook(_literal(notebook), _literal(out), parameters=parameters, kernel_name=kernel,
                                       cwd=str(notebook.parent), progress_bar=False, log_output=False,
                                       execution_timeout=cell_timeout_s, request_save_on_cell_execute=True)  # fmt: skip
    except PapermillExecutionError as exc:
        evalue = str(exc.evalue).strip().splitlines()[0][:300] if str(exc.evalue).strip() else ""
        cell = exc.exec_count or exc.cell_index
        raise NotebookFailed(f"The notebook raised {exc.ename}{': ' + evalue if evalue else ''} in cell {cell} "
                             "(the executed notebook keeps its traceback).") from None
    except (PapermillException, OSError, RuntimeError, TimeoutError, ValueError) as exc:
        # a kernel that cannot start or died, a cell over its time, a notebook it cannot write
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise NotebookFailed(f"The notebook could not be run: {text}.") from None
    return time.monotonic() - start
