"""Checks of the evaluation data: schema against the signature, missing values, values
outside the training range, and drift against the training profile.

>>> import pandas as pd
>>> X = pd.DataFrame({"x": [1.0, None, 9.0]})
>>> c = check_data(X, inputs=[("x", "double")], profile=None)
>>> c.schema[0].status, c.missing[0].count
('ok', 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.stats.drift import FeatureDrift, frame_drift
from nbdeploy.stats.profile import as_frame

__all__ = ["ColumnCheck", "DataChecks", "Missing", "OutOfRange", "check_data", "mlflow_type", "model_input"]

# Conversions MLflow's schema enforcement makes without loss: reported, not flagged.
_SAFE = {
    ("integer", "long"),
    ("integer", "double"),
    ("integer", "float"),
    ("long", "double"),
    ("float", "double"),
}


@dataclass(frozen=True)
class ColumnCheck:
    """One signature column: its type there, the data's, and ``ok|converted|mismatch|extra``."""

    name: str
    expected: str
    actual: str
    status: str


@dataclass(frozen=True)
class Missing:
    name: str
    count: int
    fraction: float
    training: float | None


@dataclass(frozen=True)
class OutOfRange:
    """Rows below the training min or above its max, or with a category never seen in training."""

    name: str
    below: int
    above: int
    unseen: int
    fraction: float


@dataclass
class DataChecks:
    """Everything checked on the evaluation data; ``summary`` says it in a few sentences."""

    rows: int
    schema: list[ColumnCheck] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    out_of_range: list[OutOfRange] = field(default_factory=list)
    rows_out_of_range: int = 0
    drift: list[FeatureDrift] = field(default_factory=list)
    has_signature: bool = False
    has_profile: bool = False

    @property
    def max_psi(self) -> float:
        values = [d.psi for d in self.drift if not np.isnan(d.psi)]
        return max(values) if values else float("nan")

    @property
    def drifted_features(self) -> float:
        return float(sum(d.status == "drift" for d in self.drift)) if self.has_profile else float("nan")

    def summary(self) -> list[str]:
        """One line per check, e.g. ``"schema: 2 of 30 columns differ from the signature"``."""
        lines = []
        if self.has_signature:
            signed = [c for c in self.schema if c.status != "extra"]
            bad = sum(c.status == "mismatch" for c in signed)
            extra = len(self.schema) - len(signed)
            line = f"schema: {bad} of {len(signed)} columns differ from the signature"
            plural = "s" if extra > 1 else ""
            lines.append(line + (f" ({extra} extra column{plural}, not given to the model)" if extra else ""))
        else:
            lines.append("schema: not checked (the version has no signature)")
        lines.append(f"missing values: {len(self.missing)} columns have some")
        if self.has_profile:
            lines.append(f"outside the training range: {self.rows_out_of_range} of {self.rows} rows")
            lines.append(f"drift: {self.drifted_features:.0f} of {len(self.drift)} features drifted")
        else:
            lines.append("range and drift: not checked (the version has no training profile)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "has_signature": self.has_signature,
            "has_profile": self.has_profile,
            "schema": [asdict(c) for c in self.schema],
            "missing": [asdict(m) for m in self.missing],
            "out_of_range": [asdict(o) for o in self.out_of_range],
            "rows_out_of_range": self.rows_out_of_range,
            "drift": [d.to_dict() for d in self.drift],
        }


def mlflow_type(dtype: Any) -> str:
    """The MLflow column type a pandas dtype maps to (``double``, ``long``, ``string`` …)."""
    t = pd.api.types
    if t.is_bool_dtype(dtype):
        return "boolean"
    if t.is_integer_dtype(dtype):
        return "long" if np.dtype(getattr(dtype, "numpy_dtype", dtype)).itemsize == 8 else "integer"
    if t.is_float_dtype(dtype):
        return "double" if np.dtype(getattr(dtype, "numpy_dtype", dtype)).itemsize == 8 else "float"
    if t.is_datetime64_any_dtype(dtype):
        return "datetime"
    if getattr(dtype, "kind", "") == "S":
        return "binary"
    return "string"


def model_input(X: Any, inputs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The columns of ``X`` the model takes, in signature order; extra columns (for slicing)
    are left out. Raises :class:`InvalidInputError` when a signature column is missing."""
    frame = as_frame(X)
    if not inputs or not all(n for n, _ in inputs):
        return frame
    names = [n for n, _ in inputs]
    lacking = [n for n in names if n not in frame.columns]
    if lacking:
        shown = ", ".join(map(repr, lacking[:5])) + (", …" if len(lacking) > 5 else "")
        raise InvalidInputError(
            f"The data lacks {len(lacking)} of the {len(names)} columns in the model's signature ({shown}).",
            docs=Docs.DATA,
        )
    return frame if list(frame.columns) == names else frame[names]


def _schema(frame: pd.DataFrame, inputs: Sequence[tuple[str, str]]) -> list[ColumnCheck]:
    out = []
    expected = dict(inputs)
    for name, kind in inputs:
        actual = mlflow_type(frame[name].dtype) if name in frame.columns else "absent"
        status = "ok" if actual == kind else ("converted" if (actual, kind) in _SAFE else "mismatch")
        out.append(ColumnCheck(name, kind, actual, status))
    for name in frame.columns:
        if name not in expected:
            out.append(ColumnCheck(str(name), "", mlflow_type(frame[name].dtype), "extra"))
    return out


def _range(frame: pd.DataFrame, columns: list[Mapping[str, Any]]) -> tuple[list[OutOfRange], int]:
    n = len(frame)
    numeric = [
        c
        for c in columns
        if c["kind"] == "numeric" and c.get("min") is not None and pd.api.types.is_numeric_dtype(frame[c["name"]])
    ]
    flags = np.zeros(n, dtype=bool)
    out = []
    if numeric:
        values = frame[[c["name"] for c in numeric]].to_numpy(dtype=float, na_value=np.nan)
        low = values < np.asarray([c["min"] for c in numeric])
        high = values > np.asarray([c["max"] for c in numeric])
        flags |= (low | high).any(axis=1)
        for j, c in enumerate(numeric):
            below, above = int(low[:, j].sum()), int(high[:, j].sum())
            if below or above:
                out.append(OutOfRange(c["name"], below, above, 0, (below + above) / max(n, 1)))
    for c in columns:
        if c["kind"] != "numeric" and not c.get("other"):  # every training category is known
            col = frame[c["name"]]
            unseen = (~col.astype("string").isin(list(c.get("frequencies", {})))) & col.notna()
            flags |= unseen.to_numpy(dtype=bool)
            if int(unseen.sum()):
                out.append(OutOfRange(c["name"], 0, 0, int(unseen.sum()), float(unseen.mean())))
    return out, int(flags.sum())


def check_data(X: Any, inputs: Sequence[tuple[str, str]] | None, profile: Mapping[str, Any] | None) -> DataChecks:
    """Run every check on the evaluation data ``X`` against a signature and a profile."""
    frame = as_frame(X)
    if not all(isinstance(c, str) for c in frame.columns):  # profiles and signatures name columns by str
        frame = frame.rename(columns=str)
    checks = DataChecks(rows=len(frame), has_signature=bool(inputs), has_profile=profile is not None)
    if inputs:
        checks.schema = _schema(frame, inputs)
    counts = frame.isna().sum()
    trained = {c["name"]: c.get("missing") for c in (profile or {}).get("columns", [])}
    checks.missing = [
        Missing(str(k), int(v), int(v) / max(len(frame), 1), trained.get(str(k))) for k, v in counts.items() if v > 0
    ]
    if profile is not None:
        present = [c for c in profile["columns"] if c["name"] in frame.columns]
        checks.out_of_range, checks.rows_out_of_range = _range(frame, present)
        checks.drift = sorted(frame_drift(profile, frame), key=lambda d: -np.nan_to_num(d.psi, nan=-1.0))
    return checks
