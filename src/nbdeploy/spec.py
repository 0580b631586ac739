"""The deployment spec: what one deployment serves and how, with every default in one place.

The launcher writes it as ``NBDEPLOY_HOME/NAME/spec.json``; the kernel, the CLI, the server
process, the Ray controller and the Ray replicas read the same object back. It imports no
web stack, so all of them can.

>>> spec = DeploymentSpec(name="cancer", windows=parse_windows("30s,15m"))
>>> spec.alert_window, spec.max_batch
('30s', 1024)
>>> spec.validate()
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nbdeploy._files import write_atomic
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError
from nbdeploy.experiment import ExperimentSpec
from nbdeploy.model_entry import ModelEntry, _ReadAsDict

__all__ = [
    "BATCH_CHUNK_ROWS", "DEFAULTS", "DEFAULT_ALERT_K", "DEFAULT_WINDOWS", "PREDICT_METHODS", "RAY_DEFAULTS",
    "DeploymentSpec", "ModelEntry", "RaySpec", "ServerSettings", "parse_duration", "parse_window", "parse_windows",
]  # fmt: skip

DEFAULT_WINDOWS: dict[str, float] = {"1m": 60.0, "5m": 300.0, "1h": 3600.0}
DEFAULT_ALERT_K = 3  # breaching evaluations before a rule fires (and clean ones before it resolves)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
BATCH_CHUNK_ROWS = 50_000  # rows a batch-scoring chunk holds by default (nbdeploy.deployments.batch)
_LONG_UNITS = {**_UNITS, "d": 86400.0, "w": 7 * 86400.0}  # ages and periods (--since 1d), not windows
SPEC_FILE = "spec.json"
# the methods a request may ask for with {"params": {"predict_method": ...}}, where the model has them
PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba", "decision_function")


def _seconds(text: str, units: dict[str, float]) -> float | None:
    """``text`` (a number and one of ``units``) in seconds; ``None`` when it is not written so."""
    if len(text) < 2 or text[-1] not in units or not text[:-1].replace(".", "", 1).isdigit():
        return None
    return float(text[:-1]) * units[text[-1]]


def parse_window(text: str) -> float:
    """Seconds in a window written ``30s``, ``5m`` or ``1h`` (ValueError otherwise)."""
    text = text.strip()
    seconds = _seconds(text, _UNITS)
    if seconds is None:
        raise ValueError(f"Invalid window {text!r}: use a number followed by s, m or h, for example 5m.")
    if seconds <= 0:
        raise ValueError(f"Invalid window {text!r}: a window lasts more than 0 seconds.")
    return seconds


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in a duration written ``90s``, ``15m``, ``12h``, ``1d`` or ``2w`` (ValueError otherwise)."""
    text = str(text).strip()
    seconds = _seconds(text, _LONG_UNITS)
    if seconds is None:
        raise ValueError(f"Invalid {what} {text!r}: use a number followed by s, m, h, d or w, for example 1d.")
    if not 0 < seconds < 1e11:
        raise ValueError(f"Invalid {what} {text!r}: use more than 0 and less than about 3,000 years.")
    return seconds


def parse_windows(windows: str | Sequence[str]) -> dict[str, float]:
    """``"1m,15m"`` or ``["1m", "15m"]`` -> ``{"1m": 60.0, "15m": 900.0}``; alerts use the first."""
    names = [w.strip() for w in (windows.split(",") if isinstance(windows, str) else windows) if w.strip()]
    if not names:
        raise InvalidInputError("Give at least one monitoring window, for example 1m.", docs=Docs.WINDOWS)
    try:
        return {w: parse_window(w) for w in names}
    except ValueError as exc:
        raise InvalidInputError(str(exc), docs=Docs.WINDOWS) from None


@dataclass
class RaySpec:
    """Where and how a ``--target ray`` deployment runs."""

    replicas: int = 1
    num_cpus: float = 0.5
    address: str | None = None
    started_cluster: bool = False  # nbdeploy started this cluster, so stops it with its last deployment
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    url: str | None = None
    created: float | None = None


@dataclass
class DeploymentSpec(_ReadAsDict):
    """Everything a deployment is started with; ``history[-1]`` is the model it serves."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port; for --target ray, the proxy's (RaySpec.http_port)
    require_token: bool = False
    tls_cert: str | None = None  # HTTPS: the PEM certificate the server presents (clients verify by it)
    tls_key: str | None = None  # and its private key
    insecure_http: bool = False  # plain HTTP off loopback, asked for explicitly (--insecure-http)
    max_batch: int = 1024
    max_wait_ms: float = 2.0
    max_body_bytes: int = 16 << 20
    attach_to: int | None = None  # the kernel's pid when the server ends with it
    monitor: bool = True
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alert_interval_s: float = 5.0
    log_rows: int = 100  # rows of inputs and predictions kept per request in the request log
    log_max_bytes: int = 64 << 20  # the request log rotates past this size
    log_inputs: str = "full"  # what of the inputs reaches the log: full, hashed or none (nbdeploy.privacy)
    redact: list[str] = field(default_factory=list)  # columns logged as keyed hashes
    retention_s: float | None = None  # records older than this leave every log
    core_hour_price: float | None = None  # price of one CPU core for an hour: the cost figures of /monitor
    windows: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WINDOWS))
    history: list[ModelEntry] = field(default_factory=list)
    target: str = "local"
    ray: RaySpec | None = None
    experiment: ExperimentSpec | None = None  # a challenger beside history[-1] (nbdeploy.experiment)

    @property
    def alert_window(self) -> str:
        """Alert rules are evaluated on the first window."""
        return next(iter(self.windows))

    @property
    def current(self) -> ModelEntry:
        return self.history[-1]

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` with one sentence for the first value out of range."""
        for label, value in (("max wait", self.max_wait_ms), ("alert interval", self.alert_interval_s),
                             ("CPUs per replica", self.ray.num_cpus if self.ray else 0.0)):  # fmt: skip
            if not math.isfinite(value):
                raise InvalidInputError(f"Invalid {label} {value}: use a finite number.")
        if not 0 <= self.port <= 65535:
            raise InvalidInputError(f"Invalid port {self.port}: use 1-65535, or 0 for a free port.")
        if self.max_batch < 1:
            raise InvalidInputError(f"Invalid max batch {self.max_batch}: a predict call takes at least 1 row.")
        if self.max_wait_ms < 0:
            raise InvalidInputError(f"Invalid max wait {self.max_wait_ms} ms: use 0 or more milliseconds.")
        if self.max_body_bytes < 1:
            raise InvalidInputError(f"Invalid body limit {self.max_body_bytes} bytes: use a positive size.")
        if self.alert_interval_s <= 0:
            raise InvalidInputError(f"Invalid alert interval {self.alert_interval_s} s: use a positive number.")
        if not self.windows:
            raise InvalidInputError("Give at least one monitoring window, for example 1m.", docs=Docs.WINDOWS)
        if self.log_inputs not in ("full", "hashed", "none"):
            raise InvalidInputError(
                f"Invalid --log-inputs {self.log_inputs!r}: use full, hashed or none.", docs=Docs.PRIVATE_LOGS
            )
        if self.retention_s is not None and not (math.isfinite(self.retention_s) and self.retention_s > 0):
            raise InvalidInputError(f"Invalid retention {self.retention_s}: use a duration such as 30d.")
        if self.core_hour_price is not None and not (math.isfinite(self.core_hour_price) and self.core_hour_price >= 0):
            raise InvalidInputError(f"Invalid core-hour price {self.core_hour_price}: use a number of 0 or more.")
        if self.target not in ("local", "ray"):
            raise InvalidInputError(f"Unknown target {self.target!r}: use local or ray.")
        if self.ray is not None:
            if self.ray.replicas < 1:
                raise InvalidInputError(
                    f"Invalid replica count {self.ray.replicas}: a Ray deployment needs at least 1 replica."
                )
            if self.ray.num_cpus < 0:
                raise InvalidInputError(f"Invalid CPUs per replica {self.ray.num_cpus}: use 0 or more.")

    # on disk -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DeploymentSpec:
        """The spec in ``doc``; keys this version does not know are ignored (older files
        carry derived values such as ``alert_window``)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["history"] = [ModelEntry.from_dict(e) for e in doc.get("history", [])]
        if doc.get("ray") is not None:
            ray_known = {f.name for f in fields(RaySpec)}
            values["ray"] = RaySpec(**{k: v for k, v in doc["ray"].items() if k in ray_known})
        values["windows"] = {str(k): float(v) for k, v in (doc.get("windows") or DEFAULT_WINDOWS).items()}
        if doc.get("experiment") is not None:
            values["experiment"] = ExperimentSpec.from_dict(doc["experiment"])
        return cls(**values)

    @classmethod
    def load(cls, folder: Path) -> DeploymentSpec:
        """The spec saved in ``folder``; a damaged file is one sentence naming it."""
        path = folder / SPEC_FILE
        try:
            spec = cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise DeploymentError(
                f"The spec of deployment {folder.name!r} ({path}) cannot be read ({type(exc).__name__}); "
                "stop it and serve it again to write a new one."
            ) from None
        if not spec.history:
            raise DeploymentError(f"The spec of deployment {folder.name!r} ({path}) names no model; serve it again.")
        return spec

    def save(self, folder: Path) -> None:
        write_atomic(folder / SPEC_FILE, json.dumps(self.to_dict(), indent=2))

    # for the server ----------------------------------------------------------------------

    def server_settings(
        self, *, token: str | None, folder: Path | None, entry: ModelEntry | None = None, **overrides: Any
    ) -> ServerSettings:
        """The settings of a server for ``entry`` (default: the current model) of this spec.

        ``overrides`` set fields that depend on where the server runs (a Ray replica serves
        with ``monitor=False, reload=False, proxy_request_id=True``).
        """
        entry = entry or self.current
        monitor = overrides.pop("monitor", self.monitor)
        running = self.experiment.to_dict() if self.experiment and entry is self.current else None
        experiment = overrides.pop("experiment", running)  # a Ray replica's: the challenger unpacked on its node
        return ServerSettings(
            name=self.name, ref=entry.ref, version=entry.version, token=token, require_token=self.require_token,
            max_body_bytes=self.max_body_bytes, max_batch=self.max_batch, max_wait_ms=self.max_wait_ms,
            log_rows=self.log_rows, monitor=monitor, profile=entry.profile() if monitor else None, task=entry.task,
            alerts=list(self.alerts), windows=dict(self.windows), alert_window=self.alert_window,
            alert_interval_s=self.alert_interval_s, folder=str(folder) if folder else None,
            experiment=experiment, log_inputs=self.log_inputs, redact=list(self.redact), retention_s=self.retention_s,
            core_hour_price=self.core_hour_price, **overrides,
        )  # fmt: skip


DEFAULTS = DeploymentSpec(name="-")  # every default, for signatures and help texts elsewhere
RAY_DEFAULTS = RaySpec()


@dataclass
class ServerSettings:
    """What one server needs besides its model; built by :meth:`DeploymentSpec.server_settings`
    (defaults are the spec's, for apps built directly in tests)."""

    name: str
    ref: str
    version: int | None = None
    token: str | None = field(default=None, repr=False)
    require_token: bool = DEFAULTS.require_token
    max_body_bytes: int = DEFAULTS.max_body_bytes
    max_batch: int = DEFAULTS.max_batch
    max_wait_ms: float = DEFAULTS.max_wait_ms
    log_rows: int = DEFAULTS.log_rows
    monitor: bool = DEFAULTS.monitor
    profile: dict[str, Any] | None = None
    task: str | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WINDOWS))
    alert_window: str = DEFAULTS.alert_window
    alert_interval_s: float = DEFAULTS.alert_interval_s
    folder: str | None = None
    reload: bool = True  # False on a Ray replica: the model changes by a rolling update instead
    # Behind Ray's proxy, which gives every request an x-request-id and echoes it in the
    # response itself: take that id as it is and do not add a second header.
    proxy_request_id: bool = False
    # large bodies parsed in a process of the server's own (serving/bodies.py); a Ray
    # replica parses in a thread
    parse_process: bool = True
    shadow_actor: bool = False  # a Ray replica's shadow predicts in a Ray actor (serving/ray_shadow.py)
    # the Ray hub application to which that actor sends a shadow's records, when it reads the
    # replica's log (serving/ray_follower.py)
    shadow_hub: str | None = None
    experiment: dict[str, Any] | None = None  # ExperimentSpec.to_dict() of the running experiment
    log_inputs: str = DEFAULTS.log_inputs
    redact: list[str] = field(default_factory=list)
    retention_s: float | None = DEFAULTS.retention_s
    core_hour_price: float | None = None
    token_book: dict[str, list[str]] | None = field(default=None, repr=False)  # a Ray replica's (no token file)
    token_issued: float = 0.0  # when the kernel issued that book
    log_key: str | None = field(default=None, repr=False)  # a Ray replica's key of hashed inputs (hex)
    audit_folder: str | None = None  # a Ray replica's folder on its machine, for its lines of audit.jsonl
    # seconds between looks of the process that parses the log ahead of an export
    # (nbdeploy.deployments.log_converter); 0: none is started
    log_columns_s: float = 10.0
