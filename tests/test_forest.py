"""A forest's predictions summed tree by tree (nbdeploy.serving.forest) equal scikit-learn's to
the last bit, or are not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, make_classification
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor

from nbdeploy.serving import forest
from nbdeploy.serving.forest import fast_methods

CASES = [
    (RandomForestClassifier, load_breast_cancer),
    (ExtraTreesClassifier, load_iris),
    (RandomForestRegressor, load_diabetes),
    (ExtraTreesRegressor, load_diabetes),
]


@pytest.mark.parametrize(("kind", "dataset"), CASES, ids=[k.__name__ for k, _ in CASES])
@pytest.mark.parametrize("frame", [True, False], ids=["DataFrame", "array"])
def test_every_forest_kind_gives_scikit_learns_answers_to_the_bit(kind, dataset, frame):
    X, y = dataset(return_X_y=True, as_frame=frame)
    model = kind(n_estimators=30, random_state=0).fit(X, y)
    methods = fast_methods(model)
    assert set(methods) == ({"predict", "predict_proba"} if hasattr(model, "classes_") else {"predict"})
    rows = [X[:1], X[:17], X] if not frame else [X.head(1), X.head(17), X]
    for name, method in methods.items():
        for part in rows:
            mine, theirs = method(part), getattr(model, name)(part)
            assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
            assert np.array_equal(mine, theirs), name


def test_missing_values_and_bad_input_behave_as_scikit_learn():
    X, y = make_classification(n_samples=300, n_features=6, random_state=0)
    X[::7, 2] = np.nan  # trees fit with missing values send them down a learnt side
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    methods = fast_methods(model)
    assert methods, "a forest fit with missing values qualifies"
    probe = X.copy()
    probe[::3, 4] = np.nan
    assert np.array_equal(methods["predict_proba"](probe), model.predict_proba(probe))
    for bad in (X[:, :5], np.full((2, 6), np.inf)):  # a feature short; infinity
        with pytest.raises(ValueError) as mine:
            methods["predict"](bad)
        with pytest.raises(ValueError) as theirs:
            model.predict(bad)
        assert str(mine.value) == str(theirs.value)


def test_models_that_do_not_qualify_keep_their_own_methods():
    X, y = load_iris(return_X_y=True)

    class Tweaked(RandomForestClassifier):  # a subclass may change what predict means
        pass

    assert fast_methods(Tweaked(n_estimators=5).fit(X, y)) == {}
    assert fast_methods(RandomForestClassifier(n_estimators=5).fit(X, np.c_[y, y])) == {}  # two outputs
    assert fast_methods(RandomForestClassifier(n_estimators=5)) == {}  # never fit
    mixed = RandomForestClassifier(n_estimators=5).fit(X, y)
    mixed.estimators_[2] = object()
    assert fast_methods(mixed) == {}
    # threads add the trees in the order they finish: scikit-learn's own last bit varies
    assert fast_methods(RandomForestClassifier(n_estimators=5, n_jobs=2).fit(X, y)) == {}
    pruned = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    pruned.estimators_ = np.array(pruned.estimators_[:3], dtype=object)  # trees kept by a mask
    assert set(fast_methods(pruned)) == {"predict", "predict_proba"}
    assert np.array_equal(fast_methods(pruned)["predict_proba"](X), pruned.predict_proba(X))


def test_a_sum_that_differs_by_one_bit_is_refused(monkeypatch):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    honest = forest.FastForest._sum

    def off_by_a_bit(self, rows):
        total = honest(self, rows)
        total[0, 0] = np.nextafter(total[0, 0], 2.0)
        return total

    monkeypatch.setattr(forest.FastForest, "_sum", off_by_a_bit)
    assert fast_methods(model) == {}


def test_the_served_model_uses_it_and_still_scores_its_confidences(tmp_path):
    """The loader's path: a forest saved as nbdeploy saves it predicts through FastForest, and
    the per-row confidence (what the accuracy estimate reads) comes from the same one pass."""
    from nbdeploy.serving.forest import FastForest
    from nbdeploy.serving.loader import LoadedModel

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    methods = fast_methods(model)
    loaded = LoadedModel(methods.pop("predict"), None, None, str(tmp_path), methods)
    assert isinstance(loaded.proba_owner(), RandomForestClassifier)
    assert isinstance(loaded.predict.__self__, FastForest)
    predicted, confidence = loaded.scored_call(X.head(40))
    assert np.array_equal(predicted, model.predict(X.head(40)))
    assert confidence == pd.Series(model.predict_proba(X.head(40)).max(axis=1)).tolist()
