"""The %deploy magic through a real IPython InteractiveShell."""

from __future__ import annotations

from typing import Any

import pytest

from nbdeploy.magics import SUBCOMMANDS
from tests.helpers import usage_error

VALID = ", ".join(SUBCOMMANDS)
REF = " See docs/references.md#model-references"  # what an error on a model reference links to


def test_overview_and_subcommand_help(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for line in ["", "--help"]:
        assert ip.run_line_magic("deploy", line) is None
        out = capsys.readouterr().out
        assert out.startswith("Usage: %deploy SUBCOMMAND [options]")
        for sub in ("register", "promote", "models", "serve", "list", "status", "logs", "predict", "stop"):
            assert f"\n  {sub} " in out
    ip.run_line_magic("deploy", "register --help")
    out = capsys.readouterr().out
    assert out.startswith("usage: %deploy register")
    for option in ("--name", "--data", "--target", "--alias", "--tag", "--description"):
        assert option in out


@pytest.mark.parametrize("face", ["magic", "cli"])
def test_every_subcommand_has_examples_that_its_parser_takes(face: str) -> None:
    """An example that names an option no longer there (or a wrong value) fails here."""
    import argparse
    import shlex

    from nbdeploy.cli import parser as cli_parser
    from nbdeploy.commands import COMMANDS, add_arguments
    from nbdeploy.commands.examples import examples

    for name, command in COMMANDS.items():
        lines = examples(name, face)
        assert lines, f"{name} has no example for the {face}"
        for line in lines:
            argv = shlex.split(line)
            assert argv[0] == name, line
            if face == "magic":
                magic = argparse.ArgumentParser(prog=f"%deploy {name}", exit_on_error=False)
                add_arguments(magic, command, face)
                magic.parse_args(argv[1:])
            else:
                cli_parser().parse_args(argv)


def test_help_shows_examples(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("deploy", "canary --help")
    out = capsys.readouterr().out
    assert "\nexamples:\n  %deploy canary cancer cancer/3 --percent 10 --sticky customer_id\n" in out
    doc = ip.find_line_magic("deploy").__doc__
    assert doc.startswith("Register, validate, serve and monitor models from this notebook.")
    assert "%deploy SUBCOMMAND --help for its options and examples" in doc
    assert "  %deploy register model --name cancer --data X_train --target y_train\n" in doc


def test_register_promote_models_flow(ip: Any, name: str) -> None:
    mv = ip.run_line_magic(
        "deploy",
        f"register model --name {name} --data X_train --target y_train --tag team=ml --tag 'owner=Ada L' "
        "--description 'forest v1'",
    )
    assert (mv.name, mv.version) == (name, 1)
    assert mv.tags["team"] == "ml" and mv.tags["owner"] == "Ada L"
    assert mv.description == "forest v1"
    ip.run_line_magic("deploy", f"register model --name {name} --data 'X_train.iloc[:100]' --alias candidate")
    promoted = ip.run_line_magic("deploy", f"promote {name}@candidate --force")
    assert promoted.version == 2 and promoted.aliases == ["candidate", "champion"]
    listing = ip.run_line_magic("deploy", f"models {name}")
    assert [row[:2] for row in listing.rows] == [["2", "@candidate @champion"], ["1", ""]]
    assert name in repr(ip.run_line_magic("deploy", "models"))


def test_config_trait_sets_tracking_uri(ip: Any, name: str, tmp_path: Any) -> None:
    uri = f"sqlite:///{tmp_path}/other.db"
    ip.run_line_magic("config", f"DeployMagics.tracking_uri = {uri!r}")
    try:
        ip.run_line_magic("deploy", f"register model --name {name} --data X_train")
        assert (tmp_path / "other.db").exists() and (tmp_path / "mlartifacts").is_dir()
    finally:
        ip.run_line_magic("config", "DeployMagics.tracking_uri = ''")


def test_register_in_a_new_store_is_quiet_unless_the_level_is_turned_up(
    ip: Any, name: str, tmp_path: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """MLflow says it creates its tables (in red, under the cell) on a new store: only at DEBUG."""
    for level, store in (("ERROR", "quiet.db"), ("debug", "loud.db")):
        ip.run_line_magic("config", f"DeployMagics.tracking_uri = 'sqlite:///{tmp_path}/{store}'")
        ip.run_line_magic("config", f"DeployMagics.log_level = {level!r}")
        try:
            ip.run_line_magic("deploy", f"register model --name {name} --data X_train")
        finally:
            ip.run_line_magic("config", "DeployMagics.tracking_uri = ''")
            ip.run_line_magic("config", "DeployMagics.log_level = 'ERROR'")
        said = capfd.readouterr().err
        if level == "ERROR":
            assert said == ""
        else:
            assert "INFO mlflow.store.db.utils: Creating initial MLflow database tables..." in said


def test_exact_usage_errors(ip: Any, name: str) -> None:
    ip.user_ns["unfitted"] = __import__("sklearn.linear_model").linear_model.LogisticRegression()
    ip.run_line_magic("deploy", f"register model --name {name} --data X_train --alias champion")
    cases = {
        "regster model": f"Unknown subcommand 'regster' (did you mean 'register'?); valid subcommands: {VALID}.",
        "frobnicate": f"Unknown subcommand 'frobnicate'; valid subcommands: {VALID}.",
        f"register modl --name {name}": "Could not evaluate MODEL 'modl': NameError: name 'modl' is not defined.",
        f"register model --name {name} --data 'X_train[[' ": "Could not evaluate --data 'X_train[[': "
        "SyntaxError: '[' was never closed (<string>, line 1).",
        f"register 'X_train' --name {name}": "The model is of type DataFrame, not a scikit-learn estimator "
        "with a predict method. See docs/register.md#which-models",
        f"register unfitted --name {name}": "The model LogisticRegression is not fitted yet: "
        "call .fit(X, y) before registering it. See docs/register.md#which-models",
        f"register model --name {name} --data X_train --target y_test": "The data has 426 rows but the "
        "target has 143; they must have the same number of rows.",
        "register model --name 'bad name'": "Invalid model name 'bad name': use letters, digits, '_', '-' "
        f"and '.', starting with a letter or digit (at most 128 characters).{REF}",
        f"register model --name {name} --tag team": "Malformed --tag 'team': expected KEY=VALUE, "
        "for example --tag team=fraud.",
        "register model": "%deploy register: the following arguments are required: --name.",
        f"promote {name}/5": f"Model {name!r} has no version 5; its versions are 1.{REF}",
        f"promote {name}@prod": f"Model {name!r} has no alias 'prod'; its aliases are @champion (version 1).{REF}",
        f"promote {name}/x": f"Invalid model reference '{name}/x': expected NAME, NAME/VERSION, NAME@ALIAS, "
        f"models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH.{REF}",
        "register model --name x 'unclosed": "Could not split the arguments of %deploy: No closing quotation.",
    }
    cases[f"register model --name {name} --alias latest"] = (
        "Invalid alias 'latest': MLflow reserves 'latest' and 'v<number>'; choose another."
    )
    cases[f"register model --name {name} --data X_train.head"] = (
        "The data is a method, not a table: pass a DataFrame or a 2-D array "
        "(did you forget the parentheses of a method call?)."
    )
    for line, message in cases.items():
        assert usage_error(ip, line) == message, line
    assert usage_error(ip, "promote ghost-model").startswith(
        "No registered model is named 'ghost-model'; registered models: "
    )


def test_nothing_was_registered_by_failed_calls(ip: Any, name: str) -> None:
    usage_error(ip, f"register model --name {name} --data X_train --target y_test")
    assert (
        usage_error(ip, f"models {name}")
        == f"No registered model is named {name!r}; " + usage_error(ip, "promote ghost-model").split("; ", 1)[1]
    )
