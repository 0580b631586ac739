"""What each variant of an experiment predicted and how its inputs drifted
(nbdeploy.serving.variant_distributions); the server's figures are checked end to end in
tests/test_experiments.py (a shadow's two prediction distributions, and after kill -9)."""

from __future__ import annotations

import doctest
import threading
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from nbdeploy.serving import variant_distributions
from nbdeploy.serving.variant_distributions import EDGES_FROM, FOLD_AT, VariantDistributions
from nbdeploy.stats.drift import frame_drift, psi
from nbdeploy.stats.profile import compute_profile

rng = np.random.default_rng(0)
TRAIN = pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.uniform(0, 10, 5000)})
PROFILE = compute_profile(TRAIN)


def test_doctest() -> None:
    assert doctest.testmod(variant_distributions).failed == 0


def test_each_variant_counts_its_own_predictions_and_the_challenger_is_compared() -> None:
    d = VariantDistributions(["a", "b"], PROFILE, "classification", ["champion", "3"])
    champion, challenger = rng.choice(["x", "y"], 900, p=[0.7, 0.3]), rng.choice(["x", "y"], 300, p=[0.4, 0.6])
    for i in range(0, 900, 3):
        d.add("champion", TRAIN.iloc[i : i + 3].to_numpy(), champion[i : i + 3].tolist())
    for i in range(300):
        d.add("3", TRAIN.iloc[[i]].to_numpy(), [challenger[i]])
    out = d.summary()
    assert out["champion"]["predictions"]["counts"] == dict(Counter(champion.tolist()))
    assert out["3"]["predictions"]["counts"] == dict(Counter(challenger.tolist()))
    assert (out["champion"]["rows"], out["3"]["rows"]) == (900, 300)
    a, b = Counter(champion.tolist()), Counter(challenger.tolist())
    assert out["3"]["prediction_psi"] == pytest.approx(psi([a["x"], a["y"]], [b["x"], b["y"]]))
    assert "prediction_psi" not in out["champion"]


def test_input_drift_per_variant_matches_the_drift_of_the_same_rows() -> None:
    """A sticky split that sends shifted rows to the challenger: its drift is the drift the
    monitoring would compute on those rows; the champion's rows, from training, do not drift."""
    d = VariantDistributions(["a", "b"], PROFILE, "classification", ["champion", "2"])
    shifted = pd.DataFrame({"a": rng.normal(1.5, 1, 800), "b": rng.uniform(0, 10, 800)})
    for i in range(0, 800, 8):
        d.add("champion", TRAIN.iloc[i : i + 8].to_numpy(), [0] * 8)
        d.add("2", shifted.iloc[i : i + 8].to_numpy(), [1] * 8)
    out = d.summary()
    expected = {f.name: f.psi for f in frame_drift(PROFILE, shifted)}
    assert out["2"]["drift_max_psi"] == pytest.approx(max(expected.values()))
    assert out["2"]["drifted_features"] == ["a"]
    assert out["champion"]["drifted_features"] == [] and out["champion"]["drift_max_psi"] < 0.05


def test_a_regression_bins_every_variant_alike_once_enough_predictions_are_seen() -> None:
    d = VariantDistributions(["a"], None, "regression", ["champion", "2"])
    d.add("champion", None, rng.normal(0, 1, EDGES_FROM - 10).tolist())
    early = d.summary()["champion"]["predictions"]
    assert early["kind"] == "histogram" and sum(early["counts"]) == EDGES_FROM - 10
    assert d.summary()["2"]["prediction_psi"] is None  # no shared bins yet
    d.add("2", None, rng.normal(2, 1, 500).tolist())
    d.add("champion", None, [float("nan"), float("inf"), 0.5])  # not numbers that can be binned: skipped
    out = d.summary()
    assert out["champion"]["predictions"]["edges"] == out["2"]["predictions"]["edges"]
    assert sum(out["champion"]["predictions"]["counts"]) == EDGES_FROM - 10 + 1
    assert sum(out["2"]["predictions"]["counts"]) == 500 and out["2"]["prediction_psi"] > 1


def test_hostile_rows_are_answered_but_not_binned() -> None:
    d = VariantDistributions(["a", "b"], PROFILE, "classification", ["champion", "2"])
    d.add("champion", [["text", None]], ["x"])  # a row that is not numbers
    d.add("champion", [[1.0]], ["x"])  # a row of the wrong width
    d.add("champion", [[1.0, 2.0]], None)  # a failed request: no predictions
    d.add("champion", [[1.0, 2.0]], [])
    d.add("champion", [[float("nan"), 1e308]], ["x"])
    d.add("9", [[0.0, 1.0]], [{"nested": [1]}])  # a variant not announced, an odd prediction
    out = d.summary()
    assert out["champion"]["rows"] == 3 and out["champion"]["predictions"]["counts"] == {"x": 3}
    assert out["9"]["predictions"]["counts"] == {"{'nested': [1]}": 1}
    many = VariantDistributions(["a"], None, "classification", ["champion", "2"])
    for i in range(30):
        many.add("champion", None, [f"class {i}"])
    assert len(many.summary()["champion"]["predictions"]["counts"]) == 20  # the 20 most common


def test_requests_added_while_another_thread_reads_are_all_counted() -> None:
    d = VariantDistributions(["a", "b"], PROFILE, "classification", ["champion", "2"])
    row = TRAIN.iloc[[0]].to_numpy()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            d.summary()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3 * FOLD_AT):
            d.add("champion", row, ["x"])
    finally:
        stop.set()
        reader.join()
    assert d.summary()["champion"]["rows"] == 3 * FOLD_AT


def test_what_cannot_be_binned_is_skipped_and_never_raises() -> None:
    d = VariantDistributions(["a", "b"], PROFILE, "regression", ["champion", "2"])
    d.add("champion", np.zeros((1, 2)), [10**400])  # a prediction no float holds
    d.add("champion", [[10**400, 1.0]], [1.0])  # an input no float holds (a 'binary' column as an int)
    d.add("champion", {"a": 1}, [2.0])  # inputs that are not rows
    d.add("champion", [[1.0], [2.0]], [1.0, 2.0])  # rows of the wrong width are not re-cut into others
    d.add("2", None, [-1.5e308, 1.5e308])  # a range wider than a float: no histogram, no error
    out = d.summary()
    assert out["champion"]["rows"] == 5 and out["2"]["rows"] == 2
    assert out["2"]["predictions"] == {"kind": "histogram", "edges": [], "counts": []}
    binned = VariantDistributions(["a", "b"], PROFILE, "classification", ["champion"])
    binned.add("champion", [[1.0], [2.0]], ["x", "y"])
    assert binned.summary()["champion"]["drift_max_psi"] is None  # nothing binned


def test_distinct_predictions_are_bounded() -> None:
    d = VariantDistributions(["a"], None, "classification", ["champion", "2"])
    for i in range(0, 5000, 50):
        d.add("champion", None, [f"id-{j}" for j in range(i, i + 50)])
    counts = d.summary()["champion"]["predictions"]["counts"]
    assert len(d._variants["champion"].classes) == 1001  # 1,000 kept, then one "(other)"
    assert sum(d._variants["champion"].classes.values()) == 5000 and len(counts) == 20


def test_a_shadows_inputs_are_its_champions_rows_live_and_replayed_alike() -> None:
    """A shadow's log records hold no inputs (its champion's record of the same id does): its
    input bins count the rows of the requests mirrored to it, when the champion answers them,
    so a restart that replays the log shows what the live server showed."""
    from nbdeploy.experiment import ExperimentSpec
    from nbdeploy.model_entry import ModelEntry
    from nbdeploy.serving.experiment_book import ExperimentBook

    spec = ExperimentSpec("shadow", ModelEntry("m/2", "/m", version=2), 40)
    live, replayed = (ExperimentBook(spec, ("a", "b"), "classification", PROFILE) for _ in range(2))
    shifted = pd.DataFrame({"a": rng.normal(1.5, 1, 400), "b": rng.uniform(0, 10, 400)}).to_numpy()
    records, mirrored = [], 0
    for i in range(400):
        rid, rows, answer = f"r{i}", shifted[i : i + 1], [i % 2]
        live.observe("champion", 200, False, 1.0, rid, answer, inputs=rows)
        records.append({"id": rid, "answered": 1e10, "variant": "champion", "status": 200,
                        "predictions": answer, "inputs": rows.tolist()})  # fmt: skip
        if live._split.mirrors(rid):  # what the server mirrors; its record comes later
            mirrored += 1
            live.observe("2", 200, False, 50.0, rid, [1], shadow=True)
            live.compare(rid, answer, [1])  # as the server does with the two answers in hand
            records.append({"id": rid, "answered": 1e10, "variant": "2", "shadow": True, "status": 200,
                            "predictions": [1]})  # fmt: skip
    assert 100 < mirrored < 220  # about 40 % of 400
    replayed.ingest(records)
    a, b = live.distributions.summary(), replayed.distributions.summary()
    assert a == b
    assert a["2"]["rows"] == mirrored and a["champion"]["rows"] == 400
    assert a["2"]["drifted_features"] == ["a"]  # the mirrored rows' drift, not nothing
    assert replayed.state()["agreement"] == live.state()["agreement"]
