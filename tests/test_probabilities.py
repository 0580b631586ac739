"""Probabilities on the wire (issue #12, item 3): MLflow's ``params`` convention
``{"predict_method": "predict_proba"}`` on a real server, over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from nbdeploy.monitoring.replay import read_records
from tests.helpers import JSON, usage_error

VARIANT = "X-Nbdeploy-Variant"


def _body(X: Any, method: str | None = None, params: Any = None) -> bytes:
    doc: dict[str, Any] = {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}
    if method is not None:
        doc["params"] = {"predict_method": method}
    if params is not None:
        doc["params"] = params
    return json.dumps(doc).encode()


def _thousand(X: Any) -> Any:
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = X.to_numpy()[rng.integers(0, len(X), 1000)] * rng.uniform(0.9, 1.1, (1000, X.shape[1]))
    return pd.DataFrame(rows, columns=X.columns)


def test_served_probabilities_equal_predict_proba_in_process(dep: Any, cancer: dict[str, Any], ip: Any) -> None:
    X, model = _thousand(cancer["X_test"]), cancer["model"]
    with httpx.Client(base_url=dep.url, timeout=60) as client:
        for method in ("predict_proba", "predict_log_proba"):
            answer = client.post("/invocations", content=_body(X, method), headers=JSON)
            assert answer.status_code == 200, answer.text
            served = np.asarray(answer.json()["predictions"])
            expected = getattr(model, method)(X)
            assert served.shape == expected.shape == (1000, 2)
            finite = np.isfinite(expected)  # a log of 0 is -inf on both sides, sent as JSON's -Infinity
            assert np.array_equal(np.isfinite(served), finite)
            assert np.max(np.abs(served[finite] - expected[finite])) <= 1e-9
        labels = client.post("/invocations", content=_body(X), headers=JSON).json()["predictions"]
        assert labels == model.predict(X).tolist()  # predict stays the default
    assert np.max(np.abs(dep.predict(X, method="predict_proba") - model.predict_proba(X))) <= 1e-9
    ip.user_ns["X_1000"] = X
    shown = ip.run_line_magic("deploy", f"predict {dep.name} --data X_1000 --proba")
    assert np.max(np.abs(shown - model.predict_proba(X))) <= 1e-9
    records = list(read_records(dep.path / "requests.jsonl"))
    proba = [r for r in records if r.get("method") == "predict_proba"]
    assert proba and all("predictions" not in r and len(r["outputs"][0]) == 2 for r in proba)
    assert any(r.get("predictions") for r in records)  # the plain request logged its labels as before
    monitor = httpx.get(dep.url + "/monitor", timeout=30).json()  # probabilities never reach the label counts
    assert monitor["windows"]


def test_methods_a_model_lacks_or_nobody_knows_are_one_sentence(
    serving: Any, cancer: dict[str, Any], name: str, ip: Any
) -> None:
    from sklearn.linear_model import RidgeClassifier

    import nbdeploy

    ridge = RidgeClassifier().fit(cancer["X_train"], cancer["y_train"])  # decision_function, no predict_proba
    nbdeploy.register(ridge, name, cancer["X_train"], cancer["y_train"])
    dep = serving(name, name=name)
    X = cancer["X_test"]
    with httpx.Client(base_url=dep.url, timeout=30) as client:
        scores = client.post("/invocations", content=_body(X, "decision_function"), headers=JSON)
        assert np.max(np.abs(np.asarray(scores.json()["predictions"]) - ridge.decision_function(X))) <= 1e-9
        cases = {
            "predict_proba": "The params field 'predict_method' asks for predict_proba, which the champion does not "
            "have; it has decision_function, predict.",
            "score": "The params field 'predict_method' must be one of predict, predict_proba, predict_log_proba, "
            "predict_joint_log_proba, decision_function; got 'score'.",
            "x" * 10_000: "The params field 'predict_method' must be one of predict, predict_proba, "
            "predict_log_proba, predict_joint_log_proba, decision_function; got '" + "x" * 59 + ".",
        }
        for method, message in cases.items():
            answer = client.post("/invocations", content=_body(X, method), headers=JSON)
            assert (answer.status_code, answer.json()["message"]) == (400, message)
        for params in ({"predict_method": 3}, {"predict_method": ["predict_proba"]}, {"predict_method": None}):
            answer = client.post("/invocations", content=_body(X, params=params), headers=JSON)
            assert answer.status_code == 400 and "must be one of predict" in answer.json()["message"], params
        assert client.get("/ping").status_code == 200
        assert client.get("/info").json()["methods"] == ["decision_function", "predict"]
    assert usage_error(ip, f"predict {name} --data X_test --proba") == (
        f"Deployment '{name}' answered 400: The params field 'predict_method' asks for predict_proba, which the "
        "champion does not have; it has decision_function, predict."
    )


def test_a_canary_answers_probabilities_from_the_variant_it_draws(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    """The challenger's process answers probabilities too (its own model's), and a shadow
    mirrors only ``predict`` requests: probabilities are no predictions to compare."""
    import nbdeploy

    X = cancer["X_test"]
    stump = nbdeploy.registry.load_model(f"{two_versions}/2")[0]
    dep.canary(f"{two_versions}/2", percent=50)
    with httpx.Client(base_url=dep.url, timeout=30) as client:
        for pin, model in (("champion", cancer["model"]), ("2", stump)):
            answer = client.post("/invocations", content=_body(X, "predict_proba"), headers={**JSON, VARIANT: pin})
            assert answer.headers[VARIANT] == pin
            assert np.max(np.abs(np.asarray(answer.json()["predictions"]) - model.predict_proba(X))) <= 1e-9
    dep.conclude(abort=True)
    dep.shadow(f"{two_versions}/2")
    with httpx.Client(base_url=dep.url, timeout=30) as client:
        for i in range(5):
            client.post("/invocations", content=_body(X.iloc[i : i + 1], "predict_proba"), headers=JSON)
        client.post("/invocations", content=_body(X.iloc[:1]), headers=JSON)
    from tests.helpers import eventually

    counts = eventually(lambda: dep.experiment().state["counts"], lambda c: c.get("2", {}).get("shadowed", 0) >= 1)
    assert counts["2"]["shadowed"] == 1 and counts["champion"]["requests"] == 6


@pytest.mark.parametrize("option", [["--proba"], ["--method", "predict_log_proba"]])
def test_the_cli_prints_probabilities(tmp_path: Any, dep: Any, cancer: dict[str, Any], option: list[str]) -> None:
    import os
    import subprocess

    data = tmp_path / "rows.csv"
    cancer["X_test"].iloc[:3].to_csv(data, index=False)
    out = subprocess.run(["nbdeploy", "predict", dep.name, "--data", str(data), *option], capture_output=True,
                         text=True, env=dict(os.environ), timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    method = "predict_proba" if option == ["--proba"] else option[1]
    expected = getattr(cancer["model"], method)(cancer["X_test"].iloc[:3])
    printed = np.asarray(json.loads(out.stdout), dtype=float)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(printed), finite) and np.max(np.abs(printed[finite] - expected[finite])) <= 1e-9


def test_hostile_params_are_400_and_the_batcher_lives_on(dep: Any, cancer: dict[str, Any]) -> None:
    """params nested nearly to the parser's limit, in a body parsed off the loop (over 64 KiB),
    once killed the batcher's task when it compared batching keys on a deeper stack."""
    X = cancer["X_test"]
    rows = json.dumps({"columns": list(X.columns), "data": np.resize(X.to_numpy(), (400, X.shape[1])).tolist()})
    deep = '{"k":' * 900 + "1" + "}" * 900
    big = '{"predict_method": "predict", "blob": "' + "x" * 70_000 + '"}'
    with httpx.Client(base_url=dep.url, timeout=30) as client:
        answers = []
        for params in (deep, deep, big):
            body = ('{"dataframe_split": ' + rows + ', "params": ' + params + "}").encode()
            answers.append(client.post("/invocations", content=body, headers=JSON))
        assert [a.status_code for a in answers[:2]] == [200, 200]  # answered, the odd params kept apart
        assert answers[2].status_code == 400 and "The field 'params' is 70" in answers[2].json()["message"]
        assert client.post("/invocations", content=_body(X.iloc[:3]), headers=JSON).status_code == 200


def test_a_method_gone_after_a_reload_is_a_400_not_a_model_failure() -> None:
    from nbdeploy.serving.loader import LoadedModel
    from nbdeploy.serving.protocol import ProtocolError

    model = LoadedModel(lambda X: [0] * len(X), None, None, "/nowhere")
    with pytest.raises(ProtocolError) as err:
        model.call([[1.0]], "predict_proba")
    assert err.value.status == 400 and "has predict" in str(err.value)


def test_the_registry_description_keeps_the_users_words_within_mlflows_limit() -> None:
    from nbdeploy.registry.promotion import DESCRIPTION_LIMIT, with_summary

    once = with_summary("Mine.", "first")
    assert with_summary(once, "second") == "Mine.\n\n<!-- nbdeploy:validation -->\nsecond"
    long = with_summary("x" * 6000, "summary " * 200)
    assert len(long) <= DESCRIPTION_LIMIT and long.startswith("x" * 4000) and "nbdeploy:validation" in long
