from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="session")
def two_versions(cancer: dict[str, Any]) -> str:
    """A registered model with two versions whose predictions differ on some rows: the
    fixture forest (v1) and a one-split stump (v2)."""
    from sklearn.tree import DecisionTreeClassifier

    import nbdeploy

    name = "cancer-two"
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    nbdeploy.register(stump, name, cancer["X_train"], cancer["y_train"])
    return name


@pytest.fixture
def serving() -> Iterator[Callable[..., Any]]:
    """``serving(ref, **options)`` starts a deployment with :func:`nbdeploy.serve`; every one
    started is stopped when the test ends, whatever happened."""
    import nbdeploy

    started: list[Any] = []

    def serve(ref: str, **options: Any) -> Any:
        started.append(nbdeploy.serve(ref, **options))
        return started[-1]

    yield serve
    for dep in started:
        dep.stop()


@pytest.fixture
def dep(serving: Callable[..., Any], two_versions: str, name: str) -> Any:
    """Version 1 of :func:`two_versions`, served under a name of its own."""
    return serving(f"{two_versions}/1", name=name)


@pytest.fixture(scope="session")
def with_email(cancer: dict[str, Any]) -> str:
    """A model whose input has an ``email`` column (dropped by the pipeline) beside 5 numeric ones."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    numeric = list(cancer["X_train"].columns[:5])
    X = cancer["X_train"][numeric].assign(email=[f"trainee{i}@example.org" for i in range(len(cancer["X_train"]))])
    model = make_pipeline(ColumnTransformer([("num", "passthrough", numeric)]), LogisticRegression(max_iter=2000))
    model.fit(X, cancer["y_train"])
    import nbdeploy

    nbdeploy.register(model, "with-email", X, cancer["y_train"])
    return "with-email"
