"""Everything a model card says, gathered from the registry and the deployment folders.

>>> facts = gather(nbdeploy.resolve("cancer/2"))   # doctest: +SKIP
>>> [e["event"] for e in facts.history]              # doctest: +SKIP
['registered', 'validated', 'promoted', 'served']
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["INTENDED_USE_TAG", "CardFacts", "gather"]

INTENDED_USE_TAG = "nbdeploy.intended_use"
#: Lineage tags shown on the card, in this order, with their labels.
LINEAGE = (("notebook.path", "notebook"), ("git.commit", "git commit"), ("git.dirty", "uncommitted changes"),
           ("data.fingerprint", "training data hash"), ("user", "registered by"), ("python.version", "Python"),
           ("sklearn.version", "scikit-learn"), ("nbdeploy.version", "nbdeploy"))  # fmt: skip


@dataclass
class CardFacts:
    name: str
    version: int
    aliases: list[str]
    created: str
    description: str
    intended_use: str
    lineage: list[tuple[str, str]]
    task: str | None
    training_metrics: dict[str, float]
    profile: dict[str, Any] | None
    validation: dict[str, Any] | None  # the latest validation.json
    validation_uri: str | None
    loadtest: dict[str, Any] | None = None  # the summary of the latest load test (registry/loadtests.py)
    history: list[dict[str, Any]] = field(default_factory=list)  # {"ts", "event", "detail", "source"}

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


def _latest_validation(mv: Any) -> dict[str, Any] | None:
    from nbdeploy.errors import TrackingError
    from nbdeploy.registry._store import client, mlflow_errors

    run_id = mv.tags.get("nbdeploy.validation.run")
    if not run_id:
        return None
    try:
        with mlflow_errors(f"reading the validation of {mv.ref}"), tempfile.TemporaryDirectory() as tmp:
            path = client().download_artifacts(run_id, "validation/validation.json", tmp)
            doc = json.loads(Path(path).read_text())
    except (TrackingError, ValueError, OSError):  # its run deleted, or the file damaged: the card says so
        return {"verdict": "unreadable", "unreadable": True}
    return doc if isinstance(doc, dict) else None


def _experiment_ends(tags: dict[str, str]) -> list[dict[str, Any]]:
    """How the server ended experiments of this version (``nbdeploy.experiment.<action>`` =
    ``<UTC time>: why``; the latest of each action)."""
    from nbdeploy.registry.experiment_tags import TAG_PREFIX

    out = []
    for key, value in tags.items():
        if not key.startswith(TAG_PREFIX):
            continue
        stamp, _, why = value.partition(": ")
        try:
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
        out.append({"ts": when, "event": f"experiment {key[len(TAG_PREFIX) :].replace('_', ' ')}", "detail": why})
    return out


def _deployment_event(doc: dict[str, Any], ref: str) -> tuple[str, str]:
    """One deployment event as (event, detail), from the version's point of view: the one
    served, an experiment's challenger, or the one replaced."""
    where, event = f"deployment {doc.get('deployment')}", str(doc["event"])
    if doc.get("challenger") == ref and doc.get("model") != ref:
        why = f": {doc['why']}" if doc.get("why") else ""
        beside = f", beside {doc['model']}" if doc.get("model") else ""
        return f"{event} (as challenger)" if doc.get("model") else event, f"{where}{beside}{why}"
    if doc.get("model") == ref:
        before = f" (was {doc['previous']})" if doc.get("previous") and doc.get("previous") != ref else ""
        challenger = f", challenger {doc['challenger']}" if doc.get("challenger") else ""
        return event, f"{where}{before}{challenger}" + (f", {doc['target']}" if doc.get("target") else "")
    return f"{event} (away from this version)", f"{where}: replaced by {doc.get('model')}"


def history(mv: Any, created_ts: float) -> list[dict[str, Any]]:
    """Every event of the version, oldest first: its registration, the registry's events,
    the server's experiment ends, and the deployments' events."""
    from nbdeploy.deployments import events
    from nbdeploy.registry.history import version_events

    ref = f"{mv.name}/{mv.version}"
    found = [{"ts": created_ts, "event": "registered", "detail": f"run {mv.run_id}", "source": "registry"}]
    local, here = [], {doc.get("deployment") for doc in events.for_model(ref)}
    # a deployment's events are tagged on the version too (for a team's registry): this machine's
    # are told once, from the deployment's own trail
    found += [{**e, "source": "registry"} for e in version_events(mv.tags)
              if not (e["event"].startswith("deployment ") and e["detail"].split(" by ")[0] in here)]  # fmt: skip
    for doc in events.for_model(ref):
        event, detail = _deployment_event(doc, ref)
        detail += f", by {doc['by']}" if doc.get("by") else ""  # the audit trail's who
        local.append({"ts": doc["ts"], "event": event, "detail": detail, "source": "deployment"})
    seen = {e["event"] for e in local}  # an end this machine's deployment recorded, with its reason
    found += [{**e, "source": "registry"} for e in _experiment_ends(mv.tags) if e["event"] not in seen]
    return sorted(found + local, key=lambda e: e["ts"])


def gather(mv: Any) -> CardFacts:
    from nbdeploy import registry
    from nbdeploy.registry._store import client, mlflow_errors
    from nbdeploy.registry.loadtests import latest_loadtest

    with mlflow_errors(f"reading {mv.ref}"):
        created_ts = client().get_model_version(mv.name, str(mv.version)).creation_timestamp / 1000
    tags = mv.tags
    return CardFacts(
        name=mv.name,
        version=int(mv.version),
        aliases=list(mv.aliases),
        created=mv.created,
        description=mv.description,
        intended_use=tags.get(INTENDED_USE_TAG, ""),
        lineage=[(label, tags[key]) for key, label in LINEAGE if tags.get(key)],
        task=tags.get("nbdeploy.task"),
        training_metrics=dict(mv.metrics),
        profile=registry.load_profile(mv),
        validation=_latest_validation(mv),
        validation_uri=tags.get("nbdeploy.validation.report"),
        loadtest=latest_loadtest(tags),
        history=history(mv, created_ts),
    )
