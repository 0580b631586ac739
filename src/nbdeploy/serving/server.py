"""The state of one running server: the model serving now, its batcher, log and monitors.

The routes read it; :meth:`Server.answered` is the one place where an answered
``/invocations`` request is logged, shown to the observers and counted.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from nbdeploy.experiment import CHALLENGER, CHAMPION
from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.monitoring.resources import ProcessSampler, ResourceMeter
from nbdeploy.monitoring.windows import RequestWindows
from nbdeploy.serving.batching import Batcher
from nbdeploy.serving.bodies import ParsePool
from nbdeploy.serving.experiment_book import last_events, note_event
from nbdeploy.serving.followed_shadow import FollowedShadow
from nbdeploy.serving.loader import LoadedModel
from nbdeploy.serving.metrics import ExperimentCollector, Metrics, MonitorCollector, ResourceCollector
from nbdeploy.serving.protocol import Parsed, Schema
from nbdeploy.serving.requestlog import RequestLog, feedback_log
from nbdeploy.serving.routing import pinned
from nbdeploy.serving.variants import Experiment

if TYPE_CHECKING:
    from nbdeploy.spec import ServerSettings

__all__ = ["Call", "Observer", "Server"]

_RID = re.compile(r"^[\w.\-]{1,64}$")


class Observer(Protocol):
    """Receives every answered request and every batch (as :class:`RequestWindows` does)."""

    def add(self, ts: float, latency_ms: float, status: int, rid: str, inputs: Any = None, predictions: Any = None,
            confidence: Any = None) -> None: ...  # fmt: skip

    def add_batch(self, ts: float, requests: int, rows: int) -> None: ...


@dataclass
class Call:
    """One ``/invocations`` request on its way: what its log record and observers receive."""

    rid: str
    record: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    values: Any = None  # the input rows, in signature order, once parsed
    predictions: Any = None
    parsed: Parsed | None = None
    variant: str = CHAMPION  # who answers it (see nbdeploy.experiment)
    failed: bool = False  # the model failed on it (a 5xx, or a predict that raised)
    routed: bool = False  # split by the experiment at random: what its comparison may count


class Server:
    """Mutable state of one running server: the model serving now, its batcher and log."""

    def __init__(
        self, settings: ServerSettings, model: LoadedModel, log: RequestLog, observers: Sequence[Observer] = ()
    ) -> None:
        self.settings, self.log = settings, log
        self.metrics = Metrics()
        self.metrics.log_dropped.set_function(lambda: self.log.dropped)  # read at scrape time
        self.started = time.time()
        self.mlflow_version = _dist_version("mlflow", "mlflow-skinny")  # the base install has skinny
        self.swap(model, settings.ref, settings.version)
        folder = Path(settings.folder) if settings.folder else None
        self.feedback_log = feedback_log(folder) if folder else None
        self.forgetting: Any = None  # the /admin/forget route's (set by routes())
        if self.feedback_log is not None:
            log_of_labels = self.feedback_log
            self.metrics.feedback_dropped.set_function(lambda: log_of_labels.dropped)
        self.monitor = RequestWindows(self.schema.names, settings.profile, settings.task, settings.windows)
        # what serving costs (monitoring/resources.py): the processes' CPU and memory, per window
        self.log_copy: int | None = None  # the pid of the log's converter, once started
        self.sampler = ProcessSampler(self._roles)
        self.monitor.resources = ResourceMeter(settings.windows.values(), settings.core_hour_price)
        self.metrics.registry.register(ResourceCollector(self.sampler))
        self.alerts = AlertBook(folder / "alerts.jsonl" if folder else None, window=settings.alert_window)
        self.alerts.set_rules(settings.alerts)
        self.observers: list[Observer] = [*([self.monitor] if settings.monitor else []), *observers]
        if settings.monitor:
            self.metrics.registry.register(MonitorCollector(self.monitor, self.alerts, settings.alert_window))
        self.parse_pool = ParsePool()  # started with the app (its lifespan), if ever
        self.experiment: Experiment | FollowedShadow | None = None  # a challenger beside the model (variants.py)
        self.answering = 0  # requests to /invocations being answered (a shadow writes down its mirrors at 0)
        self.metrics.in_flight.set_function(lambda: self.answering)  # one count, read by /metrics
        # /metrics is generated in a worker thread: it reads a copy of the state taken on the loop
        self.experiment_snapshot: dict[str, Any] | None = None
        self.metrics.registry.register(ExperimentCollector(lambda: self.experiment_snapshot))
        self.events: deque[dict[str, Any]] = deque(last_events(folder), maxlen=50)  # experiments decided
        self.batcher = Batcher(
            self._serving,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            on_batch=self._on_batch,
            # the confidences feed the estimated accuracy: only when someone watches (this server's
            # monitor, or a Ray replica's forwarder to its hub)
            scored=bool(self.observers),
        )

    def swap(self, model: LoadedModel, ref: str, version: int | None) -> None:
        """Serve ``model`` from the next batch on."""
        # One assignment of one tuple: a batch reads model and schema together, and a batch
        # in flight keeps the model it started with.
        self._current = (model, Schema.from_signature(model.inputs), ref, version)

    def _serving(self) -> tuple[Any, tuple[str, ...]]:
        model, schema, _, _ = self._current
        return (model.scored_call if self.batcher.scored else model.call), schema.names

    @property
    def model(self) -> LoadedModel:
        return self._current[0]

    @property
    def schema(self) -> Schema:
        return self._current[1]

    @property
    def ref(self) -> str:
        return self._current[2]

    @property
    def version(self) -> int | None:
        return self._current[3]

    def _roles(self) -> dict[int, str]:
        experiment = self.experiment
        pid = getattr(experiment.model, "pid", None) if experiment is not None else None
        roles = {pid: f"{experiment.spec.kind} {experiment.label}"} if experiment is not None and pid else {}
        if self.log_copy is not None:  # the log's converter for exports (log_columns_process.py)
            roles[self.log_copy] = "log copy"
        return roles

    def _on_batch(self, requests: int, rows: int) -> None:
        self.metrics.batch_requests.observe(requests)
        self.metrics.batch_rows.observe(rows)
        now = time.time()
        for observer in self.observers:
            observer.add_batch(now, requests, rows)

    def request_id(self, request: Request) -> str:
        """The client's own ``X-Request-Id`` when it is a sane one, else one of ours."""
        given = request.headers.get("x-request-id")
        if given and (_RID.fullmatch(given) or (self.settings.proxy_request_id and len(given) <= 256)):
            return given
        # unguessable: whoever knows an id can send its label, so ids are not a counter
        return secrets.token_urlsafe(12)

    def route(self, request: Request, call: Call, parsed: Parsed) -> Experiment | None:
        """The experiment whose challenger answers this request, or ``None`` for the champion
        (a pinned variant first, then the canary's split); sets the call's variant."""
        experiment = self.experiment
        split = experiment.split if experiment is not None else None
        pin = pinned(request.headers, self.version, split)
        if experiment is not None and pin is not None:  # the client chose: no random draw to compare
            call.record["pinned"] = True
        call.routed = experiment is not None and pin is None
        if experiment is None or pin == CHAMPION:
            return None
        if pin == CHALLENGER or experiment.split.to_challenger(
            call.rid, experiment.split.sticky_key(request.headers, parsed)
        ):
            # a shadow answers nobody: its split draws no request and pinned() refuses it
            assert isinstance(experiment, Experiment)
            call.variant = experiment.label
            call.record["version"] = experiment.spec.challenger.version
            return experiment
        return None

    def experiment_state(self) -> dict[str, Any] | None:
        experiment = self.experiment
        return experiment.state() if experiment is not None else None

    def record_event(self, event: dict[str, Any], webhook: str | None = None) -> None:
        """An experiment's end (promoted, rolled back, promotion refused): kept, logged, and
        among the alert events (the panel lists them; ``webhook`` receives it)."""
        self.events.append(event)
        note_event(self.settings.folder, self.alerts, event, webhook)

    def label(self, rid: str, labels: list[Any]) -> bool:
        """Attach labels to an answered request: its monitoring rows, and the experiment's figures."""
        known = self.monitor.feedback(rid, labels)
        experiment = self.experiment
        if experiment is not None:
            known = experiment.add_labels(rid, labels) or known
        return known

    def after_answer(self, call: Call, status: int) -> None:
        """Mirror an answered request to a shadow (its answer already on its way)."""
        experiment = self.experiment
        # a request routed before the experiment began belongs to none (its record has no variant)
        if (experiment is not None and status == 200 and call.variant == CHAMPION and call.parsed is not None
                and (call.routed or call.record.get("pinned")) and call.parsed.method == "predict"
                and experiment.split.mirrors(call.rid)):  # fmt: skip
            experiment.mirror(call.parsed, call.rid, call.predictions)

    def answered(self, call: Call, status: int, body: dict[str, Any]) -> None:
        """Log, observe and count an answered request; called before its response is sent,
        so a server killed right after answering has logged it."""
        record, log_rows = call.record, self.settings.log_rows
        if record.get("rows", 0) > log_rows:
            record["truncated"] = True
        latency = time.perf_counter() - call.started
        # windows count requests by the time they were answered: see RequestWindows
        record.update(status=status, latency_ms=round(latency * 1000, 3), answered=time.time())
        if status != 200:
            record["error"] = body["message"]
        experiment, counted = self.experiment, call.routed or record.get("pinned")
        predicted = None if "method" in record else call.predictions  # probabilities are no predictions
        # a record without a variant is the champion's and no experiment's: none runs, or the request
        # failed before it was routed (a bad body); a challenger's answer may end after its experiment
        if (experiment is not None and counted) or call.variant != CHAMPION:
            record["variant"] = call.variant
        self.log.append(record)
        if experiment is not None and counted:
            try:  # requests that failed before routing (a bad body) belong to no variant
                experiment.observe(call.variant, status, call.failed, record["latency_ms"], call.rid,
                                   predicted, inputs=call.values, pinned=not call.routed)  # fmt: skip
            except Exception as exc:  # the accounts must never cost a client its answer
                print(f"experiment: a request was not counted: {type(exc).__name__}: {exc}", flush=True)
        confidence = getattr(predicted, "confidence", None)  # a classifier's, for the estimated accuracy
        for observer in self.observers:
            observer.add(record["answered"], record["latency_ms"], status, call.rid, call.values, predicted,
                         confidence)  # fmt: skip
        self.metrics.requests.labels(str(status)).inc()
        self.metrics.latency.observe(latency)
        if status == 200:  # predictions by the process that made them: the server's, or a challenger's
            challenger = call.variant != CHAMPION and experiment is not None
            role = f"{experiment.spec.kind} {call.variant}" if challenger and experiment else "server"
            self.sampler.count(role, record.get("rows", 0))


def _dist_version(*dists: str) -> str:
    """The version of the first of ``dists`` installed."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
