"""One batch-scoring process (``nbdeploy.serving.batch_worker``) as the kernel sees it, and the
spool its chunks go through.

A chunk goes to the process as an Arrow file in the spool, in memory (``/dev/shm``) while it
has room and on disk after (a pipe would copy it twice, and took longer than the forest's
prediction of it); the pipe carries the file's name and the answer. The spool's name holds the
kernel's pid: a spool left by a kernel that was killed is removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from nbdeploy._frames import START, read_frame, write_frame
from nbdeploy.errors import DeploymentError, InvalidInputError

__all__ = ["ScoringProcess", "Spool"]

_TAGS = (b"R", b"D", b"E", b"F")
_MAX_ANSWER = 1 << 34  # bytes: a length past this is not an answer of ours


def _rows(start: int, count: int) -> str:
    return f"rows {start:,}-{start + count - 1:,}"


class Spool:
    """Where chunks are written for the processes to map: ``/dev/shm`` until it is full."""

    PREFIX = "nbdeploy-batch-"

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self.memory = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self._sweep(self.memory or Path(tempfile.gettempdir()))
        self.dirs = [Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=self.memory))]

    def _sweep(self, where: Path) -> None:
        for left in where.glob(f"{self.PREFIX}*-*"):
            pid = left.name[len(self.PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(left, ignore_errors=True)

    def write(self, table: pa.Table, name: str) -> Path:
        """The file of ``table``; on disk once memory is full."""
        try:
            return self._write(self.dirs[-1] / name, table)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or len(self.dirs) > 1:
                raise
        with contextlib.suppress(OSError):
            (self.dirs[-1] / name).unlink()
        self.dirs.append(Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-")))  # on disk from now on
        return self._write(self.dirs[-1] / name, table)

    @staticmethod
    def _write(path: Path, table: pa.Table) -> Path:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return path

    def remove(self) -> None:
        for folder in self.dirs:
            shutil.rmtree(folder, ignore_errors=True)


class ScoringProcess:
    """One ``nbdeploy.serving.batch_worker`` process: the model loaded once, chunks sent and
    answered in turn. It dies with this process; :meth:`stop` ends it and waits, :meth:`kill`
    ends it at once."""

    def __init__(self, model_path: str, proba: bool, threads: int, spool: Spool) -> None:
        self.spool = spool
        argv = [sys.executable, "-m", "nbdeploy.serving.batch_worker", model_path, "--parent", str(os.getpid())]
        # each process gets its share of the cores: BLAS and OpenMP would otherwise each take them all
        env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                          "MKL_NUM_THREADS")}}  # fmt: skip
        self.err = tempfile.TemporaryFile()  # a file, not a pipe: warnings per chunk would fill a pipe and block
        self.proc = subprocess.Popen([*argv, *(["--proba"] if proba else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env=env)  # fmt: skip
        self.methods: list[str] = []

    def ready(self) -> None:
        """Wait for the model to load; DeploymentError with the reason when it does not."""
        answer = self._read()
        if answer is None or answer[0] != b"R":
            raise DeploymentError(self._why(answer, "could not start"))
        self.methods = json.loads(answer[1])["methods"]

    def _read(self) -> tuple[bytes, bytes] | None:
        assert self.proc.stdout is not None
        answer = read_frame(self.proc.stdout, _MAX_ANSWER)
        if answer is not None and answer[0] not in _TAGS:
            raise DeploymentError("The scoring process wrote something that is not an answer on its output "
                                  "(a library printing there?).")  # fmt: skip
        return answer

    def _why(self, answer: tuple[bytes, bytes] | None, what: str) -> str:
        if answer is not None and answer[0] in (b"E", b"F"):
            return answer[1].decode(errors="replace")
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.err.seek(0)
        tail = self.err.read()[-4000:].decode(errors="replace").strip()
        last = tail.splitlines()[-1] if tail else f"exit code {code}"
        return f"The scoring process {what} ({last})."

    def send(self, start: int, table: pa.Table) -> None:
        """Send a chunk: its file is written, its name goes down the pipe."""
        path = self.spool.write(table, f"{start}.arrow")
        assert self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, b"D", START.pack(start) + str(path).encode())
        except (BrokenPipeError, OSError, ValueError):  # ValueError: stopped meanwhile (stdin closed)
            raise DeploymentError(self._why(None, f"ended while scoring {_rows(start, table.num_rows)}")) from None

    def receive(self, start: int, rows: int) -> pa.Table:
        """The answer to the oldest chunk sent; InvalidInputError for input the signature
        refuses, DeploymentError when the model fails or the process ends."""
        answer = self._read()
        if answer is not None and answer[0] == b"E":
            raise InvalidInputError(answer[1].decode(errors="replace"))
        if answer is None or answer[0] != b"D":
            raise DeploymentError(self._why(answer, f"ended while scoring {_rows(start, rows)}"))
        return pa.ipc.open_stream(answer[1]).read_all()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def stop(self, timeout: float = 10) -> None:
        """Close its input and wait for it to end (killed if it does not)."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.err.close()
