"""An experiment in a deployment's spec: a challenger served beside the champion, and how
traffic reaches it. The kernel, the CLI and the server read the same object (no web stack).

A **canary** answers ``percent`` of the requests from the challenger (the same key always
from the same variant with ``sticky_column`` or ``sticky_header``); a **shadow** answers every
request from the champion and sends ``percent`` of them to the challenger too, after the
answer, logging its prediction beside the champion's.

>>> e = ExperimentSpec("canary", ModelEntry("cancer/2", "/m", version=2), percent=10)
>>> e.label, e.validate()
('2', None)
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.model_entry import ModelEntry

__all__ = ["CHAMPION", "KINDS", "VARIANT_HEADER", "ExperimentSpec"]

KINDS = ("canary", "shadow")
# what an experiment measures per variant: per request (errors, latency) or per labelled row
METRICS = ("error_rate", "latency_ms", "accuracy", "mae")
LABEL_METRICS = ("accuracy", "mae")
CHAMPION = "champion"
CHALLENGER = "challenger"
VARIANT_HEADER = "X-Nbdeploy-Variant"  # a client pins the variant that answers it
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP field name (RFC 9110 token)


@dataclass
class ExperimentSpec:
    """The challenger, its share of the traffic and how that share is drawn."""

    kind: str
    challenger: ModelEntry
    percent: float
    sticky_column: str | None = None
    sticky_header: str | None = None
    started: float = 0.0  # also salts the sticky hash: each experiment draws its own split
    promote_when: list[str] = field(default_factory=list)  # every one must hold (nbdeploy.stats.sequential)
    rollback_when: list[str] = field(default_factory=list)  # any one holding ends the experiment
    min_labels: int = 500  # labelled rows per variant before a rule on labels is decided
    tracking_uri: str | None = None  # where an automatic promotion moves @champion
    webhook: str | None = None  # POSTed each end of the experiment (promoted, rolled back, refused)

    @property
    def label(self) -> str:
        """The challenger's name in logs, figures and the variant header: its version."""
        return str(self.challenger.version) if self.challenger.version is not None else CHALLENGER

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` with one sentence for the first value out of range."""
        if self.kind not in KINDS:
            raise InvalidInputError(f"Unknown experiment kind {self.kind!r}: use canary or shadow.")
        if not (math.isfinite(self.percent) and 0 < self.percent <= 100):
            raise InvalidInputError(f"Invalid percent {self.percent}: use a number above 0 and at most 100.")
        if self.kind == "canary" and self.percent == 100:
            raise InvalidInputError("A canary of 100 percent is a new champion: use update (or conclude --promote).")
        if self.sticky_column is not None and self.sticky_header is not None:
            raise InvalidInputError("Give --sticky or --sticky-header, not both.", docs=Docs.ROUTING)
        if self.kind == "shadow" and (self.sticky_column or self.sticky_header):
            raise InvalidInputError(
                "A shadow answers nobody: --sticky and --sticky-header are for a canary.", docs=Docs.ROUTING
            )
        if self.sticky_header is not None and not _HEADER_NAME.fullmatch(self.sticky_header):
            raise InvalidInputError(
                f"Invalid header name {self.sticky_header[:60]!r} for --sticky-header.", docs=Docs.ROUTING
            )
        column = self.sticky_column
        if column is not None and not (isinstance(column, str) and 0 < len(column) <= 256):
            raise InvalidInputError(
                "Invalid column for --sticky: give the name of one of the model's inputs.", docs=Docs.ROUTING
            )
        self._validate_challenger()
        self._validate_rules()

    def _validate_rules(self) -> None:
        from nbdeploy.stats.rules import parse_rule, quantile_level

        rules = [*self.promote_when, *self.rollback_when]
        if len(rules) > 20:
            raise InvalidInputError("Give at most 20 rules to an experiment.", docs=Docs.EXPERIMENT_RULES)
        for rule in rules:
            try:
                metric = parse_rule(rule).metric
            except ValueError as exc:
                raise InvalidInputError(str(exc), docs=Docs.EXPERIMENT_RULES) from None
            if metric not in METRICS and quantile_level(metric) is None:
                raise InvalidInputError(
                    f"An experiment's rules compare {', '.join(METRICS)} or a percentile of latency "
                    f"such as p95_ms; {metric!r} is not one of them.",
                    docs=Docs.EXPERIMENT_RULES,
                )
            if self.kind == "shadow" and (metric == "latency_ms" or quantile_level(metric) is not None):
                raise InvalidInputError(
                    f"Rule {rule!r} compares latency, and a shadow's latency includes its wait to batch mirrors "
                    "and its lowest CPU priority: compare latency in a canary.",
                    docs=Docs.EXPERIMENT_RULES,
                )
        hook = self.webhook
        if hook is not None and not (isinstance(hook, str) and re.fullmatch(r"https?://[^\s]{1,2000}", hook)):
            raise InvalidInputError("Invalid --webhook: give an http:// or https:// URL.")
        n = self.min_labels
        if isinstance(n, bool) or not isinstance(n, int) or not 30 <= n <= 10**9:
            raise InvalidInputError(
                f"Invalid --min-labels {self.min_labels!r}: use a whole number of at least 30.",
                docs=Docs.EXPERIMENT_RULES,
            )

    def _validate_challenger(self) -> None:
        c = self.challenger
        if not isinstance(c.model_path, str) or not c.model_path or "\x00" in c.model_path:
            raise InvalidInputError("The challenger's model_path must be a path.")
        if c.profile_path is not None and (not isinstance(c.profile_path, str) or "\x00" in c.profile_path):
            raise InvalidInputError("The challenger's profile_path must be a path.")
        if not isinstance(c.ref, str) or not 0 < len(c.ref) <= 1000:
            raise InvalidInputError("The challenger's ref must be a model reference, such as cancer/2.")
        if c.version is not None and (isinstance(c.version, bool) or not isinstance(c.version, int) or c.version < 0):
            raise InvalidInputError("The challenger's version must be a whole number.")
        if not (math.isfinite(self.started) and self.started >= 0):
            raise InvalidInputError("The experiment's start time must be a time in seconds.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ExperimentSpec:
        """The experiment in ``doc`` (``ValueError``, ``KeyError``, ``TypeError`` or
        ``OverflowError`` when damaged; :meth:`validate` checks the values)."""
        return cls(
            kind=str(doc["kind"]),
            challenger=ModelEntry.from_dict(doc["challenger"]),
            percent=float(doc["percent"]),
            sticky_column=doc.get("sticky_column"),
            sticky_header=doc.get("sticky_header"),
            started=float(doc.get("started") or 0.0),
            promote_when=list(doc.get("promote_when") or []),
            rollback_when=list(doc.get("rollback_when") or []),
            min_labels=doc.get("min_labels", 500),
            tracking_uri=doc.get("tracking_uri"),
            webhook=doc.get("webhook"),
        )
