"""What happened to a model version in the registry, as version tags that accumulate.

Each validation, promotion (forced or not) and refused promotion adds one tag,
``nbdeploy.event.<UTC time>.<kind>`` = one sentence; the key's time orders them, and unlike
``nbdeploy.validation`` (the latest only) none is overwritten. MLflow's UI lists them with
the version's other tags. The model card (:mod:`nbdeploy.cards`) reads them beside the
deployments' ``events.jsonl``.

>>> record_event(client(), mv, "promoted", "to @champion")        # doctest: +SKIP
>>> [(e["event"], e["detail"]) for e in version_events(mv)]          # doctest: +SKIP
[('validated', 'passed (1 of 1 gates passed)'), ('promoted', 'to @champion')]
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from nbdeploy.registry.versions import EVENT_TAGS

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nbdeploy.registry.versions import ModelVersion

__all__ = ["EVENT_PREFIX", "record_event", "tag_event", "version_events"]

EVENT_PREFIX = EVENT_TAGS
_STAMP = "%Y%m%dT%H%M%S.%fZ"


def record_event(c: MlflowClient, mv: ModelVersion, kind: str, detail: str) -> None:
    """Add one event tag to the version (the caller holds ``mlflow_errors``)."""
    stamp = datetime.now(timezone.utc).strftime(_STAMP)
    c.set_model_version_tag(mv.name, str(mv.version), f"{EVENT_PREFIX}{stamp}.{kind.replace(' ', '_')}", detail[:5000])


def tag_event(name: str, version: int, kind: str, detail: str) -> None:
    """:func:`record_event` for a version named by ``name`` and ``version`` (a deployment's
    audit lines: ``deployment_served``, ``deployment_updated``…)."""
    from nbdeploy.registry._store import client, mlflow_errors

    stamp = datetime.now(timezone.utc).strftime(_STAMP)
    with mlflow_errors(f"tagging {name}/{version}"):
        client().set_model_version_tag(name, str(version), f"{EVENT_PREFIX}{stamp}.{kind.replace(' ', '_')}",
                                       detail[:5000])  # fmt: skip


def version_events(tags: dict[str, str]) -> list[dict[str, Any]]:
    """The events in a version's tags, oldest first: ``{"ts", "event", "detail"}``."""
    out = []
    for key, detail in tags.items():
        if not key.startswith(EVENT_PREFIX):
            continue
        stamp, _, kind = key[len(EVENT_PREFIX) :].rpartition(".")
        try:
            when = datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:  # a tag someone else wrote under our prefix
            continue
        out.append({"ts": when, "event": kind.replace("_", " "), "detail": detail})
    return sorted(out, key=lambda e: e["ts"])
