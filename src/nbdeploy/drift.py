"""Deprecated: moved to :mod:`nbdeploy.stats.drift` in 0.2; this module re-exports it so that
notebooks importing ``nbdeploy.drift`` keep running, and says where it went."""

import warnings

from nbdeploy.stats.drift import *  # noqa: F403
from nbdeploy.stats.drift import __all__  # noqa: F401

warnings.warn(
    "nbdeploy.drift moved to nbdeploy.stats.drift; import it from there.", DeprecationWarning, stacklevel=2
)
