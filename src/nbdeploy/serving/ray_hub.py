"""The monitoring hub of a Ray deployment: one Serve replica fed by every serving replica.

Records arrive in bursts from each replica; they are held :data:`HUB_LAG_S` seconds and
released in time order, so the rings stay sorted and the merged figures are those of the
union of all requests (percentiles included), not an average of per-replica figures.

What the hub must not lose when Ray restarts it is kept in the deployment folder: the model
it measures drift against and the alert rules (``hub.json``), the requests (the replicas'
request logs) and the labels (``feedback.jsonl``).
"""

from __future__ import annotations

import collections
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ray import serve

from nbdeploy._files import write_atomic
from nbdeploy.monitoring.alerts import AlertBook, RuleError, attach_alerts, with_alert_window
from nbdeploy.monitoring.resources import ResourceMeter, merge_windows
from nbdeploy.monitoring.windows import RequestWindows
from nbdeploy.privacy import LogPrivacy, key_from_hex
from nbdeploy.serving.hub_experiment import ExperimentMethods, HubExperiment
from nbdeploy.serving.hub_forget import ForgetMethods, HubForget, hub_part
from nbdeploy.serving.hub_retention import ORPHAN_S, HubRetention
from nbdeploy.serving.hub_tokens import HubTokens, TokenMethods
from nbdeploy.serving.log_columns_process import LogColumns
from nbdeploy.serving.ray_node import node_folder
from nbdeploy.serving.requestlog import apply_labels, feedback_log
from nbdeploy.spec import DeploymentSpec

__all__ = ["HUB_LAG_S", "HUB_PROTOCOL", "Hub"]

HUB_LAG_S = 1.5  # records from several replicas are put in time order once they are this old
# what the replicas ask of the hub; a hub of another (an earlier nbdeploy's) is replaced on update
HUB_PROTOCOL = 2
_OWNERS = 500_000  # request id -> replica, for labels; the oldest are forgotten first


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class Hub(ForgetMethods, TokenMethods, ExperimentMethods):
    """Windows of the whole deployment and of each replica, from every replica's records."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.spec = DeploymentSpec.from_dict(args["spec"])
        self.folder = node_folder(args)
        self.columns: list[str] = args["columns"]
        self.windows = dict(self.spec.windows)
        self.horizon = max(self.windows.values())
        self.started = time.time()
        self.model: dict[str, Any] = {"ref": None, "version": None, "profile": None, "task": None, "deployed_at": 0}
        self.all = RequestWindows(self.columns, None, None, self.windows)
        self.all.resources = self  # window(): the sum over the replicas' meters
        self.per: dict[str, RequestWindows] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.owner: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.pending: list[tuple[str, tuple[Any, ...]]] = []
        self.pending_batches: list[tuple[str, tuple[float, int, int]]] = []
        self.lock = threading.RLock()
        self.alerts = AlertBook(self.folder / "alerts.jsonl", window=self.spec.alert_window)
        self.alerts.set_rules(self.spec.alerts)
        self.feedback_log = feedback_log(self.folder)
        self.alert_window = self.spec.alert_window
        self.experiment = HubExperiment(self.folder, self.columns, self.alerts)
        saved = self._load_state()
        self.tokens = HubTokens.restored((saved or {}).get("tokens"), args.get("token_book"), args.get("issued", 0))
        if saved is not None:  # Ray restarted this hub: carry on with the model, rules and tokens of before
            self._set_model(saved["model"])
            self.alerts.set_rules(saved["alerts"])
        matcher = LogPrivacy("full", (), key_from_hex(args.get("log_key")), lambda: self.columns)
        finish = hub_part(self.folder, self.feedback_log, matcher, self._live, self.started)
        self.forgets = HubForget(finish, self._live)
        self.rebuilt = self._rebuild()
        self.stopping = threading.Event()
        self.retention = (HubRetention(self.folder, self.spec.retention_s, self.feedback_log, self._live, self.started)
                          if self.spec.retention_s else None)  # fmt: skip
        loops = [("release", 0.5, lambda: self._release(time.time() - HUB_LAG_S), "monitoring hub fold"),
                 ("alerts", self.spec.alert_interval_s, self._alert_step, "alert evaluation"),
                 ("decisions", 1.0, self.experiment.decide, "experiment decision")]  # fmt: skip
        if self.retention is not None:
            loops.append(("retention", self.retention.interval, self.retention.run, "retention"))
        self.log_columns = LogColumns(str(self.folder), self.spec.log_inputs)  # every replica's log here
        self.log_columns.start()
        for name, *loop in loops:
            threading.Thread(target=self._every, args=loop, daemon=True, name=f"nbdeploy-hub-{name}").start()

    # state that survives a restart ---------------------------------------------------------

    def _load_state(self) -> dict[str, Any] | None:
        """``hub.json`` when it belongs to this deployment (not to an earlier one of the name)."""
        try:
            state: dict[str, Any] = json.loads((self.folder / "hub.json").read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("created") == self.args.get("created") else None

    def _save_state(self) -> None:
        with self.lock:  # one state at a time: a save never writes back what another just replaced
            state = {"created": self.args.get("created"), "model": self.model, "alerts": self.alerts_specs(),
                     "tokens": self.tokens.state()}  # fmt: skip
            write_atomic(self.folder / "hub.json", json.dumps(state), private=True)  # token hashes

    def alerts_specs(self) -> list[dict[str, Any]]:
        return [{"rule": r.text, "k": r.k, "webhook": r.webhook} for r in self.alerts.rules]

    def _rebuild(self) -> int:
        """Queue the logged requests still inside the longest window and replay the labels,
        so a hub that Ray restarted starts from everything that was answered."""
        from nbdeploy.monitoring.replay import logged_feedback, logged_request, read_records

        self.rebuilt_at = time.time()
        self.rebuilt_ids: set[str] = set()  # what replicas forwarded before the restart may arrive too
        count, book = 0, self.experiment.book
        for path in sorted(self.folder.glob("requests-*.jsonl")):
            replica = path.name.removeprefix("requests-").removesuffix(".jsonl")
            records = read_records(path)  # once, for the windows and the experiment's accounts
            self.experiment.ingest_logged(records)  # (since the experiment began; nothing without one)
            items = [i for r in records if (i := logged_request(r, self.rebuilt_at - self.horizon)) is not None]
            if items:
                self._replica(replica)
                self.meta[replica] = {"pid": None, "node": None, "last_seen": max(i[0] for i in items)}
                self.pending.extend((replica, item) for item in items)
                self._own(replica, items)
                self.rebuilt_ids.update(item[3] for item in items)
                count += len(items)
        if count or book is not None:
            since = min(self.rebuilt_at - self.horizon, book.spec.started if book else math.inf)
            for rid, labels in logged_feedback(self.folder / "feedback.jsonl", since=since):
                self._label(rid, labels)
        return count

    # records ---------------------------------------------------------------------------

    def _replica(self, replica: str) -> RequestWindows:
        if replica not in self.per:
            windows = RequestWindows(self.columns, self.model.get("profile"), self.model.get("task"), self.windows)
            windows.resources = ResourceMeter(self.windows.values(), self.spec.core_hour_price)
            self.per[replica] = windows
        return self.per[replica]

    def window(self, now: float, seconds: float) -> dict[str, Any] | None:
        """What the deployment's replicas cost over a window: their meters summed."""
        with self.lock:
            meters = [w.resources for w in self.per.values()]
        return merge_windows((m.window(now, seconds) for m in meters), self.spec.core_hour_price)

    def _own(self, replica: str, items: Sequence[tuple[Any, ...]]) -> None:
        for item in items:
            self.owner[item[3]] = replica
        while len(self.owner) > _OWNERS:
            self.owner.popitem(last=False)

    def _set_model(self, config: dict[str, Any]) -> None:
        self.model = dict(config)
        with self.lock:
            for windows in [self.all, *self.per.values()]:
                windows.set_profile(config.get("profile"), config.get("task"))
        self.experiment.configure(config.get("experiment"), config.get("task"), config.get("profile"))

    def reconfigure(self, config: dict[str, Any]) -> None:
        """The model being served: from the app's ``user_config`` when Serve starts the hub, and
        from ``ray_ctl`` on every update. An older deployment's config (Serve replays the first
        one when it restarts the hub) never replaces a newer one."""
        if config.get("deployed_at", 0) >= self.model.get("deployed_at", 0):
            self._set_model(config)
            self._save_state()

    def record(
        self,
        replica: str,
        meta: dict[str, Any],
        requests: Sequence[tuple[Any, ...]],
        batches: Sequence[tuple[float, int, int]],
        records: Sequence[dict[str, Any]] = (),
        token_digest: str | None = None,
        done: dict[int, Any] | None = None,
    ) -> dict[str, Any]:
        """What a replica answered: ``requests`` for the windows, and the request-log
        ``records`` of a running experiment (both variants, a shadow's too) for its accounts;
        and the forget orders it ``done``. The answer: the token book when the replica's
        (``token_digest``) is not the hub's, and the forget orders it has not done."""
        self.forgets.report(replica, done)
        with self.lock:
            if self.rebuilt_ids:  # already read from the request logs
                if time.time() > self.rebuilt_at + 600:
                    self.rebuilt_ids = set()
                requests = [r for r in requests if r[3] not in self.rebuilt_ids]
                records = [r for r in records if r.get("id") not in self.rebuilt_ids]
            self.experiment.ingest(records)
            reading = meta.pop("resources", None)
            self.meta[replica] = {**meta, "last_seen": time.time()}
            if isinstance(reading, (list, tuple)) and len(reading) == 4:
                self._replica(replica).resources.add_sample(*reading)
                # the running totals as read (time, CPU s, RSS, predictions): a load test's before and after
                self.meta[replica]["reading"] = list(reading)
            self._replica(replica)
            self._own(replica, requests)
            self.pending.extend((replica, r) for r in requests)
            self.pending_batches.extend((replica, b) for b in batches)
            book = self.tokens.for_replica(replica, token_digest)
        return {"tokens": book, "orders": self.forgets.pending_for(replica)}

    def _release(self, cut: float) -> None:
        with self.lock:
            ready = sorted((p for p in self.pending if p[1][0] <= cut), key=lambda p: p[1][0])
            self.pending = [p for p in self.pending if p[1][0] > cut]
            ready_b = sorted((p for p in self.pending_batches if p[1][0] <= cut), key=lambda p: p[1][0])
            self.pending_batches = [p for p in self.pending_batches if p[1][0] > cut]
            for replica, item in ready:
                self.all.add(*item)
                self._replica(replica).add(*item)
            for replica, b in ready_b:
                self.all.add_batch(*b)
                self._replica(replica).add_batch(*b)
            gone = [rid for rid, m in self.meta.items() if m["last_seen"] < cut - self.horizon]
            for rid in gone:  # replicas replaced by updates or restarts, out of every window
                self.per.pop(rid, None)
                self.meta.pop(rid, None)
            for windows in [self.all, *self.per.values()]:
                windows.fold()

    def _every(self, seconds: float, step: Any, what: str) -> None:
        """``step()`` every ``seconds`` until the hub stops; a failure is said and the next look tries again."""
        while not self.stopping.wait(seconds):
            try:
                step()
            except Exception as exc:  # monitoring and decisions must keep going
                print(f"{what} failed: {type(exc).__name__}: {exc}", flush=True)

    def _alert_step(self) -> None:
        if self.alerts.rules:
            with self.lock:
                doc = self.all.snapshot(time.time(), [self.alert_window])
            self.alerts.evaluate(doc["windows"][self.alert_window])

    # what the replicas ask on behalf of clients ----------------------------------------

    def snapshot(self, names: list[str] | None = None) -> dict[str, Any]:
        """The ``/monitor`` document: the deployment as a whole, plus ``replicas``."""
        now = time.time()
        with self.lock:
            doc = attach_alerts(self.all.snapshot(now, with_alert_window(names, self.alerts)), self.alerts, names)
            doc["replicas"] = {rid: {**self.meta[rid], "windows": windows.snapshot(now, names)["windows"]}
                               for rid, windows in self.per.items() if rid in self.meta}  # fmt: skip
        doc.update(
            name=self.spec.name, ref=self.model.get("ref"), version=self.model.get("version"), now=now,
            uptime_s=round(now - self.started, 3), columns=self.columns,
            task=self.all.task, target="ray", hub={"pid": os.getpid(), "rebuilt": self.rebuilt,
                                                  "deleted": self.retention.deleted if self.retention else None},
            experiment=self.experiment.state()["experiment"],
        )  # fmt: skip
        return doc

    def _label(self, rid: str, labels: list[Any]) -> bool:
        """Labels go to the whole deployment and to the replica that answered the request
        (a request not seen yet keeps them until it arrives, as the local server does)."""
        known = self.all.feedback(rid, labels)
        known = self.experiment.label(rid, labels) or known
        replica = self.owner.get(rid)
        if replica is not None and replica in self.per:
            self.per[replica].feedback(rid, labels)
        return known or replica is not None

    def feedback(self, ids: list[str], targets: list[Any]) -> dict[str, Any]:
        with self.lock:
            return apply_labels(ids, targets, self._label, self.feedback_log)

    def _live(self) -> set[str]:
        """The replicas that reported within :data:`ORPHAN_S` (one rebuilt from its log has no pid)."""
        with self.lock:
            now = time.time()
            return {r for r, m in self.meta.items() if m.get("pid") is not None and now - m["last_seen"] < ORPHAN_S}

    def protocol(self) -> int:
        return HUB_PROTOCOL

    def set_alerts(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            self.alerts.set_rules(rules)
        except RuleError as exc:
            return {"error": str(exc)}
        except (ValueError, KeyError, TypeError):  # a 'k' that is not a number, a rule that is not a dict
            return {"error": "The body must be JSON with a 'rules' list of {'rule': ..., 'k': ..., 'webhook': ...}."}
        self._save_state()
        return dict(self.alerts.to_dict())

    def __del__(self) -> None:
        self.stopping.set()
        if hasattr(self, "log_columns"):  # not when __init__ failed before it
            self.log_columns.stop()
