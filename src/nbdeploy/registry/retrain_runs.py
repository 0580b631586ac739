"""The MLflow run that records one run of a retraining job, and how its candidate is found.

The job creates the run first and gives its id to the training notebook's kernel in
``NBDEPLOY_RETRAIN_RUN``; :func:`nbdeploy.register` called there tags the version (and its
own run) ``nbdeploy.retrain.run`` with it, so the job finds exactly the version its run
registered, never "the latest". The run ends with tags ``nbdeploy.retrain.*`` (trigger,
candidate, decision, outcome) and the executed notebook as an artifact.

>>> run_id = start_retrain_run("cancer", 3, {"kind": "alert", "reason": "psi>0.2 fired"})   # doctest: +SKIP
>>> candidate(run_id).ref                                                                   # doctest: +SKIP
'cancer/4'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbdeploy.errors import Docs, NbdeployError
from nbdeploy.registry._store import client, experiment_id, mlflow_errors
from nbdeploy.registry.lineage import ENV_RUN, RUN_TAG
from nbdeploy.registry.lookup import fetch_version
from nbdeploy.registry.versions import ModelVersion

__all__ = ["ENV_RUN", "RUN_TAG", "candidate", "finish_retrain_run", "start_retrain_run"]

def start_retrain_run(deployment: str, number: int, trigger: dict[str, Any]) -> str:
    """Create the run of job run ``number``; its id."""
    tags = {"nbdeploy.kind": "retrain", "nbdeploy.retrain.deployment": deployment,
            "nbdeploy.retrain.number": str(number), "nbdeploy.retrain.trigger": str(trigger.get("kind", "?")),
            "nbdeploy.retrain.reason": str(trigger.get("reason", ""))[:5000]}  # fmt: skip
    with mlflow_errors("recording the retraining run"):
        c = client()
        run = c.create_run(experiment_id(c), run_name=f"retrain-{deployment}-{number}", tags=tags)
        return str(run.info.run_id)


def finish_retrain_run(run_id: str, tags: dict[str, str], artifacts: dict[str, Path], failed: bool) -> None:
    """Tag the run with what happened, attach ``artifacts`` (artifact folder -> file) and end it."""
    with mlflow_errors("recording the retraining run"):
        c = client()
        for key, value in tags.items():
            c.set_tag(run_id, key, str(value)[:5000])
        for folder, path in artifacts.items():
            if path.is_file():
                c.log_artifact(run_id, str(path), folder)
        c.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def candidate(run_id: str) -> ModelVersion:
    """The one version registered by the notebook of run ``run_id``."""
    filter_text = f"tags.`{RUN_TAG}` = '{run_id}'"
    with mlflow_errors("finding the version the notebook registered"):
        c = client()
        found = list(c.search_model_versions(filter_text))
        if not found:
            raise NbdeployError("The notebook registered no model version: call nbdeploy.register(model, name, "
                                "X, y) in it (the job finds the version by the run it started, never by "
                                "'latest').", docs=Docs.RETRAIN_NOTEBOOK)
        if len(found) > 1:
            refs = ", ".join(sorted(f"{v.name}/{v.version}" for v in found))
            raise NbdeployError(
                f"The notebook registered {len(found)} versions ({refs}); register one candidate.",
                docs=Docs.RETRAIN_NOTEBOOK,
            )
        return fetch_version(c, found[0].name, int(found[0].version))
