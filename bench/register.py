"""Time ``nbdeploy.register`` of the quickstart RandomForest (breast_cancer, 100 trees).

    python bench/register.py            # median of 5, plus MLflow's defaults for comparison

Imports and the first-use creation of the SQLite store are excluded (timed separately).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    tmp = tempfile.mkdtemp(prefix="nbdeploy-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    t0 = time.perf_counter()
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    import nbdeploy

    imports = time.perf_counter() - t0
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)

    t0 = time.perf_counter()
    nbdeploy.register(model, "warmup", X, y)
    first = time.perf_counter() - t0

    ours = []
    for _ in range(5):
        t0 = time.perf_counter()
        nbdeploy.register(model, "cancer", X, y)
        ours.append(time.perf_counter() - t0)

    theirs = []
    for _ in range(5):
        t0 = time.perf_counter()
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=X.iloc[:5],
                registered_model_name="plain",
                skops_trusted_types=["sklearn.tree._tree.Tree"],  # the default format refuses forests otherwise
            )
        theirs.append(time.perf_counter() - t0)

    code = (
        "import time\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\nt = time.perf_counter()\n"
        "ip.run_line_magic('load_ext', 'nbdeploy')\nprint(time.perf_counter() - t)"
    )
    load_ext = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    print(f"imports (mlflow, sklearn, nbdeploy)          {imports:7.3f} s")
    print(f"first register (creates the SQLite store)  {first:7.3f} s")
    print(
        f"nbdeploy.register, median of 5             {statistics.median(ours):7.3f} s   runs: "
        + " ".join(f"{t:.3f}" for t in ours)
    )
    print(
        f"mlflow.sklearn.log_model defaults, median  {statistics.median(theirs):7.3f} s   runs: "
        + " ".join(f"{t:.3f}" for t in theirs)
    )
    print(f"ratio (MLflow defaults / nbdeploy)         {statistics.median(theirs) / statistics.median(ours):7.1f}x")
    print(f"%load_ext nbdeploy                         {load_ext * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
