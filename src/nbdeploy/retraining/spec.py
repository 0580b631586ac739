"""What a retraining job is asked to do: ``job.json``, checked once where it is given.

>>> RetrainSpec(deployment="cancer", notebook="/work/train.ipynb", every_s=86400.0).trigger_text
'every 1d'
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nbdeploy._files import write_atomic
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError
from nbdeploy.spec import DEFAULT_ALERT_K

__all__ = ["ACTIONS", "INJECTED", "RetrainSpec", "parse_params"]

ACTIONS = ("none", "canary", "shadow", "promote")
#: Parameters the job gives every run of the notebook (a --param may not take their names).
INJECTED = ("deployment", "model_name", "champion", "reason", "traffic", "holdout", "retrain_run")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _units(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_params(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["n_estimators=50", "note=fresh"]`` -> ``{"n_estimators": 50, "note": "fresh"}``: a value
    that reads as a Python literal is one (numbers, booleans, lists), anything else a string."""
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or []:
            key, eq, value = str(item).partition("=")
            if not eq:
                raise InvalidInputError(
                    f"--param {item!r}: write KEY=VALUE, for example n_estimators=50.", docs=Docs.RETRAIN
                )
            pairs.append((key.strip(), value))
    params: dict[str, Any] = {}
    for key, value in pairs:
        if not _IDENT.match(key) or keyword.iskeyword(key):
            raise InvalidInputError(
                f"--param {key!r}: a parameter name is a Python identifier.", docs=Docs.RETRAIN
            )
        if key in INJECTED:
            raise InvalidInputError(
                f"--param {key!r}: the job sets {key} itself (it sets {', '.join(INJECTED)}).",
                docs=Docs.RETRAIN_NOTEBOOK,
            )
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"--param {key!r}: give a number, a string, a boolean or a list of them.", docs=Docs.RETRAIN
            ) from None
        params[key] = value
    return params


def _check_types(spec: RetrainSpec) -> None:
    """TypeError for a value of ``job.json`` that is not of the type the job writes."""
    number = (int, float)
    checks: dict[str, Any] = {"deployment": str, "notebook": str, "on": (str, type(None)), "alert_k": int,
              "every_s": (*number, type(None)), "cron": (str, type(None)), "params": dict, "gates": list,
              "action": str, "percent": number, "promote_when": list, "rollback_when": list, "min_labels": int,
              "since_s": number, "webhook": (str, type(None)), "cell_timeout_s": number,
              "kernel": (str, type(None)), "tracking_uri": str, "experiment": str, "created": number}  # fmt: skip
    for name, kind in checks.items():
        value = getattr(spec, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{name} is {type(value).__name__}")
    if not all(isinstance(x, str) for x in (*spec.gates, *spec.promote_when, *spec.rollback_when)):
        raise TypeError("a gate or rule is not text")


@dataclass
class RetrainSpec:
    """A retraining job: its trigger, the notebook and its parameters, gates and what follows."""

    deployment: str
    notebook: str  # absolute path of the training notebook
    on: str | None = None  # an alert rule of the deployment: a run when it fires
    alert_k: int = DEFAULT_ALERT_K
    every_s: float | None = None
    cron: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    gates: list[str] = field(default_factory=list)  # empty: the champion's last validation's gates
    action: str = "none"
    percent: float = 10.0
    promote_when: list[str] = field(default_factory=list)
    rollback_when: list[str] = field(default_factory=list)
    min_labels: int = 500
    since_s: float = 7 * 86400.0  # the traffic given to the notebook: answered within this age
    webhook: str | None = None
    cell_timeout_s: float = 3600.0
    kernel: str | None = None  # None: the notebook's own kernel
    tracking_uri: str = ""
    experiment: str = ""
    created: float = 0.0

    @property
    def trigger_text(self) -> str:
        if self.on:
            return f"on {self.on} (fires after {self.alert_k} breaches)"
        if self.every_s:
            return f"every {_units(self.every_s)}"
        if self.cron:
            return f"cron {self.cron!r} (UTC)"
        return "by hand only"

    @property
    def action_text(self) -> str:
        if self.action in ("canary", "shadow"):
            share = f" {self.percent:g}%" if self.action == "canary" or self.percent != 100 else ""
            return f"{self.action}{share}"
        return {"promote": "promote and update", "none": "validate only"}[self.action]

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` with one sentence for the first thing that cannot work."""
        if sum(x is not None for x in (self.on, self.every_s, self.cron)) > 1:
            raise InvalidInputError("Give one trigger: --on RULE, --every AGE or --cron EXPR.", docs=Docs.RETRAIN)
        if self.action not in ACTIONS:
            raise InvalidInputError(f"Unknown action {self.action!r}: use one of {', '.join(ACTIONS)}.")
        if not 0 < self.percent <= 100 or not math.isfinite(self.percent):
            raise InvalidInputError(f"Invalid percent {self.percent}: use more than 0 and at most 100.")
        if self.alert_k < 1:
            raise InvalidInputError(
                f"--alert-k {self.alert_k}: a rule fires after at least 1 breach.", docs=Docs.RETRAIN
            )
        if self.every_s is not None and not 1 <= self.every_s < 1e11:
            raise InvalidInputError(f"--every {self.every_s} s: use at least 1 s.", docs=Docs.RETRAIN)
        if not 0 < self.since_s < 1e11:
            raise InvalidInputError(f"--since {self.since_s} s: the traffic given to the notebook needs an age "
                                    "above 0.")  # fmt: skip
        if not self.cell_timeout_s > 0:
            raise InvalidInputError(f"--timeout {self.cell_timeout_s}: use a positive number of seconds.")
        if self.cron is not None:
            from croniter import croniter

            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise InvalidInputError(
                    f"--cron {self.cron!r} is not a cron expression such as '0 3 * * *'.", docs=Docs.RETRAIN
                )
            try:
                croniter(self.cron).get_next(float)
            except Exception:  # valid, but no date ever matches (30 February)
                raise InvalidInputError(
                    f"--cron {self.cron!r} names no time that ever comes.", docs=Docs.RETRAIN
                ) from None
        if self.webhook and not self.webhook.startswith(("http://", "https://")):
            raise InvalidInputError("Invalid --webhook: give an http:// or https:// URL.")
        for gate in self.gates:
            from nbdeploy.validation.gates import parse_gate

            parse_gate(gate)

    # on disk -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trigger_text": self.trigger_text, "action_text": self.action_text}

    @classmethod
    def load(cls, path: Path) -> RetrainSpec:
        """The job in ``path``; a damaged file is one sentence naming it."""
        try:
            doc = json.loads(path.read_text())
            known = {f.name: f.type for f in fields(cls)}
            spec = cls(**{k: v for k, v in doc.items() if k in known})
            _check_types(spec)
            spec.validate()
        except FileNotFoundError:
            raise
        except (OSError, ValueError, TypeError, AttributeError, InvalidInputError) as exc:
            why = str(exc) if isinstance(exc, InvalidInputError) else type(exc).__name__
            raise DeploymentError(f"The retraining job {path} cannot be read ({why}); start it again with "
                                  "--notebook to write a new one.") from None  # fmt: skip
        return spec

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, json.dumps(self.to_dict(), indent=2))
