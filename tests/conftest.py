from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def cancer() -> dict[str, Any]:
    """breast_cancer split and a fitted 20-tree forest (small enough to be quick)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X_train, y_train)
    return {"X_train": X_train, "X_test": X_test, "y_train": y_train, "y_test": y_test, "model": model}


@pytest.fixture
def name() -> str:
    """A registered-model name no other test uses (the tracking store is shared)."""
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ip(cancer: dict[str, Any]) -> Iterator[Any]:
    """A real IPython shell with the extension loaded and the cancer data in its namespace."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    shell.user_ns.update(cancer)
    yield shell
    from nbdeploy import config

    config.configure(tracking_uri=None, experiment=None, home=None)


@pytest.fixture
def tracking_uri() -> str:
    return os.environ["MLFLOW_TRACKING_URI"]
