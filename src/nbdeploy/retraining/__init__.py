"""Retraining jobs: a deployment's training notebook run again on a trigger, its candidate
validated against ``@champion`` and, only if every gate passes, canaried, shadowed or promoted.

>>> import nbdeploy
>>> nbdeploy.retrain("cancer", notebook="train.ipynb", on="psi>0.2", alert_k=3,     # doctest: +SKIP
...                  gates=["accuracy>=baseline-0.01"], canary=10)

A job is a process of its own per deployment (``job.py``), which survives the kernel that
started it, polls its triggers (``triggers.py``) and runs one retraining at a time
(``runner.py``), step by step (``pipeline.py``: export, papermill, validate, act), each run
recorded in ``runs.jsonl``, in MLflow and to the webhook (``runs.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from nbdeploy.errors import InvalidInputError
from nbdeploy.retraining.job import RetrainJob
from nbdeploy.retraining.spec import RetrainSpec, parse_params
from nbdeploy.spec import DEFAULT_ALERT_K, parse_duration

__all__ = ["RetrainJob", "RetrainSpec", "retrain"]

#: The experiment's rules when a canary or shadow is asked for without any.
DEFAULT_PROMOTE = {"classification": "accuracy>=baseline", "regression": "mae<=baseline"}
DEFAULT_ROLLBACK = "error_rate>baseline+0.01"


def _duration(value: str | float | None, option: str) -> float | None:
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    try:
        return parse_duration(value, option)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _action(canary: float | None, shadow: float | bool | None, promote: bool) -> tuple[str, float]:
    shadowed = shadow is not None and shadow is not False  # 0 is a percent (refused below), not "no shadow"
    asked = [a for a, on in (("canary", canary is not None), ("shadow", shadowed), ("promote", promote)) if on]
    if len(asked) > 1:
        raise InvalidInputError(f"Give one of --canary, --shadow and --promote, not {' and '.join(asked)}.")
    if canary is not None:
        return "canary", float(canary)
    if shadowed:
        return "shadow", 100.0 if shadow is True else float(shadow)  # type: ignore[arg-type]
    return ("promote" if promote else "none"), 10.0


def retrain(name: str, notebook: str | None = None, *, on: str | None = None, alert_k: int | None = None,
            every: str | float | None = None, cron: str | None = None, params: Sequence[str] | dict[str, Any] = (),
            gates: Sequence[str] = (), canary: float | None = None, shadow: float | bool | None = None,
            promote: bool = False, promote_when: Sequence[str] = (), rollback_when: Sequence[str] = (),
            min_labels: int | None = None, since: str | float | None = None, webhook: str | None = None,
            cell_timeout: str | float | None = None, kernel: str | None = None, now: bool = False,
            resume: bool = False) -> RetrainJob:  # fmt: skip
    """Start (or replace) the retraining job of deployment ``name``; without ``notebook``, the
    job it has: ``resume`` starts its process again (it adopts its schedule and triggers),
    ``now`` asks for a run at once. Triggers: ``on`` (an alert rule, added to the deployment
    with ``alert_k``), ``every`` (``"1d"``) or ``cron`` (UTC); none: by hand only. The notebook
    gets ``params`` and the job's own (see docs/continuous-training.md). ``gates`` (else the
    champion's last validation's) decide; then ``canary=PERCENT``, ``shadow=True`` (or a
    percent) or ``promote=True``; neither: validate only. Defaults: ``alert_k=3``, ``min_labels=500``,
    ``since="7d"``, ``cell_timeout="1h"``."""
    if notebook is None:
        options = (("--on", on), ("--alert-k", alert_k), ("--every", every), ("--cron", cron), ("--param", params),
                   ("--gate", gates), ("--canary", canary), ("--shadow", shadow), ("--promote", promote or None),
                   ("--promote-when", promote_when), ("--rollback-when", rollback_when), ("--min-labels", min_labels),
                   ("--since", since), ("--webhook", webhook), ("--timeout", cell_timeout), ("--kernel", kernel))
        given = [o for o, v in options if v is not None and v != () and v != [] and v != {}]  # fmt: skip
        if given:
            raise InvalidInputError(f"{', '.join(given)} change the job: give --notebook too (the job is replaced).")
        job = RetrainJob.of(name)
        if resume or now:
            job.resume()
        if now:
            job.trigger()
        return job
    from nbdeploy.retraining.create import create

    action, percent = _action(canary, shadow, promote)
    k = DEFAULT_ALERT_K if alert_k is None else alert_k
    spec = RetrainSpec(deployment=name, notebook=notebook, on=on, alert_k=k, every_s=_duration(every, "--every"),
                       cron=cron, params=parse_params(params if isinstance(params, dict) else list(params)),
                       gates=list(gates), action=action, percent=percent, promote_when=list(promote_when),
                       rollback_when=list(rollback_when), min_labels=500 if min_labels is None else min_labels,
                       since_s=_duration("7d" if since is None else since, "--since") or 0.0, webhook=webhook,
                       cell_timeout_s=_duration("1h" if cell_timeout is None else cell_timeout, "--timeout") or 0.0,
                       kernel=kernel,
                       created=time.time())  # fmt: skip
    job = create(spec)
    if now:
        job.trigger()
    return job
