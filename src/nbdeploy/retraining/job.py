"""A retraining job seen from a kernel or the CLI: adopt it by name, start, ask, stop.

The job's process is started in a session of its own (it outlives the kernel that started
it, like a deployment's server) as ``python -m nbdeploy.retraining FOLDER/retrain``, with
the tracking store and ``NBDEPLOY_HOME`` of the kernel that created it.

>>> job = RetrainJob.of("cancer")   # doctest: +SKIP
>>> job.trigger("fresh labels")     # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from nbdeploy import config
from nbdeploy._files import open_log
from nbdeploy.deployments import processes
from nbdeploy.deployments.retrain_files import MARKER, JobFiles
from nbdeploy.errors import DeploymentError, Docs, NotFoundError
from nbdeploy.retraining.spec import RetrainSpec
from nbdeploy.retraining.view import JobStatus

__all__ = ["RetrainJob"]


class RetrainJob:
    """The retraining job of one deployment (running, dead or stopped)."""

    def __init__(self, deployment: str, folder: Path) -> None:
        self.deployment, self.files = deployment, JobFiles(folder)

    @classmethod
    def of(cls, deployment: str) -> RetrainJob:
        """The job of ``deployment``; :class:`NotFoundError` when it has none."""
        from nbdeploy.deployments import get

        job = cls(deployment, get(deployment).path)
        if not job.files.exists:
            raise NotFoundError(f"Deployment {deployment!r} has no retraining job: start one with "
                                f"%deploy retrain {deployment} --notebook train.ipynb.",
                                docs=Docs.RETRAIN)  # fmt: skip
        return job

    @property
    def spec(self) -> RetrainSpec:
        return RetrainSpec.load(self.files.spec)

    def state(self) -> str:
        """``running``, ``dead`` or ``stopped``."""
        return self.files.state() or "stopped"

    def status(self) -> JobStatus:
        spec, info = self.spec, self.files.summary(last=10**9) or {}
        return JobStatus(self.deployment, self.state(), spec.trigger_text, spec.action_text, spec.notebook,
                         info.get("next_run"), info.get("running"), info.get("queued"),
                         info.get("runs", []))  # fmt: skip

    def runs(self) -> list[dict[str, object]]:
        """Every run, oldest first: trigger, steps, candidate, report, outcome and why."""
        return self.files.runs()

    def trigger(self, reason: str = "asked by hand") -> JobStatus:
        """Ask for a run now (after the one in progress, if any)."""
        if self.state() != "running":
            raise DeploymentError(f"The retraining job of {self.deployment!r} is {self.state()}: resume it first "
                                  f"(%deploy retrain {self.deployment} --resume).",
                                  docs=Docs.RETRAIN_PROCESS)  # fmt: skip
        self.files.ask(reason)
        return self.status()

    def logs(self, n: int = 50) -> str:
        """The last ``n`` lines of ``job.log`` (read from its end: the log is never read whole)."""
        try:
            with self.files.log.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, 2) - (256 << 10)))
                lines = fh.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:]) if n > 0 else ""

    def stop(self) -> bool:
        """Stop the job's process; whether it ran. Its state and runs stay (``resume`` adopts them)."""
        with processes.locked(self.files.root.parent):
            return self.files.stop()

    def resume(self, timeout: float = 30.0) -> RetrainJob:
        """Start the job's process if it does not run; it adopts the saved schedule and triggers."""
        if self.state() == "running":
            return self
        with processes.locked(self.files.root.parent):
            if self.state() != "running":
                self.spawn(timeout)
        return self

    def spawn(self, timeout: float = 30.0) -> None:
        """Start the job's process (the caller holds the deployment's lock)."""
        spec = self.spec
        if not Path(spec.notebook).parent.is_dir():
            raise DeploymentError(f"The folder of the job's notebook, {Path(spec.notebook).parent}, is gone: start "
                                  "the job again with --notebook.")  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NBDEPLOY_HOME": str(config.home()),
               "MLFLOW_TRACKING_URI": spec.tracking_uri, "MLFLOW_EXPERIMENT_NAME": spec.experiment}  # fmt: skip
        self.files.pid_file.unlink(missing_ok=True)
        with open_log(self.files.log) as log:
            proc = subprocess.Popen([sys.executable, "-m", MARKER, str(self.files.root)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    cwd=str(Path(spec.notebook).parent))  # fmt: skip
        processes.children[proc.pid] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last = (self.logs(1) or "no output").strip()
                raise DeploymentError(f"The retraining job of {self.deployment!r} ended at start ({last[:300]}); "
                                      f"see {self.files.log}.",
                                      docs=Docs.RETRAIN_PROCESS)  # fmt: skip
            if self.files.pid == proc.pid and f"started (pid {proc.pid})" in self.logs(5):
                return  # it has adopted its state and polls its triggers
            time.sleep(0.05)
        processes.stop_group(proc.pid, str(self.files.root))
        raise DeploymentError(
            f"The retraining job of {self.deployment!r} did not start within {timeout:.0f} s.",
            docs=Docs.RETRAIN_PROCESS,
        )

    def __repr__(self) -> str:
        return repr(self.status())

    def _repr_html_(self) -> str:
        return self.status()._repr_html_()
