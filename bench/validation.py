"""Cost of the validation report against the model's own ``predict`` plus the sklearn metrics.

    python bench/validation.py                   # RandomForestClassifier, 100k rows x 30 features
    python bench/validation.py --task regression
    python bench/validation.py --rows 20000 --repeat 5

The report is computed in memory (``nbdeploy.validation.build.build_report``: predictions,
every metric, 200-resample bootstrap intervals, schema/missing/range/drift checks, one
slice, gates, then the HTML and the JSON), with the latency probe excluded
(``latency_calls=0``). Loading the version and recording to MLflow are not part of it.
The reference is one ``model.predict(X)`` plus one call of each ``sklearn.metrics``
function the report uses, on the same data. The budget is 3x the reference. Timings are
medians of ``--repeat`` runs, interleaved so that load from other processes hits both.

The Explain section (permutation importance on a 500-row subsample, 5 shuffles per
feature; partial dependence and ICE of the top 3 features on 200 of those rows; no SHAP)
is timed as its own ratio: the report with it against the report without it, in the
same run. Its budget is 1.5x.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as m
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from nbdeploy.stats.profile import compute_profile
from nbdeploy.validation.build import Candidate, build_report
from nbdeploy.validation.gates import parse_gate
from nbdeploy.validation.report import ValidationReport

BUDGET = 3.0
EXPLAIN_BUDGET = 1.5


def data(task: str, rows: int, features: int, train: int) -> tuple[pd.DataFrame, np.ndarray, Any]:
    maker = make_classification if task == "classification" else make_regression
    kw = {"n_informative": 12} if task == "classification" else {"n_informative": 12, "noise": 10.0}
    X, y = maker(n_samples=rows + train, n_features=features, random_state=0, **kw)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(features)])
    kind = RandomForestClassifier if task == "classification" else RandomForestRegressor
    # Fitted on both cores to save time, then predicting as the default does: one core.
    model = kind(n_estimators=100, random_state=0, n_jobs=2).fit(frame.iloc[:train], y[:train])
    model.set_params(n_jobs=None)
    return frame, y, model


def reference(task: str, model: Any, X: pd.DataFrame, y: np.ndarray) -> float:
    """One predict plus one call of each sklearn metric the report uses."""
    start = time.perf_counter()
    pred = model.predict(X)
    elapsed = time.perf_counter() - start
    calls: list[Callable[[], Any]]
    if task == "classification":
        proba = model.predict_proba(X)  # input of the probabilistic metrics, not timed
        calls = [
            lambda: m.accuracy_score(y, pred),
            lambda: m.balanced_accuracy_score(y, pred),
            lambda: m.precision_score(y, pred),
            lambda: m.recall_score(y, pred),
            lambda: m.f1_score(y, pred),
            lambda: m.roc_auc_score(y, proba[:, 1]),
            lambda: m.log_loss(y, proba),
            lambda: m.confusion_matrix(y, pred),
            lambda: m.roc_curve(y, proba[:, 1]),
        ]
    else:
        calls = [
            lambda: m.root_mean_squared_error(y, pred),
            lambda: m.mean_absolute_error(y, pred),
            lambda: m.r2_score(y, pred),
            lambda: m.mean_absolute_percentage_error(y, pred),
        ]
    start = time.perf_counter()
    for call in calls:
        call()
    return elapsed + time.perf_counter() - start


def report(task: str, candidate: Candidate, X: pd.DataFrame, y: np.ndarray, base: Candidate | None,
           explain: bool = False) -> float:  # fmt: skip
    gates = [parse_gate("f1>=0.8" if task == "classification" else "r2>=0.5")]
    gates.append(parse_gate("f1>=baseline-0.01" if task == "classification" else "rmse<=baseline+1"))
    start = time.perf_counter()
    r: ValidationReport = build_report(candidate, X, y, baseline=base, gates=gates, slices=["slice"], latency_calls=0,
                                       explain=explain)  # fmt: skip
    html = r._repr_html_()
    json.dumps(r.to_dict(), allow_nan=False)
    elapsed = time.perf_counter() - start
    assert r.intervals and len(html) > 1000
    assert not explain or (r.explanation and r.explanation.importances and not r.explanation.warnings)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["classification", "regression"], default="classification")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    frame, y, model = data(args.task, args.rows, args.features, args.train)
    train, X, y_eval = (
        frame.iloc[: args.train],
        frame.iloc[args.train :].reset_index(drop=True),
        y[args.train :],
    )
    profile = compute_profile(train)
    inputs = [(c, "double") for c in frame.columns]
    candidate = Candidate(model, "bench/1", inputs, profile, len(pickle.dumps(model)))
    X = X.assign(slice=np.where(X["f0"] > 0, "high f0", "low f0"))  # a column to slice by
    print(f"setup (data, fit, profile)       {time.perf_counter() - t0:7.2f} s")
    print(f"data                             {len(X)} rows x {args.features} features, {args.task}")

    refs, ours, explained = [], [], []
    for _ in range(args.repeat):
        refs.append(reference(args.task, model, X[frame.columns], y_eval))
        ours.append(report(args.task, candidate, X, y_eval, None))
        explained.append(report(args.task, candidate, X, y_eval, None, explain=True))
    ref, own, full = statistics.median(refs), statistics.median(ours), statistics.median(explained)
    print(f"predict + sklearn metrics        {ref:7.3f} s   runs: " + " ".join(f"{t:.3f}" for t in refs))
    print(f"validation report                {own:7.3f} s   runs: " + " ".join(f"{t:.3f}" for t in ours))
    print(f"ratio                            {own / ref:7.2f}x   (budget {BUDGET:.0f}x)")
    print(f"report with the Explain section  {full:7.3f} s   runs: " + " ".join(f"{t:.3f}" for t in explained))
    print(f"Explain ratio (with / without)   {full / own:7.2f}x   (budget {EXPLAIN_BUDGET}x)")

    base = Candidate(model, "bench/0", inputs, profile, candidate.size_bytes)  # same cost as a second model
    with_base = statistics.median(report(args.task, candidate, X, y_eval, base) for _ in range(args.repeat))
    ratio = with_base / (2 * ref)
    print(f"with a baseline (2 models)       {with_base:7.3f} s   ratio to 2x the reference: {ratio:.2f}x")
    if own / ref > BUDGET:
        raise SystemExit(f"over budget: {own / ref:.2f}x > {BUDGET:.0f}x")
    if full / own > EXPLAIN_BUDGET:
        raise SystemExit(f"the Explain section is over budget: {full / own:.2f}x > {EXPLAIN_BUDGET}x")


if __name__ == "__main__":
    main()
