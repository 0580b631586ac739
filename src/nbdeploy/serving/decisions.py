"""Automatic promotion and rollback of a running experiment, decided on its own rules.

Once a second the server asks the experiment for a verdict (:meth:`Experiment.verdict`, on
the always-valid comparison of :mod:`nbdeploy.stats.sequential`, so looking every second does
not raise the false-alarm rate). A **rollback** drops the challenger; a **promotion** first
moves ``@champion`` through the same gated ``promote`` a user runs (``nbdeploy promote``, in a
process of its own: the server imports no registry code), and only if the registry accepts
it does the challenger become the model. Either way the spec is updated (so a restart serves
what was decided), an event is recorded (``experiments.jsonl``, shown by ``%deploy
experiment``, and among the alert events of the panel, sent to the experiment's webhook) and
the challenger's version is tagged ``nbdeploy.experiment.promoted`` / ``rolled_back`` /
``promotion_refused``. A refused promotion leaves rollback rules active.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from nbdeploy.errors import without_docs
from nbdeploy.experiment import ExperimentSpec
from nbdeploy.serving.experiment_routes import load_entry
from nbdeploy.serving.followed_shadow import FollowedShadow
from nbdeploy.serving.server import Server
from nbdeploy.serving.variants import Experiment
from nbdeploy.spec import DeploymentSpec

__all__ = ["act", "decision_loop"]


async def decision_loop(server: Server, interval: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval)
        experiment = server.experiment
        if experiment is None or experiment.deciding:
            continue
        try:
            # the distributions' binning, off the event loop: requests only queue their rows
            await asyncio.to_thread(experiment.fold)
            verdict = experiment.verdict()
            if verdict is not None:
                experiment.deciding = True
                await act(server, experiment, *verdict)
        except Exception as exc:  # a failed decision must not end serving; the next look tries again
            experiment.deciding = False
            print(f"experiment decision failed: {type(exc).__name__}: {exc}", flush=True)


async def act(server: Server, experiment: Experiment | FollowedShadow, action: str, why: str) -> None:
    """Promote or roll back ``experiment`` because ``why``."""
    spec, c = experiment.spec, experiment.spec.challenger
    event = {"ts": time.time(), "action": action, "challenger": c.ref, "version": c.version, "why": why}
    if action == "promote":
        refused = await asyncio.to_thread(move_alias, spec)
        if server.experiment is not experiment:  # ended meanwhile by hand (conclude): that decision stands
            return
        if refused is not None:
            experiment.refuse_promotion(refused)
            experiment.deciding = False
            server.record_event({**event, "action": "promotion refused", "why": refused}, spec.webhook)
            await asyncio.to_thread(tag_version, spec, "promotion_refused", refused)
            return
        model, profile = await asyncio.to_thread(load_entry, server, c.model_path, c.profile_path)
        if server.experiment is not experiment:
            return
        server.swap(model, c.ref, c.version)
        server.monitor.set_profile(profile, c.task)
    server.experiment = None
    await experiment.close(server.batcher)
    if server.settings.folder:
        await asyncio.to_thread(persist, Path(server.settings.folder), spec, action == "promote")
    server.record_event(event, spec.webhook)
    print(f"experiment: {action} {c.ref}: {why}", flush=True)
    await asyncio.to_thread(tag_version, spec, "promoted" if action == "promote" else "rolled_back", why)


def move_alias(spec: ExperimentSpec) -> str | None:
    """Move ``@champion`` to the challenger with ``nbdeploy promote``; ``None``, or why not."""
    c = spec.challenger
    if c.version is None:
        return "the challenger has no registered version, so no alias can move"
    uri = ["--tracking-uri", spec.tracking_uri] if spec.tracking_uri else []
    return _run(["nbdeploy.cli", *uri, "promote", c.resolved or c.ref, "--alias", "champion"])


def tag_version(spec: ExperimentSpec, action: str, why: str) -> None:
    """Tag the challenger's version with how the experiment ended (in a process of its own:
    the server imports no registry code); a failure is a line in the server log."""
    c = spec.challenger
    if c.version is None:
        return
    failed = _run(["nbdeploy.registry.experiment_tags", spec.tracking_uri or "", c.resolved or c.ref, action, why])
    if failed is not None:
        print(f"experiment: tagging {c.ref} failed: {failed}", flush=True)


def _run(module_and_args: list[str]) -> str | None:
    """``python -m MODULE ARGS...``: ``None`` when it exits 0, else its last line of output (the
    CLI's sentence without the docs link it ends with: it goes to a tag and a webhook, cut)."""
    cmd = [sys.executable, "-m", *module_and_args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"python -m {module_and_args[0]} did not finish within 300 s"
    if done.returncode == 0:
        return None
    said = [line for line in without_docs(done.stderr + done.stdout).splitlines() if line.strip()]
    return said[-1][:300] if said else f"python -m {module_and_args[0]} exited with code {done.returncode}"


def persist(folder: Path, decided: ExperimentSpec, promoted: bool) -> None:
    """Write what was decided into the spec (unless the kernel ended that experiment meanwhile)."""
    spec = DeploymentSpec.load(folder)
    if spec.experiment is None or spec.experiment.started != decided.started:
        return
    if promoted:
        spec.history.append(decided.challenger)
    spec.experiment = None
    spec.save(folder)
