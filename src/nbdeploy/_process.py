"""A helper process's first steps: die with the process that started it, and run only on
CPU that nothing else wants.

>>> die_with(parent_pid); run_idle()      # doctest: +SKIP

or, from its first step (before its imports cost any CPU), as a program:

    python -m nbdeploy._process PARENT_PID nbdeploy.deployments.log_converter FOLDER
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["die_with", "main", "run_idle"]


def die_with(parent: int) -> None:
    """The kernel kills this process when ``parent`` dies, however it dies (``kill -9``
    included), so that no helper outlives its server."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(0)


def run_idle() -> None:
    """Run only on a CPU nothing else wants (Linux's ``SCHED_IDLE``), else at the lowest priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        os.nice(19)


def main(argv: list[str] | None = None) -> None:
    """``python -m nbdeploy._process PARENT MODULE [ARGS...]``: run ``MODULE`` as a program
    that dies with ``PARENT`` and runs idle from its first step, before its imports."""
    import runpy

    parent, module, *args = sys.argv[1:] if argv is None else argv
    die_with(int(parent))
    run_idle()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
