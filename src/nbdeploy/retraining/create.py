"""Creating a job: every check that can fail does, in the kernel, before a process starts.

The notebook reads as one, papermill (and croniter for ``--cron``) are installed, the
deployment serves a registered model with a ``@champion``, there are gates to decide on,
an experiment's rules parse, and an ``--on`` rule is one of the deployment's alert rules
(added when it is not).
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from nbdeploy._files import write_atomic
from nbdeploy.deployments import processes
from nbdeploy.errors import AliasNotFoundError, Docs, InvalidInputError
from nbdeploy.retraining.job import RetrainJob
from nbdeploy.retraining.notebook import check_notebook
from nbdeploy.retraining.spec import RetrainSpec

__all__ = ["create"]


def _check_installed(spec: RetrainSpec) -> None:
    needed = ["papermill", "pyarrow"] + (["croniter"] if spec.cron else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInputError(
            f"A retraining job needs {' and '.join(missing)}: pip install 'nbdeploy[retrain]'.", docs=Docs.EXTRAS
        )


def _champion(dep: Any, spec: RetrainSpec) -> Any:
    from nbdeploy import registry
    from nbdeploy.refs import parse_ref

    model = parse_ref(dep.spec.current.ref).name
    if model is None:
        raise InvalidInputError(f"{dep.name} serves a run's artifact, not a registered model: serve a version to "
                                "retrain it.")  # fmt: skip
    try:
        champion = registry.resolve(f"{model}@champion")
    except AliasNotFoundError:
        raise InvalidInputError(
            f"{model} has no @champion to compare candidates with: promote one first.", docs=Docs.PROMOTE
        ) from None
    task = str(dep.spec.current.task)
    if task in ("classification", "regression"):  # a metric no candidate of this task has: said now, not per run
        from nbdeploy.validation import metrics
        from nbdeploy.validation.gates import check_metrics, parse_gate

        check_metrics([parse_gate(g) for g in spec.gates], metrics.available(task, True), task)
    recorded = str(champion.tags.get("nbdeploy.validation.gates", "(none)"))
    if not spec.gates and recorded in ("", "(none)"):
        raise InvalidInputError(f"Give --gate (e.g. 'accuracy>=baseline-0.01'): {champion.ref}'s last validation "
                                "had no gates to reuse.", docs=Docs.RETRAIN)  # fmt: skip
    return champion


def _rules(dep: Any, spec: RetrainSpec) -> None:
    """An experiment's default rules, and a check of all of them as ``canary`` would."""
    from nbdeploy.experiment import ExperimentSpec
    from nbdeploy.retraining import DEFAULT_PROMOTE, DEFAULT_ROLLBACK

    if spec.action not in ("canary", "shadow"):
        if spec.promote_when or spec.rollback_when:
            raise InvalidInputError("--promote-when and --rollback-when are a canary's or a shadow's rules: give "
                                    "--canary PERCENT or --shadow too.", docs=Docs.RETRAIN)  # fmt: skip
        return
    current = dep.spec.current
    if not spec.promote_when and not spec.rollback_when:
        spec.promote_when = [DEFAULT_PROMOTE.get(str(current.task), DEFAULT_PROMOTE["classification"])]
        spec.rollback_when = [DEFAULT_ROLLBACK]
    ExperimentSpec(spec.action, current, spec.percent, None, None, 1.0, promote_when=spec.promote_when,
                   rollback_when=spec.rollback_when, min_labels=spec.min_labels,
                   webhook=spec.webhook).validate()  # fmt: skip


def _alert_rule(dep: Any, spec: RetrainSpec) -> None:
    """``--on``: the rule as the deployment's alerts write it, added to them when it is not there."""
    from nbdeploy.deployments.watching import with_baseline
    from nbdeploy.monitoring.alerts import Rule

    if not spec.on:
        return
    text = Rule.parse(with_baseline(spec.on, dep.spec.current.resolved), k=spec.alert_k).text
    spec.on = text
    if any(r.get("rule") == text and int(r.get("k", 0)) == spec.alert_k for r in dep.spec.alerts):
        return
    if dep.state() != "running":
        raise InvalidInputError(f"--on adds {text!r} to {dep.name}'s alert rules, but {dep.name} is {dep.state()}: "
                                "serve it first.", docs=Docs.STATES)  # fmt: skip
    dep.alerts([text], k=spec.alert_k)


def create(spec: RetrainSpec) -> RetrainJob:
    """Check ``spec``, stop the job it replaces, write it and start its process."""
    from nbdeploy import config, registry
    from nbdeploy.deployments import get

    dep = get(spec.deployment)
    spec.notebook = str(check_notebook(spec.notebook))
    spec.validate()
    _check_installed(spec)
    _champion(dep, spec)
    _rules(dep, spec)
    _alert_rule(dep, spec)
    spec.tracking_uri, spec.experiment = absolute_uri(registry.tracking_uri()), config.experiment_name()
    job = RetrainJob(dep.name, dep.path)
    with processes.locked(dep.path):  # one kernel at a time replaces a deployment's job
        job.files.stop()
        spec.save(job.files.spec)
        write_atomic(job.files.state_file, json.dumps({}))  # run numbers go on from runs.jsonl
        job.spawn()
    return job


def absolute_uri(uri: str) -> str:
    """A SQLite or file store named relative to this kernel's folder, made absolute: the job and
    its notebook run in the notebook's folder, where the same words name another store."""
    from pathlib import Path
    from urllib.parse import urlparse

    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if not urlparse(uri).scheme:
        return str(Path(uri).resolve())
    return uri
