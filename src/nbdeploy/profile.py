"""Deprecated: moved to :mod:`nbdeploy.stats.profile` in 0.2. Every name of that module is still
found here, so notebooks importing ``nbdeploy.profile`` keep running; importing it warns."""

import warnings
from typing import Any

from nbdeploy.stats import profile as _moved

warnings.warn(
    "nbdeploy.profile moved to nbdeploy.stats.profile; import it from there.", DeprecationWarning, stacklevel=2
)


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)
