"""Capacity: load tests of a deployment (:mod:`~nbdeploy.capacity.loadtest`), their gates and report."""

from nbdeploy.capacity.loadtest import loadtest
from nbdeploy.capacity.report import LoadTestReport

__all__ = ["LoadTestReport", "loadtest"]
