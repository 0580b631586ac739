"""Which variant answers a request: the champion, or the challenger of a running experiment.

A request goes to the challenger of a canary when its **bucket**, a number in [0, 1) drawn
from a hash, is below the canary's share. The bucket hashes the request's sticky key (a
column's value in its first row, or a header) when the experiment has one, so one key meets
one variant for the whole experiment; otherwise its request id, which is random. A shadow
mirrors a request when its id's bucket is below the shadow's share. The hash is salted with
the experiment's start, so each experiment draws a split of its own, and a restarted server
draws the same one.

>>> split = Split("canary", "2", 10.0, sticky_column="user", salt="1")
>>> split.to_challenger(rid="r1", key="alice") == split.to_challenger(rid="r2", key="alice")
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbdeploy.experiment import CHALLENGER, CHAMPION, VARIANT_HEADER, ExperimentSpec
from nbdeploy.serving.protocol import Parsed, ProtocolError

__all__ = ["Split", "bucket", "pinned"]


def bucket(key: str, salt: str) -> float:
    """A number in [0, 1), uniform over keys, the same for the same key and salt."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Split:
    """How one experiment's traffic is drawn (from its :class:`ExperimentSpec`)."""

    kind: str
    label: str
    percent: float
    sticky_column: str | None = None
    sticky_header: str | None = None
    salt: str = ""

    @classmethod
    def of(cls, spec: ExperimentSpec) -> Split:
        return cls(spec.kind, spec.label, spec.percent, spec.sticky_column, spec.sticky_header, repr(spec.started))

    def sticky_key(self, headers: Mapping[str, str], parsed: Parsed) -> str | None:
        """The request's sticky key: its header, or its first row's value of the column; ``None``
        when the experiment has none or the request does not carry it (drawn at random then)."""
        if self.sticky_header is not None:
            return headers.get(self.sticky_header)
        column = self.sticky_column
        value: Any = None
        if column is None or not parsed.rows:
            return None
        if parsed.frame is not None:  # a table of the columns the request sent (an optional one may be absent)
            if column not in parsed.frame.columns:
                return None
            value = parsed.frame[column].iloc[0]
        elif parsed.values is not None and column in parsed.columns:  # a matrix in the signature's order
            value = parsed.values[0, list(parsed.columns).index(column)]
        try:
            missing = value is None or bool(value != value)  # NaN, NaT; pandas' NA refuses bool(): missing too
        except (TypeError, ValueError):
            missing = True
        return None if missing else repr(value.item() if hasattr(value, "item") else value)

    def to_challenger(self, rid: str, key: str | None) -> bool:
        """Whether a canary answers this request from the challenger."""
        return self.kind == "canary" and bucket(key if key is not None else rid, self.salt) * 100 < self.percent

    def mirrors(self, rid: str) -> bool:
        """Whether a shadow also sends this request to the challenger."""
        # a bucket is below 1: a shadow of every request needs no hash
        return self.kind == "shadow" and (self.percent >= 100 or bucket(rid, self.salt) * 100 < self.percent)


def pinned(headers: Mapping[str, str], champion_version: int | None, split: Split | None) -> str | None:
    """The variant a client pinned with ``X-Nbdeploy-Variant`` (``champion`` or ``challenger``),
    ``None`` when it pinned none; a 400 naming the variants for one this deployment lacks."""
    asked = headers.get(VARIANT_HEADER)
    if asked is None:
        return None
    asked = asked.strip()
    if asked == CHAMPION or (champion_version is not None and asked == str(champion_version)):
        return CHAMPION
    if split is not None and asked in (CHALLENGER, split.label):
        if split.kind == "shadow":
            raise ProtocolError(400, f"The header {VARIANT_HEADER} names the challenger of a shadow, which answers "
                                     "nobody: pin champion, or no variant.")  # fmt: skip
        return CHALLENGER
    serving = f"champion (version {champion_version})" + (f" and {split.label}" if split is not None else "")
    raise ProtocolError(400, f"The header {VARIANT_HEADER} names {asked[:60]!r}; this deployment serves {serving}.")
