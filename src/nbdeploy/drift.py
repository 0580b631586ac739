"""Deprecated: moved to :mod:`nbdeploy.stats.drift` in 0.2. Every name of that module is still
found here, so notebooks importing ``nbdeploy.drift`` keep running; importing it warns."""

import warnings
from typing import Any

from nbdeploy.stats import drift as _moved

warnings.warn(
    "nbdeploy.drift moved to nbdeploy.stats.drift; import it from there.", DeprecationWarning, stacklevel=2
)


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)
