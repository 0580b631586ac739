"""One run of a retraining job, step by step; each step is said in the run's record.

1. export the labelled traffic of the last ``since`` (``runs/N/traffic.parquet``);
2. run the notebook with papermill (parameters: that file, the champion, the reason, where
   a holdout may be written), which registers a candidate; find it by the run's id;
3. validate it against ``@champion`` on the holdout the notebook wrote (else on the newest
   labelled traffic, which the notebook never saw) with the job's gates, or the champion's
   last validation's;
4. only if every gate passes: promote and update, or start a canary or shadow and follow it
   to its end (the run lasts as long as the experiment).

A failure at any step leaves ``@champion`` and the deployment as they were; the run ends
``failed`` or ``rejected`` with one sentence, and the webhook hears of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbdeploy.deployments.retrain_files import JobFiles
from nbdeploy.errors import AliasNotFoundError, NbdeployError
from nbdeploy.retraining.spec import RetrainSpec
from nbdeploy.retraining.triggers import Trigger

__all__ = ["ACTING", "HELD_BACK", "Outcome", "RunContext", "run_steps"]

#: Held while a run changes what is served: a stop of the job waits for it, never cuts it in two.
ACTING = threading.Lock()
#: The newest share of the labelled traffic, kept from the notebook to validate on when it writes no holdout.
HELD_BACK = 0.2


class Outcome(Exception):
    """How a run ends early: ``failed`` or ``rejected``, with its sentence."""

    def __init__(self, outcome: str, why: str) -> None:
        super().__init__(why)
        self.outcome, self.why = outcome, why


@dataclass
class RunContext:
    """One run: what it was asked, what it found, and what it says as it goes."""

    spec: RetrainSpec
    files: JobFiles
    number: int
    trigger: Trigger
    stopping: threading.Event
    say: Callable[[str], None]
    found: dict[str, Any] = field(default_factory=dict)  # run_id, candidate, report, ... (the record)

    @property
    def folder(self) -> Path:
        return self.files.run_folder(self.number)


def run_steps(ctx: RunContext) -> tuple[str, str]:
    """Every step of one run; ``(outcome, why)``. Raises :class:`Outcome` to end early."""
    from nbdeploy import registry
    from nbdeploy.deployments import get
    from nbdeploy.refs import parse_ref
    from nbdeploy.registry.retrain_runs import start_retrain_run

    dep = get(ctx.spec.deployment)
    model = parse_ref(dep.spec.current.ref).name
    if model is None:
        raise Outcome("failed", f"{dep.name} serves a run's artifact, not a registered model: nothing to retrain.")
    try:
        champion = registry.resolve(f"{model}@champion")
    except AliasNotFoundError:
        raise Outcome("failed", f"{model} has no @champion to compare a candidate with: promote one first.") from None
    ctx.found["champion"] = champion.ref
    ctx.found["run_id"] = start_retrain_run(dep.name, ctx.number, ctx.trigger.to_dict())
    ctx.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    traffic = _export(ctx, dep)
    _run_notebook(ctx, model, champion.ref, traffic)
    if str(registry.resolve(f"{model}@champion").version) != str(champion.version):
        raise Outcome("failed", f"@champion of {model} moved while the notebook ran (it was {champion.ref}): the "
                                "candidate is not compared with a champion that is not the one served.")  # fmt: skip
    candidate = _candidate(ctx, model)
    report = _validate(ctx, candidate, champion)
    if not report.passed:
        failed = ", ".join(str(g) for g in report.failed_gates)
        counts = f"{len(report.failed_gates)} of {len(report.gates)}"
        raise Outcome("rejected", f"{candidate.ref} failed {counts} gates against {champion.ref}: {failed}; "
                                  f"@champion and {dep.name} are unchanged.")  # fmt: skip
    return _act(ctx, dep, candidate)


def _export(ctx: RunContext, dep: Any) -> Path:
    """The labelled traffic, split by time: the notebook gets the older rows (``traffic.parquet``);
    the newest :data:`HELD_BACK` (``recent.parquet``) are its holdout when it writes none, so a
    candidate is never judged on rows it was trained on."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    everything = ctx.folder / "labelled.parquet"
    exported = dep.export_file(everything, time.time() - ctx.spec.since_s, labelled=True)
    table = pq.read_table(everything)
    table = table.take(pc.sort_indices(table, [(table.column_names[2], "ascending")]))  # by time (the 3rd column)
    kept = round(table.num_rows * HELD_BACK)
    out = ctx.folder / "traffic.parquet"
    pq.write_table(table.slice(0, table.num_rows - kept), out)
    pq.write_table(table.slice(table.num_rows - kept), ctx.folder / "recent.parquet")
    everything.unlink()
    ctx.found.update(traffic_rows=table.num_rows - kept, held_back_rows=kept,
                     label_column=exported.renamed.get("label", "label"),
                     metadata=[exported.renamed.get(c, c) for c in ("request_id", "row", "time", "variant",
                                                                     "model_version")])  # fmt: skip
    ctx.say(f"exported {exported.rows:,} labelled rows of {exported.requests:,} requests: the notebook gets the "
            f"older {table.num_rows - kept:,} ({out}), the newest {kept:,} are held back")  # fmt: skip
    return out


def _run_notebook(ctx: RunContext, model: str, champion: str, traffic: Path) -> None:
    from nbdeploy import config
    from nbdeploy.registry.retrain_runs import ENV_RUN
    from nbdeploy.retraining.notebook import execute

    executed = ctx.folder / "executed.ipynb"
    ctx.found["notebook"] = str(executed)
    params = {**ctx.spec.params, "deployment": ctx.spec.deployment, "model_name": model, "champion": champion,
              "reason": ctx.trigger.reason, "traffic": str(traffic), "holdout": str(ctx.folder / "holdout.parquet"),
              "retrain_run": ctx.found["run_id"]}  # fmt: skip
    env = {ENV_RUN: ctx.found["run_id"], "MLFLOW_TRACKING_URI": ctx.spec.tracking_uri,
           "MLFLOW_EXPERIMENT_NAME": ctx.spec.experiment, "NBDEPLOY_HOME": str(config.home())}  # fmt: skip
    ctx.say(f"running {ctx.spec.notebook}")
    seconds = execute(Path(ctx.spec.notebook), executed, params, env, ctx.spec.cell_timeout_s, ctx.spec.kernel)
    ctx.say(f"the notebook ran in {seconds:.1f} s")


def _candidate(ctx: RunContext, model: str) -> Any:
    from nbdeploy.registry.retrain_runs import candidate

    found = candidate(ctx.found["run_id"])
    ctx.found["candidate"] = found.ref
    if found.name != model:
        raise Outcome("failed", f"The notebook registered {found.ref}, not a version of {model} (the model the "
                                f"deployment serves): register the candidate as {model!r}.")  # fmt: skip
    ctx.say(f"the notebook registered {found.ref}")
    return found


def _holdout(ctx: RunContext, candidate: Any) -> tuple[Any, Any, str]:
    """``(X, y, where)``: the notebook's holdout if it wrote one, else the traffic held back from it."""
    import pandas as pd

    holdout = ctx.folder / "holdout.parquet"
    recent = ctx.folder / "recent.parquet"
    path, where = (holdout, "the notebook's holdout") if holdout.is_file() else (recent, "the newest labelled traffic")
    label = "label" if path == holdout else ctx.found.get("label_column", "label")  # _label when a feature is label
    skip = {label, *ctx.found.get("metadata", [])} if path == recent else {label}
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise Outcome("failed", f"{where} ({path}) cannot be read: {type(exc).__name__}.") from None
    if label not in frame.columns or frame.empty:
        raise Outcome("failed", f"{where} ({path}) has no rows with a 'label' column to validate on: write a "
                                "holdout with one (the notebook's holdout parameter), or send labels to "
                                "/feedback.")  # fmt: skip
    columns = [name for name, _ in candidate.inputs] or [c for c in frame.columns if c not in skip]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise Outcome("failed", f"{where} lacks the candidate's input columns {', '.join(map(repr, missing[:5]))}.")
    return frame[columns], frame[label], where


def _gates(ctx: RunContext, champion: Any) -> list[str]:
    if ctx.spec.gates:
        return list(ctx.spec.gates)
    recorded = str(champion.tags.get("nbdeploy.validation.gates", "")).strip()
    gates = [g.strip() for g in recorded.split(";") if g.strip() and recorded != "(none)"]
    if not gates:
        raise Outcome("failed", f"No gates to decide on: give --gate, or validate {champion.ref} with gates.")
    return gates


def _validate(ctx: RunContext, candidate: Any, champion: Any) -> Any:
    from nbdeploy.validation import validate

    X, y, where = _holdout(ctx, candidate)
    gates = _gates(ctx, champion)
    report = validate(candidate.ref, X, y, gates=gates, baseline=champion.ref, explain=False, latency_calls=20)
    ctx.found.update(verdict=report.verdict, gates=gates, validation_rows=len(X), validated_on=where,
                     report=f"runs:/{report.run_id}/validation/validation.html")  # fmt: skip
    ctx.say(f"validated {candidate.ref} on {len(X):,} rows of {where}: {report.summary()}")
    return report


def _act(ctx: RunContext, dep: Any, candidate: Any) -> tuple[str, str]:
    from nbdeploy import registry
    from nbdeploy.registry.promotion import check_promotable

    spec = ctx.spec
    if spec.action == "none":
        return "validated", f"{candidate.ref} passed every gate; the job was asked to validate only."
    if spec.action == "promote":
        check_promotable(candidate.ref)  # the gate first: a refusal changes nothing
        with ACTING:
            _still_champion(ctx, candidate.name)
            dep.update(candidate.ref)  # refused while an experiment runs or the server is down: nothing moved
            try:
                registry.promote(candidate.ref)
            except BaseException:
                _undo_update(dep, candidate)
                raise
        return "promoted", f"{candidate.ref} passed every gate, is @champion and serves {dep.name}."
    start = dep.canary if spec.action == "canary" else dep.shadow
    with ACTING:
        _still_champion(ctx, candidate.name)
        start(candidate.ref, percent=spec.percent, promote_when=spec.promote_when, rollback_when=spec.rollback_when,
              min_labels=spec.min_labels, webhook=spec.webhook)  # fmt: skip
    ctx.say(f"{spec.action_text} of {candidate.ref} started; waiting for the experiment to end")
    return _follow(ctx, dep, candidate)


def _still_champion(ctx: RunContext, model: str) -> None:
    """Before what is served changes: the job was not stopped, and @champion is still the one
    the candidate was validated against."""
    from nbdeploy import registry

    if ctx.stopping.is_set():
        raise Outcome("stopped", "the job was stopped before the candidate was deployed; nothing changed.")
    if str(registry.resolve(f"{model}@champion").ref) != ctx.found["champion"]:
        raise Outcome("failed", f"@champion of {model} moved during the run (it was {ctx.found['champion']}); "
                                "nothing changed.")  # fmt: skip


def _undo_update(dep: Any, candidate: Any) -> None:
    """The promotion failed after the update: go back, unless the alias did move (MLflow failed
    after it), in which case the deployment serves @champion as it should."""
    from nbdeploy import registry

    try:
        moved = str(registry.resolve(f"{candidate.name}@champion").version) == str(candidate.version)
    except NbdeployError:
        moved = False
    if not moved:
        dep.rollback()


def _follow(ctx: RunContext, dep: Any, candidate: Any) -> tuple[str, str]:
    """Wait for the experiment of ``candidate`` to end (by its rules or by hand); how it ended."""
    from nbdeploy import registry
    from nbdeploy.deployments.events import EXPERIMENT_ENDS, read

    while not ctx.stopping.wait(1.0):
        try:
            running = dep.spec.experiment
        except NbdeployError:
            continue  # the spec being rewritten: look again
        if running is None or running.challenger.resolved != candidate.ref:
            break
    else:
        return "stopped", f"the job stopped while the {ctx.spec.action} of {candidate.ref} runs (it goes on)."
    ends = [e for e in read(dep.path / EXPERIMENT_ENDS) if str(e.get("version")) == str(candidate.version)]
    why = str(ends[-1].get("why", "")) if ends else "concluded by hand"
    champion = registry.resolve(f"{candidate.name}@champion")
    if str(champion.version) == str(candidate.version):
        return "promoted", f"the {ctx.spec.action} promoted {candidate.ref}: {why}"
    return "not promoted", f"the {ctx.spec.action} of {candidate.ref} ended without promotion: {why}"
