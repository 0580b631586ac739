"""The accounts of one experiment: counts, figures and a shadow's agreement per variant, and
the verdict of its rules. No model and no event loop: the local server keeps one beside its
challenger, and a Ray deployment's monitoring hub keeps one for all its replicas, fed with
their request-log records (:meth:`ExperimentBook.ingest`, the same path a restart replays).

>>> from nbdeploy.experiment import ExperimentSpec
>>> from nbdeploy.model_entry import ModelEntry
>>> book = ExperimentBook(ExperimentSpec("shadow", ModelEntry("m/2", "/m", version=2), 100), ("x",), None)
>>> book.ingest([{"id": "a", "answered": 1.0, "variant": "champion", "status": 200, "predictions": [1]},
...              {"id": "a", "answered": 1.1, "variant": "2", "shadow": True, "status": 200, "predictions": [0]}])
2
>>> book.state()["agreement"]["rate"]
0.0
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nbdeploy._files import append_private
from nbdeploy.experiment import CHAMPION, ExperimentSpec
from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.monitoring.replay import read_records
from nbdeploy.serving.arms import Arms
from nbdeploy.serving.responses import MODEL_FAILED
from nbdeploy.serving.routing import Split
from nbdeploy.serving.variant_distributions import VariantDistributions

__all__ = ["EVENTS_FILE", "ExperimentBook", "last_events", "note_event"]

MAX_PAIRS = 100_000  # a mirrored request's first record's predictions kept until its other record arrives
EVENTS_FILE = "experiments.jsonl"  # how experiments ended, in the deployment folder


def note_event(folder: str | Path | None, alerts: AlertBook, event: dict[str, Any], webhook: str | None) -> None:
    """An experiment's end (promoted, rolled back, promotion refused): appended to
    ``experiments.jsonl`` and recorded among the alert events (the panel lists them; the
    experiment's ``webhook`` receives it)."""
    if folder:
        append_private(Path(folder) / EVENTS_FILE, json.dumps(event, default=str) + "\n")
    shown = {**event, "rule": "experiment", "state": f"{event['action']} {event['challenger']}", "value": None}
    alerts.record(shown, webhook)


def last_events(folder: str | Path | None) -> list[dict[str, Any]]:
    """The last 50 ends in ``experiments.jsonl`` (damaged lines skipped)."""
    return read_records(Path(folder) / EVENTS_FILE, include_rotated=False)[-50:] if folder else []


class ExperimentBook:
    """Counts, figures and verdicts of one experiment, since it started."""

    def __init__(self, spec: ExperimentSpec, names: Sequence[str], task: str | None,
                 profile: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.spec = spec
        self.counts: dict[str, Counter[str]] = {CHAMPION: Counter(), spec.label: Counter()}
        self.arms = Arms(task, [CHAMPION, spec.label])
        self.distributions = VariantDistributions(names, profile, task, [CHAMPION, spec.label])
        self.disagreements: deque[dict[str, Any]] = deque(maxlen=20)  # the last rows a shadow answered otherwise
        self.promotion_refused: str | None = None  # the registry's refusal: promote rules stop here
        # a mirrored request's id -> (whether it is the shadow's, its predictions) of the first of
        # its two records, until the other comes (tuples: the collector stops tracking them; see Arms._waiting)
        self._pairs: OrderedDict[str, tuple[bool, tuple[Any, ...]]] = OrderedDict()
        self._split = Split.of(spec)
        # counts change on the event loop (or the hub's thread) and are read by other threads
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.spec.label

    def observe(self, variant: str, status: int, failed: bool, latency_ms: float, rid: str, predictions: Any,
                shadow: bool = False, inputs: Any = None, pinned: bool = False) -> None:  # fmt: skip
        """Count one answered (or mirrored) request; ``failed``: the model failed on it (a 5xx,
        or a predict that raised), which is what ``error_rate`` rules compare. A ``pinned``
        request (the client chose its variant) is only counted: the comparison takes the
        requests the split drew at random, whatever a client sends."""
        with self._lock:
            counts = self.counts.get(variant)
            if counts is None:
                counts = self.counts[variant] = Counter()
            if pinned:
                counts["pinned"] += 1
                return
            counts["shadowed" if shadow else "requests"] += 1
            if failed:
                counts["shadow_errors" if shadow else "errors"] += 1
        self.arms.request(variant, rid, failed, latency_ms, predictions if status == 200 else None)
        if status == 200:
            # a shadow is asked the champion's rows: they are counted as its inputs when the champion
            # answers (live or replayed alike), since a shadow's log record holds no inputs of its own
            self.distributions.add(variant, None if shadow else inputs, predictions)
            if not shadow and variant == CHAMPION and self._split.mirrors(rid):
                self.distributions.add(self.label, inputs, predictions, inputs_only=True)

    def count(self, variant: str, what: str) -> None:
        """Count one event of ``variant`` that is no request (``mirror_dropped``)."""
        with self._lock:
            self.counts.setdefault(variant, Counter())[what] += 1

    def compare(self, rid: str, champion: Sequence[Any], shadow: Sequence[Any]) -> None:
        """Count the rows where the shadow agrees with the champion; keep the last disagreements."""
        with self._lock:
            counts = self.counts[self.label]
            for row, (a, b) in enumerate(zip(champion, shadow, strict=False)):
                if _same(a, b):
                    counts["agree_rows"] += 1
                else:
                    counts["disagree_rows"] += 1
                    self.disagreements.append({"id": rid, "row": row, "champion": a, "challenger": b})

    def ingest(self, records: Iterable[dict[str, Any]]) -> int:
        """Count request-log records of this experiment (answered since it started; a shadow's
        agreement from the two records of one request id, in either order)."""
        n = 0
        for r in records:
            answered, variant = r.get("answered"), r.get("variant")
            if not isinstance(answered, (int, float)) or answered < self.spec.started or not isinstance(variant, str):
                continue
            status, shadow = r.get("status"), r.get("shadow") is True
            if shadow and r.get("dropped") is True:  # a mirror the shadow never got (serving/variants.py)
                self.count(variant, "mirror_dropped")
                self._pairs.pop(str(r.get("id")), None)  # no answer of the shadow's will come for it
                n += 1
                continue
            status = status if isinstance(status, int) else 0
            predictions, rid, latency = r.get("predictions"), str(r.get("id")), r.get("latency_ms")
            failed = status >= 500 or (shadow and status != 200) or str(r.get("error", "")).startswith(MODEL_FAILED)
            latency = float(latency) if isinstance(latency, (int, float)) else math.nan
            pinned = r.get("pinned") is True
            inputs = None if r.get("inputs_private") else r.get("inputs")  # hashed values are no rows to compare
            self.observe(variant, status, failed, latency, rid, predictions, shadow, inputs, pinned)
            n += 1
            if self.spec.kind == "shadow" and isinstance(predictions, list) and (shadow or self._split.mirrors(rid)):
                self._pair(rid, shadow, predictions)
        return n

    def _pair(self, rid: str, shadow: bool, predictions: list[Any]) -> None:
        """Compare a mirrored request's two answers once both records are in, whichever came
        first: a log holds the champion's first, but on Ray a shadow's actor sends the hub its
        records itself, and they can arrive before the replica's."""
        first = self._pairs.get(rid)
        if first is not None and first[0] != shadow:
            del self._pairs[rid]
            self.compare(rid, *((first[1], predictions) if shadow else (predictions, first[1])))
            return
        self._pairs[rid] = (shadow, tuple(predictions))
        if len(self._pairs) > MAX_PAIRS:
            self._pairs.popitem(last=False)

    def verdict(self) -> tuple[str, str] | None:
        """``("rollback" | "promote", why)`` once the rules decide, else ``None``: any rollback
        rule that holds ends the experiment; every promote rule must hold to promote."""
        s = self.spec
        for rule in s.rollback_when:
            v = self.arms.decide(rule, s.min_labels)
            if v.decided and v.holds:
                return "rollback", f"{rule} holds ({v.reason})"
        if s.promote_when and self.promotion_refused is None:
            verdicts = [self.arms.decide(rule, s.min_labels) for rule in s.promote_when]
            if all(v.decided and v.holds for v in verdicts):
                return "promote", "; ".join(f"{r} holds" for r in s.promote_when)
        return None

    def _verdicts(self) -> list[dict[str, Any]]:
        """Where each rule stands now, with the sentence that says why (its figures included)."""
        s, out = self.spec, []
        for kind, rules in (("promote", s.promote_when), ("rollback", s.rollback_when)):
            for rule in rules:
                v = self.arms.decide(rule, s.min_labels)
                out.append({"rule": rule, "when": kind, "decided": v.decided, "holds": v.holds, "reason": v.reason})
        return out

    def _agreement(self, counts: dict[str, int], disagreements: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.spec.kind != "shadow":
            return None
        rows = counts.get("agree_rows", 0) + counts.get("disagree_rows", 0)
        rate = counts.get("agree_rows", 0) / rows if rows else None
        return {"rows": rows, "rate": rate, "disagreements": disagreements}

    def state(self, pace: Callable[[], None] | None = None) -> dict[str, Any]:
        """What ``GET /experiment`` shows of it (``pace``: see ``VariantDistributions.summary``)."""
        s, c = self.spec, self.spec.challenger
        with self._lock:  # a consistent copy, whichever thread counts meanwhile
            counts = {variant: dict(n) for variant, n in self.counts.items()}
            disagreements = list(self.disagreements)
        return {
            "kind": s.kind, "percent": s.percent, "sticky_column": s.sticky_column, "sticky_header": s.sticky_header,
            "started": s.started, "challenger": {"label": self.label, "ref": c.ref, "version": c.version},
            "counts": counts, "agreement": self._agreement(counts.get(self.label, {}), disagreements),
            "stats": self.arms.summary(), "distributions": self.distributions.summary(pace),
            "rules": {"promote_when": s.promote_when, "rollback_when": s.rollback_when, "min_labels": s.min_labels},
            "verdicts": self._verdicts(),
            "promotion_refused": self.promotion_refused,
        }  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    """Equal predictions: the same label, or numbers within a relative 1e-9 (regression)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
