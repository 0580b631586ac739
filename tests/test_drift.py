"""Drift statistics against a training profile: PSI, binned KS, chi-square."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nbdeploy.stats import drift
from nbdeploy.stats.profile import compute_profile
from tests.helpers import imported_after


def numeric_column(values: np.ndarray) -> dict:
    return compute_profile(pd.DataFrame({"x": values}))["columns"][0]


def test_psi_matches_its_formula() -> None:
    assert drift.psi([50, 50], [50, 50]) == 0.0
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert drift.psi([50, 50], [90, 10]) == pytest.approx(expected)
    assert drift.psi([1, 0], [0, 1]) > 10  # an empty bin is floored, not infinite
    assert np.isnan(drift.psi([0, 0], [1, 1]))


def test_same_distribution_is_ok_and_a_shift_is_drift() -> None:
    rng = np.random.default_rng(0)
    column = numeric_column(rng.normal(size=5000))
    same = drift.column_drift(column, rng.normal(size=5000))
    assert same.status == "ok" and same.psi < 0.02 and same.p_value > 0.05 and same.test == "ks"
    shifted = drift.column_drift(column, rng.normal(loc=1.0, size=5000))
    assert shifted.status == "drift" and shifted.psi > 0.25 and shifted.p_value < 1e-6
    assert shifted.rows == 5000


def test_binned_ks_is_a_close_lower_bound_of_the_exact_statistic() -> None:
    rng = np.random.default_rng(1)
    train, new = rng.normal(size=20_000), rng.normal(loc=0.3, scale=1.2, size=20_000)
    got = drift.column_drift(numeric_column(train), new)
    exact = stats.ks_2samp(train, new).statistic
    assert got.statistic <= exact + 1e-12
    assert got.statistic > exact - 0.05
    # the p-value is the two-sample asymptotic one for that statistic
    en = round(20_000 * 20_000 / 40_000)
    assert got.p_value == pytest.approx(stats.kstwo.sf(got.statistic, en))


def test_values_outside_the_training_range_count_in_the_end_bins() -> None:
    column = numeric_column(np.arange(100.0))
    counts = drift.counts(column, np.array([-5.0, 0.0, 50.0, 99.0, 99.5, np.nan]))
    assert counts.size == len(column["edges"]) + 3
    assert (counts[0], counts[-1], counts.sum()) == (1, 1, 5)  # below min, above max; NaN left out
    above = drift.column_drift(column, np.full(50, 1000.0))
    assert above.statistic == pytest.approx(1.0) and above.status == "drift"


def test_counts_add_up_across_windows() -> None:
    rng = np.random.default_rng(2)
    column = numeric_column(rng.normal(size=1000))
    a, b = rng.normal(size=300), rng.normal(loc=0.5, size=700)
    total = drift.counts(column, a) + drift.counts(column, b)
    assert drift.drift_from_counts(column, total) == drift.column_drift(column, np.concatenate([a, b]))


def test_categorical_uses_chi_square_and_an_other_bucket() -> None:
    train = pd.DataFrame({"city": ["Paris"] * 60 + ["Lyon"] * 30 + ["Nice"] * 10})
    profile = compute_profile(train)
    column = {**profile["columns"][0], "rows": profile["rows"]}
    same = drift.column_drift(column, pd.Series(["Paris"] * 6 + ["Lyon"] * 3 + ["Nice"]))
    assert same.test == "chi2" and same.psi == pytest.approx(0.0, abs=1e-9) and same.p_value == pytest.approx(1)
    new = pd.Series(["Paris"] * 20 + ["Lyon"] * 20 + ["Nice"] * 20 + ["Lille"] * 40 + [None] * 5)
    assert drift.counts(column, new).tolist() == [20, 20, 20, 40]  # Lille in "other", None left out
    got = drift.column_drift(column, new)
    table = np.array([[60, 30, 10, 0], [20, 20, 20, 40]])
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert (got.statistic, got.p_value) == (pytest.approx(chi2), pytest.approx(p))
    assert got.status == "drift"


def test_frame_drift_against_a_profile() -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(size=2000), "c": rng.choice(["x", "y"], 2000)})
    profile = compute_profile(X)
    new = X.assign(a=X["a"] + 2, b=X["b"].where(X.index % 2 == 0))
    result = {d.name: d for d in drift.frame_drift(profile, new)}
    assert set(result) == {"a", "b", "c"}
    assert result["a"].status == "drift" and result["b"].status == "ok" and result["c"].status == "ok"
    assert result["b"].rows == 1000  # missing values are not drift
    assert [d.name for d in drift.frame_drift(profile, new, columns=["c"])] == ["c"]
    # arrays: the profile names their columns "0", "1", ...
    arr_profile = compute_profile(rng.normal(size=(500, 2)))
    assert [d.name for d in drift.frame_drift(arr_profile, pd.DataFrame(rng.normal(size=(50, 2))))] == [
        "0",
        "1",
    ]


def test_unusable_values_are_reported_not_raised() -> None:
    column = numeric_column(np.arange(10.0))
    assert drift.column_drift(column, np.array(["a", "b"], dtype=object)).status == "type mismatch"
    nothing = drift.column_drift(column, np.array([np.nan, np.nan]))
    assert nothing.status == "no data" and nothing.to_dict()["psi"] is None


def test_drift_module_needs_only_numpy_and_scipy() -> None:
    assert imported_after("import nbdeploy.stats.drift", ["pandas", "sklearn", "mlflow", "IPython"]) == []
