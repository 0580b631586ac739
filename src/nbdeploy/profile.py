"""Deprecated: moved to :mod:`nbdeploy.stats.profile` in 0.2; this module re-exports it so that
notebooks importing ``nbdeploy.profile`` keep running, and says where it went."""

import warnings

from nbdeploy.stats.profile import *  # noqa: F403
from nbdeploy.stats.profile import __all__  # noqa: F401

warnings.warn(
    "nbdeploy.profile moved to nbdeploy.stats.profile; import it from there.", DeprecationWarning, stacklevel=2
)
