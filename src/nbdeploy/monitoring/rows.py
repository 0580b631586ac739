"""A request's logged or served rows as a float matrix, for the monitoring windows."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_floats"]


def as_floats(rows: Any, n: int, width: int) -> np.ndarray:
    """A request's rows as floats; with a text column among them, column by column (its text
    becomes NaN: categorical inputs are not profiled live) so that the numeric columns of a
    table with an ``email`` or ``city`` keep their drift."""
    try:
        return np.asarray(rows, dtype=np.float64).reshape(n, -1)
    except (TypeError, ValueError):
        pass
    import pandas as pd

    try:
        table = np.asarray(rows, dtype=object).reshape(n, -1)
    except ValueError:  # ragged rows
        return np.full((n, width), np.nan)
    return np.column_stack([pd.to_numeric(table[:, j], errors="coerce") for j in range(table.shape[1])]).astype(
        np.float64
    )
