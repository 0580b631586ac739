"""The process that parses a server's request log ahead of an export, started with the server.

An export reads the rows of the log's columnar copy instead of parsing the JSON lines
(``nbdeploy.deployments.log_columns``); this keeps the copy up to date. It is a program of
its own (``python -m nbdeploy.deployments.log_converter``: this process imports none of
it), runs under ``SCHED_IDLE`` (it takes only CPU the server leaves), dies with the server
however the server dies, and is stopped with it. What it says goes to the server's stderr.
It is started only where an export can read the rows: a server with a folder, logging
inputs, with pyarrow installed. ``NBDEPLOY_LOG_COLUMNS_S`` sets the seconds between its looks
(default 10; 0 starts none).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from nbdeploy.spec import ServerSettings

__all__ = ["LogColumns"]


class LogColumns:
    """The converter of the logs in ``folder``, started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, folder: str | None, log_inputs: str, every: float = ServerSettings.log_columns_s) -> None:
        self.folder, self.log_inputs = folder, log_inputs
        given = os.environ.get("NBDEPLOY_LOG_COLUMNS_S")
        try:
            self.every = float(given) if given is not None else every
        except ValueError:
            print(f"NBDEPLOY_LOG_COLUMNS_S={given!r} is not a number of seconds: {every:g} it is", flush=True)
            self.every = every
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def of(cls, settings: ServerSettings) -> LogColumns:
        return cls(settings.folder, settings.log_inputs, settings.log_columns_s)

    @property
    def wanted(self) -> bool:
        return bool(self.folder and self.log_inputs != "none" and self.every > 0
                    and importlib.util.find_spec("pyarrow") is not None)  # fmt: skip

    def start(self) -> None:
        if not self.wanted:
            return
        assert self.folder is not None
        # idle and bound to this process from its first step, before its imports (nbdeploy._process)
        command = [sys.executable, "-m", "nbdeploy._process", str(os.getpid()), "nbdeploy.deployments.log_converter",
                   self.folder, "--every", str(self.every)]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
