"""The ``nbdeploy`` console script: the same commands and options as ``%deploy``, on files."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nbdeploy.cli import parser
from nbdeploy.commands import COMMANDS, FACE_ONLY


def nbdeploy_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["NBDEPLOY_HOME"] = str(home)
    return subprocess.run(["nbdeploy", *args], capture_output=True, text=True, env=env, timeout=300)


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", help_text)) - {"-h", "--help"}


def _cli_help(sub: str) -> str:
    top = parser()
    action = next(a for a in top._actions if a.dest == "command")
    return action.choices[sub].format_help()  # type: ignore[index]


def test_both_front_ends_have_the_same_commands_and_options(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    top = nbdeploy_cli("--help")
    assert top.returncode == 0
    for sub in COMMANDS:
        assert re.search(rf"^\s+{sub}\s", top.stdout, re.M), f"nbdeploy --help does not list {sub}"
        ip.run_line_magic("deploy", f"{sub} --help")
        magic = _options(capsys.readouterr().out)
        cli = _options(_cli_help(sub))
        only = {option for (command, option) in FACE_ONLY if command == sub}
        assert magic - only == cli - only, sub
        assert only <= magic | cli, f"FACE_ONLY names options {sub} does not have"
    serve = _cli_help("serve")
    assert "--windows" in serve and "monitoring windows" in serve  # every option has help text
    for action in next(a for a in parser()._actions if a.dest == "command").choices["serve"]._actions:  # type: ignore[union-attr]
        assert action.help, action.option_strings


@pytest.fixture
def files(tmp_path: Path, cancer: dict[str, Any]) -> dict[str, Path]:
    import joblib

    train = cancer["X_train"].assign(label=cancer["y_train"])
    train.to_csv(tmp_path / "train.csv", index=False)
    cancer["X_test"].assign(label=cancer["y_test"]).to_parquet(tmp_path / "test.parquet")
    cancer["X_test"].head(5).to_csv(tmp_path / "rows.csv", index=False)
    cancer["X_test"].head(0).to_csv(tmp_path / "empty.csv", index=False)
    for garbage in ("binary.csv", "binary.parquet"):
        (tmp_path / garbage).write_bytes(b"\x00\xff\xfe\x80" * 64)
    joblib.dump(cancer["model"], tmp_path / "model.joblib")
    return {p.stem: p for p in tmp_path.iterdir()}


def test_register_validate_promote_serve_from_a_terminal(files: dict[str, Path], name: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = nbdeploy_cli("register", str(files["model"]), "--name", name, "--data", str(files["train"]),
                       "--target", "label")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{name}/1" in out.stdout
    failed = nbdeploy_cli("validate", f"{name}/1", "--data", str(files["test"]), "--target", "label",
                          "--gate", "accuracy>=0.9999", "--strict")  # fmt: skip
    assert failed.returncode == 1 and "accuracy" in failed.stdout
    assert failed.stderr.startswith("nbdeploy: error: ") and "Traceback" not in failed.stderr
    passed = nbdeploy_cli("validate", f"{name}/1", "--data", str(files["test"]), "--target", "label",
                          "--gate", "accuracy>=0.8", "--strict")  # fmt: skip
    assert passed.returncode == 0, passed.stderr
    assert nbdeploy_cli("promote", f"{name}/1").returncode == 0
    served = nbdeploy_cli("serve", f"{name}@champion", "--windows", "30s,15m", home=home)
    assert served.returncode == 0, served.stderr
    try:
        first = json.loads(nbdeploy_cli("monitor", name, "--once", "--json", home=home).stdout)
        assert list(first["windows"]) == ["30s"]  # the deployment's first window by default
        other = json.loads(nbdeploy_cli("monitor", name, "--window", "15m", "--once", "--json", home=home).stdout)
        assert list(other["windows"]) == ["15m"]
        unknown = nbdeploy_cli("monitor", name, "--window", "1m", "--once", home=home)
        assert unknown.returncode == 1 and "Unknown window '1m'; windows: 30s, 15m." in unknown.stderr
        predicted = nbdeploy_cli("predict", name, "--data", str(files["rows"]), home=home)
        assert predicted.returncode == 0, predicted.stderr
        assert len(json.loads(predicted.stdout)) == 5
    finally:
        stopped = nbdeploy_cli("stop", name, home=home)
    assert stopped.stdout.strip() == f"Stopped {name}."
    assert nbdeploy_cli("stop", name, home=home).stdout.strip() == f"{name} was not running."


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["register", "{tmp}/nope.pkl", "--name", "x"], "MODEL '{tmp}/nope.pkl' is not a file"),
        (["register", "{tmp}/train.csv", "--name", "x"], "MODEL '{tmp}/train.csv' could not be loaded"),
        (["validate", "x/1", "--data", "{tmp}/nope.csv", "--target", "y"], "--data '{tmp}/nope.csv' is not a file"),
        (["validate", "x/1", "--data", "{tmp}/model.joblib", "--target", "y"],
         "--data '{tmp}/model.joblib' is neither .csv nor .parquet"),
        (["validate", "x/1", "--data", "{tmp}/binary.csv", "--target", "y"],
         "--data '{tmp}/binary.csv' could not be read as a table"),
        (["validate", "x/1", "--data", "{tmp}/binary.parquet", "--target", "y"],
         "--data '{tmp}/binary.parquet' could not be read as a table"),
        (["validate", "x/1", "--data", "{tmp}/rows.csv", "--target", "{tmp}/train.csv"],
         "--target '{tmp}/train.csv' has 31 columns; give a file of one column."),
        (["stop"], "Give either a deployment NAME or --all to stop."),
        (["validate", "x/1", "--data", "{tmp}/rows.json", "--target", "y"],
         "--data '{tmp}/rows.json' is neither .csv nor .parquet"),
        (["validate", "x/1", "--data", "{tmp}/empty.csv", "--target", "y"], "--data '{tmp}/empty.csv' has no rows."),
        (["validate", "x/1", "--data", "{tmp}/rows.csv", "--target", "lable"],
         "--target 'lable' is not a column of the table given (mean radius, mean texture, "),
        (["feedback", "x", "--ids", "{tmp}/rows.csv", "--target", "y"], "--ids '{tmp}/rows.csv' has no 'id' column"),
        (["--home", "{tmp}/rows.csv", "serve", "x/1"], "Cannot use {tmp}/rows.csv"),
        (["monitor", "x", "--interval", "0"], "No deployment is named 'x'"),
    ],
)  # fmt: skip
def test_bad_files_are_one_sentence(files: dict[str, Path], argv: list[str], message: str, tmp_path: Path) -> None:
    out = nbdeploy_cli(*[a.format(tmp=tmp_path) for a in argv])
    assert out.returncode == 1
    assert out.stderr.startswith("nbdeploy: error: " + message.format(tmp=tmp_path)), out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_non_finite_numbers_are_refused_by_both_front_ends(ip: Any) -> None:
    from tests.helpers import usage_error

    for option in ("--max-body-mb", "--max-wait-ms", "--replica-cpus"):
        for value in ("nan", "inf"):
            assert usage_error(ip, f"serve x {option} {value}") == (
                f"%deploy serve: argument {option}: {value!r} is not a finite number."
            )
    out = nbdeploy_cli("serve", "x", "--max-body-mb", "nan")
    assert out.returncode == 2 and "argument --max-body-mb: 'nan' is not a finite number" in out.stderr


def test_a_csv_index_column_is_not_a_feature(files: dict[str, Path], cancer: dict[str, Any], name: str) -> None:
    with_index = files["train"].with_name("indexed.csv")
    cancer["X_train"].assign(label=cancer["y_train"]).to_csv(with_index)  # index=True: an "Unnamed: 0" column
    out = nbdeploy_cli("register", str(files["model"]), "--name", name, "--data", str(with_index), "--target", "label")
    assert out.returncode == 0, out.stderr
    import nbdeploy

    assert [column for column, _ in nbdeploy.resolve(f"{name}/1").inputs] == list(cancer["X_train"].columns)
