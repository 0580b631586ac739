"""Batch scoring with real scoring processes: the same answers as the model in this process,
every row once and in order, errors that name the rows, and no process or file left behind
when a run fails or a process is killed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

import nbdeploy
from nbdeploy.errors import DeploymentError, InvalidInputError
from tests.helpers import eventually, usage_error


def _workers() -> list[int]:
    """Pids of this process's scoring processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"nbdeploy.serving.batch_worker" in cmdline and parent == os.getpid():
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def rows(cancer: dict[str, Any]) -> pd.DataFrame:
    """20 copies of the test rows, with an id column the model does not take."""
    big = pd.concat([cancer["X_test"]] * 20, ignore_index=True)
    return big.assign(customer=[f"c{i}" for i in range(len(big))])


def test_batch_equals_the_model_in_process_row_for_row(
    two_versions: str, cancer: dict[str, Any], rows: pd.DataFrame, tmp_path: Path
) -> None:
    rows.to_parquet(tmp_path / "in.parquet")
    seen: list[tuple[int, int | None]] = []
    result = nbdeploy.batch(f"{two_versions}/1", tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=700,
                            workers=2, key="customer", progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    out = result.frame()
    model, X = cancer["model"], rows.drop(columns="customer")
    assert result.rows == len(out) == len(rows) and list(out["row"]) == list(range(len(rows)))
    assert list(out["customer"]) == list(rows["customer"])
    np.testing.assert_array_equal(out["prediction"], model.predict(X))
    np.testing.assert_array_equal(out[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(X))
    assert seen[-1] == (len(rows), len(rows)) and seen[0][1] == len(rows)
    from nbdeploy.registry import client

    run = client().get_run(result.run_id)
    assert run.data.tags["nbdeploy.batch.model"] == f"{two_versions}/1" and run.data.metrics["rows"] == len(rows)
    assert run.data.tags["nbdeploy.batch.model_version"] == "1"
    assert not _workers() and not list(tmp_path.glob(".*partial"))


def test_the_magic_takes_a_dataframe_and_the_cli_a_csv(
    two_versions: str, cancer: dict[str, Any], ip: Any, tmp_path: Path
) -> None:
    from nbdeploy.cli import main

    ref = f"{two_versions}/2"
    result = ip.run_line_magic("deploy", f"batch {ref} --data X_test --out {tmp_path / 'm.csv'} --workers 1 --no-proba")
    by_magic = pd.read_csv(tmp_path / "m.csv")
    assert list(by_magic.columns) == ["row", "prediction"] and result.workers == 1
    cancer["X_test"].to_csv(tmp_path / "in.csv", index=False)
    assert main(["batch", ref, "--data", str(tmp_path / "in.csv"), "--out", str(tmp_path / "c.parquet"),
                 "--chunk-rows", "50"]) == 0  # fmt: skip
    by_cli = pd.read_parquet(tmp_path / "c.parquet")
    np.testing.assert_array_equal(by_cli["prediction"], by_magic["prediction"])
    assert "--data 'missing.csv' is not a file." in usage_error(ip, f"batch {ref} --data missing.csv --out o.csv")
    assert "Invalid worker count 0" in usage_error(ip, f"batch {ref} --data X_test --out o.csv --workers 0")
    assert "is neither .csv nor .parquet" in usage_error(ip, f"batch {ref} --data X_test --out o.json")
    assert "--key 'nope' is not a column" in usage_error(ip, f"batch {ref} --data X_test --out o.csv --key nope")


def test_input_that_breaks_the_signature_names_its_rows_and_leaves_nothing(
    two_versions: str, rows: pd.DataFrame, tmp_path: Path
) -> None:
    ref, out = f"{two_versions}/1", tmp_path / "out.parquet"
    text = rows.astype({"mean radius": str})
    text.loc[[2100, 2222], "mean radius"] = ["abc", "-"]
    text.to_parquet(tmp_path / "text.parquet")
    with pytest.raises(InvalidInputError, match=r"'mean radius' expects double values; rows 2,100, 2,222 are not"):
        nbdeploy.batch(ref, tmp_path / "text.parquet", out, chunk_rows=700, workers=2, log_run=False)
    mixed = rows.astype({"worst area": object})
    mixed.loc[1999, "worst area"] = "n/a"  # a DataFrame column of numbers and text
    with pytest.raises(InvalidInputError, match=r"'worst area' expects double values; rows 1,999 are not numbers"):
        nbdeploy.batch(ref, mixed, out, chunk_rows=500, workers=2, log_run=False)
    text.to_csv(tmp_path / "text.csv", index=False)  # a CSV: pandas reads each chunk; numbers as numbers
    with pytest.raises(InvalidInputError, match=r"'mean radius' expects double values; rows 2,100, 2,222 are not"):
        nbdeploy.batch(ref, tmp_path / "text.csv", out, chunk_rows=1000, workers=1, log_run=False)
    rows.drop(columns="mean texture").to_parquet(tmp_path / "narrow.parquet")
    with pytest.raises(InvalidInputError, match=r"--data is missing 1 column\(s\) the model takes: 'mean texture'"):
        nbdeploy.batch(ref, tmp_path / "narrow.parquet", out, workers=1, log_run=False)
    rows.head(0).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(InvalidInputError, match="has no rows to score"):
        nbdeploy.batch(ref, tmp_path / "empty.parquet", out, workers=1, log_run=False)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidInputError, match="could not be read"):
        nbdeploy.batch(ref, tmp_path / "broken.parquet", out, workers=1, log_run=False)
    assert not out.exists() and not list(tmp_path.glob(".*partial")) and not _workers()


def test_a_killed_scoring_process_fails_the_run_and_nothing_is_left(
    two_versions: str, rows: pd.DataFrame, tmp_path: Path
) -> None:
    pd.concat([rows] * 10, ignore_index=True).to_parquet(tmp_path / "in.parquet")
    out, failure = tmp_path / "out.parquet", []

    def run() -> None:
        try:
            nbdeploy.batch(f"{two_versions}/1", tmp_path / "in.parquet", out, chunk_rows=50, workers=2, log_run=False)
        except Exception as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    pids = eventually(_workers, lambda p: len(p) == 2)
    eventually(lambda: list(tmp_path.glob(".*partial")))  # scoring has begun
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive() and len(failure) == 1, failure
    assert isinstance(failure[0], DeploymentError) and "The scoring process ended while scoring rows" in str(failure[0])
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    deadline = time.monotonic() + 10
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _workers()


class ChattyForest(RandomForestClassifier):
    """A forest whose predict_proba writes to descriptor 1, as native libraries' logs do."""

    def predict_proba(self, X: Any) -> Any:
        os.write(1, b"[native] a log line on stdout\n")
        return super().predict_proba(X)


def test_hostile_files_keys_and_models(two_versions: str, cancer: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    X, model, ref = cancer["X_test"], cancer["model"], f"{two_versions}/1"
    X.to_parquet(tmp_path / "in.parquet")
    with pytest.raises(InvalidInputError, match="is the --data file"):
        nbdeploy.batch(ref, tmp_path / "in.parquet", tmp_path / "in.parquet", log_run=False)
    with pytest.raises(InvalidInputError, match="--key 'row' is also a column of the output"):
        nbdeploy.batch(ref, X.assign(row=1), tmp_path / "o.parquet", key="row", log_run=False)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidInputError, match="could not be read"):
        nbdeploy.batch(ref, tmp_path / "empty.csv", tmp_path / "o.parquet", log_run=False)
    # a trailing comma on every row, and a key that looks like numbers in the first chunk only
    keyed = X.assign(id=[f"{i:05d}" for i in range(len(X) - 1)] + ["last"])
    text = keyed.to_csv(index=False).replace("\n", ",\n").replace(",\n", "\n", 1)  # header without it
    (tmp_path / "trailing.csv").write_text(text)
    out = nbdeploy.batch(ref, tmp_path / "trailing.csv", tmp_path / "t.parquet", key="id", chunk_rows=50,
                         workers=1, log_run=False).frame()  # fmt: skip
    np.testing.assert_array_equal(out["prediction"], model.predict(X))
    assert out["id"].tolist() == keyed["id"].tolist()  # '00001' stays '00001'
    stale = [Path("/dev/shm") / "nbdeploy-batch-999999999-x", tmp_path / ".t.parquet.999999999.partial"]
    for path in stale:  # left by a kernel killed mid-run (no such pid): swept by the next run
        path.mkdir() if path.suffix != ".partial" else path.write_text("")
    nbdeploy.batch(ref, X, tmp_path / "t.parquet", workers=1, log_run=False)
    assert not any(p.exists() for p in stale)
    # a model with two outputs per row, and one whose library writes on descriptor 1
    two = LinearRegression().fit(cancer["X_train"], np.c_[cancer["y_train"], -cancer["y_train"]])
    two_ref = nbdeploy.register(two, f"two-out-{os.getpid()}", cancer["X_train"]).ref
    wide = nbdeploy.batch(two_ref, X, tmp_path / "w.parquet", workers=1, log_run=False).frame()
    np.testing.assert_allclose(wide[["prediction_0", "prediction_1"]].to_numpy(), two.predict(X))
    chatty = ChattyForest(n_estimators=5, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    chatty_ref = nbdeploy.register(chatty, f"chatty-{os.getpid()}", cancer["X_train"], cancer["y_train"]).ref
    said = nbdeploy.batch(chatty_ref, X, tmp_path / "c.parquet", workers=1, chunk_rows=40, log_run=False).frame()
    np.testing.assert_array_equal(said["prediction"], chatty.predict(X))
    assert not _workers()
