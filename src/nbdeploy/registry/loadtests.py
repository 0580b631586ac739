"""Load tests recorded on a model version, as validation is: a run ``loadtest-NAME-V`` with
the figures as metrics (``rps_c16``, ``p99_ms_c16``…) and the report as artefacts, and
version tags that ``promote`` and the model card read.

``nbdeploy.loadtest`` is ``passed`` or ``failed`` (a test without gates changes neither); a
failed one refuses ``promote`` until a later load test passes the gates that failed (or
``--force``).
"""

from __future__ import annotations

import json
from typing import Any

from nbdeploy.registry._store import client, experiment_id, mlflow_errors, tracking_uri, using_tracking_uri
from nbdeploy.registry.history import record_event
from nbdeploy.registry.lookup import resolve

__all__ = ["LOADTEST_FAILED_TAG", "LOADTEST_SUMMARY_TAG", "LOADTEST_TAG", "latest_loadtest", "record_loadtest"]

LOADTEST_TAG = "nbdeploy.loadtest"
LOADTEST_FAILED_TAG = "nbdeploy.loadtest.failed"
LOADTEST_SUMMARY_TAG = "nbdeploy.loadtest.summary"


def record_loadtest(ref: str, doc: dict[str, Any], html: str, text: str) -> str:
    """Log one load test of ``ref``; returns its run id."""
    from mlflow.entities import Metric

    passed = doc.get("passed")
    status = "recorded" if passed is None else "passed" if passed else "failed"
    with mlflow_errors(f"recording the load test of {ref}"), using_tracking_uri(tracking_uri()):
        c, mv = client(), resolve(ref)
        run = c.create_run(experiment_id(c), run_name=f"loadtest-{mv.name}-{mv.version}",
                           tags={"nbdeploy.model_version": mv.ref, "nbdeploy.run": "loadtest"})  # fmt: skip
        run_id = str(run.info.run_id)
        metrics = []
        for lv in doc["levels"]:
            for key in ("rps", "p50_ms", "p99_ms", "error_rate", "cpu_s_per_1k"):
                if lv.get(key) is not None:
                    metrics.append(Metric(f"{key}_c{lv['connections']}", float(lv[key]), int(doc["when"] * 1000), 0))
        if doc.get("peak_rss_mb") is not None:
            metrics.append(Metric("peak_rss_mb", float(doc["peak_rss_mb"]), int(doc["when"] * 1000), 0))
        c.log_batch(run_id, metrics=metrics[:1000],
                    params=[_param("connections", ",".join(str(lv["connections"]) for lv in doc["levels"])),
                            _param("duration_s", doc["seconds"]), _param("rows_per_request", doc["rows_per_request"]),
                            _param("target", doc["target"])])  # fmt: skip
        c.log_text(run_id, html, "loadtest.html")
        c.log_text(run_id, text, "loadtest.txt")
        c.log_text(run_id, json.dumps(doc, indent=1, default=str), "loadtest.json")
        c.set_terminated(run_id)
        summary = {"run_id": run_id, "when": doc["when"], "status": status, "gates": doc["gates"],
                   "best": doc["best"], "peak_rss_mb": doc["peak_rss_mb"], "seconds": doc["seconds"],
                   "replicas": doc.get("replicas", 1), "idle_cpu_pct": doc.get("idle_cpu_pct"),
                   "levels": [{k: lv.get(k) for k in ("connections", "rps", "p50_ms", "p99_ms", "error_rate",
                                                      "cpu_s_per_1k", "cpu_pct")} for lv in doc["levels"]]}  # fmt: skip
        failed = ", ".join(g["gate"] for g in doc["gates"] if not g["passed"])
        verdict, still = _verdict(mv.tags, status, doc["gates"])
        if verdict is not None:
            every = ", ".join(g for g in (failed, still) if g)  # this test's failures and the earlier ones kept
            c.set_model_version_tag(mv.name, str(mv.version), LOADTEST_TAG, verdict)
            c.set_model_version_tag(mv.name, str(mv.version), LOADTEST_FAILED_TAG, every[:5000])
        c.set_model_version_tag(mv.name, str(mv.version), LOADTEST_SUMMARY_TAG, json.dumps(summary)[:5000])
        best = doc.get("best")
        capacity = f", {best['rps']:.0f} req/s at {best['connections']} connections" if best else ""
        kept = f"; still refused: {still} failed before and was not tested again" if still and not failed else ""
        record_event(c, mv, "load tested", f"{status}{': ' + failed if failed else ''}{capacity}{kept} (run {run_id})")
    return run_id


def _verdict(tags: dict[str, str], status: str, gates: list[dict[str, Any]]) -> tuple[str | None, str]:
    """What ``nbdeploy.loadtest`` becomes, and the earlier failed gates that keep it failed.

    A test without gates changes no verdict. A failed one lifts only with a pass of every
    gate that failed (the same text): a pass of easier gates is no answer to it."""
    if status == "recorded":
        return None, ""
    before = [g.strip() for g in (tags.get(LOADTEST_FAILED_TAG) or "").split(",") if g.strip()]
    passed = {r["gate"] for r in gates if r["passed"]}
    # gates that failed before and did not pass now stay failed, whatever else this test did
    missing = [g for g in before if g not in passed] if tags.get(LOADTEST_TAG) == "failed" else []
    if status == "passed" and missing:
        return "failed", ", ".join(missing)
    return status, ", ".join(g for g in missing if g not in {r["gate"] for r in gates})


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value))


def latest_loadtest(tags: dict[str, str]) -> dict[str, Any] | None:
    """The summary of a version's last load test from its tags (``None``: none, or damaged)."""
    try:
        doc = json.loads(tags.get(LOADTEST_SUMMARY_TAG) or "null")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
