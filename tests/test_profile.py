import numpy as np
import pandas as pd

from nbdeploy.stats.profile import bin_index, compute_profile, fingerprint


def test_numeric_profile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(5, 2, 1000)
    values[:50] = np.nan
    prof = compute_profile(pd.DataFrame({"x": values}))
    col = prof["columns"][0]
    present = values[~np.isnan(values)]
    assert prof["rows"] == 1000
    assert col["kind"] == "numeric"
    assert col["missing"] == 0.05
    assert col["min"] == present.min() and col["max"] == present.max()
    assert np.isclose(col["mean"], present.mean()) and np.isclose(col["std"], present.std())
    np.testing.assert_allclose(col["edges"], np.quantile(present, np.arange(1, 10) / 10))
    assert sum(col["counts"]) == present.size
    assert len(col["counts"]) == len(col["edges"]) + 1
    # deciles: every bin holds about a tenth of the values
    assert max(col["counts"]) - min(col["counts"]) <= 2


def test_categorical_profile_frequencies() -> None:
    frame = pd.DataFrame({"city": ["a", "a", "b", None]})
    col = compute_profile(frame)["columns"][0]
    assert col["kind"] == "categorical"
    assert col["frequencies"] == {"a": 0.5, "b": 0.25}
    assert col["missing"] == 0.25


def test_constant_column_has_one_edge_and_arrays_get_names() -> None:
    prof = compute_profile(np.ones((10, 2)))
    assert [c["name"] for c in prof["columns"]] == ["0", "1"]
    assert prof["columns"][0]["edges"] == [1.0]
    assert prof["columns"][0]["counts"] == [0, 10]


def test_bin_index_puts_edge_values_right() -> None:
    assert bin_index([1.0, 2.0], np.array([0.5, 1.0, 1.5, 2.0, 3.0])).tolist() == [0, 1, 1, 2, 2]


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = pd.DataFrame({"x": [1.0, 2.0], "y": [3, 4]})
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.assign(y=[3, 5]))
    assert fingerprint(a) != fingerprint(a.rename(columns={"y": "z"}))
    assert len(fingerprint(a)) == 16
