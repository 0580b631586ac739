"""``register``, ``validate``, ``promote`` and ``models``: the registry side of the table.

>>> COMMANDS["register"].help
'Log a fitted model to MLflow and register a new version of it.'
"""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import Command, Context, Loads, arg

__all__ = ["COMMANDS"]

REF_HELP = "NAME, NAME/VERSION, NAME@ALIAS or models:/..."


def _tags(raw: list[str] | None) -> dict[str, str]:
    from nbdeploy.errors import InvalidInputError

    tags = {}
    for item in raw or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"Malformed --tag {item!r}: expected KEY=VALUE, for example --tag team=fraud.")
        tags[key.strip()] = value
    return tags


def _register(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.registry import register

    tags = _tags(args.tag)
    model = ctx.load(args.model, "MODEL", Loads.MODEL)
    X = ctx.load(args.data, "--data", Loads.TABLE)
    y = ctx.load(args.target, "--target", Loads.COLUMN)
    return register(model, args.name, X, y, alias=args.alias, tags=tags, description=args.description,
                    source=ctx.source, intended_use=args.intended_use)  # fmt: skip


def _validate(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.validation import validate

    X = ctx.load(args.data, "--data", Loads.TABLE)
    y = ctx.load(args.target, "--target", Loads.COLUMN)
    return validate(args.ref, X, y, gates=args.gate, baseline=args.baseline, slices=args.slice, strict=args.strict,
                    confidence=args.confidence, explain=not args.no_explain, explain_rows=args.explain_rows,
                    shap=args.shap)  # fmt: skip


def _promote(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.registry import promote

    return promote(args.ref, alias=args.alias, force=args.force)


def _card(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.cards import card

    return card(args.ref, intended_use=args.intended_use, description=args.description, log=not args.no_log,
                out=args.out)  # fmt: skip


def _models(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.registry import models

    return models(args.name)


_TARGET_CLI = "the target: a column of the --data file (taken out of the features), or a CSV/Parquet file"

COMMANDS = [
    Command(
        "register",
        "Log a fitted model to MLflow and register a new version of it.",
        (
            arg("model", metavar="MODEL", loads=Loads.MODEL, help="expression for the fitted estimator",
                cli_help="a fitted estimator saved with pickle or joblib (load only files you trust)"),
            arg("--name", required=True, help="registered model name"),
            arg("--data", metavar="X", loads=Loads.TABLE, help="expression for the training features",
                cli_help="the training features: a CSV or Parquet file"),
            arg("--target", metavar="Y", loads=Loads.COLUMN, help="expression for the training target",
                cli_help=_TARGET_CLI),
            arg("--alias", help="alias to point at the new version"),
            arg("--tag", action="append", metavar="KEY=VALUE", help="extra tag (repeatable)"),
            arg("--description", help="version description"),
            arg("--intended-use", metavar="TEXT", help="what the model is for, and not for (shown on its card)"),
        ),
        _register,
    ),
    Command(
        "validate",
        "Score a version on held-out data against gates and a baseline; record the report.",
        (
            arg("ref", metavar="REF", help=REF_HELP),
            arg("--data", metavar="X", required=True, loads=Loads.TABLE, help="expression for the evaluation features",
                cli_help="the evaluation features: a CSV or Parquet file"),
            arg("--target", metavar="Y", required=True, loads=Loads.COLUMN,
                help="expression for the evaluation target", cli_help=_TARGET_CLI),
            arg("--gate", action="append", metavar="EXPR", help="METRIC OP VALUE, e.g. 'f1>=0.9' (repeatable)"),
            arg("--baseline", default="auto", metavar="REF|none", help="model to compare with (default: @champion)"),
            arg("--slice", action="append", metavar="COLUMN", help="metrics per value or bin of a column"),
            arg("--strict", action="store_true", help="fail if a gate fails or is not evaluated"),
            arg("--confidence", metavar="LEVEL", help="decide every gate on its one-sided bootstrap bound at this "
                "level, e.g. 0.95 or 95%% (a baseline gate: on the paired difference)"),
            arg("--no-explain", action="store_true", help="leave out the Explain section (importance, dependence)"),
            arg("--explain-rows", type=int, default=500, metavar="N",
                help="rows the Explain section is computed on, a seeded subsample (default 500)"),
            arg("--shap", action="store_true", help="add TreeSHAP values for tree models (needs nbdeploy[explain])"),
        ),
        _validate,
    ),
    Command(
        "promote",
        "Point an alias (default: champion) at a validated model version.",
        (
            arg("ref", metavar="REF", help=REF_HELP),
            arg("--alias", default="champion", help="alias to move (default: champion)"),
            arg("--force", action="store_true", help="promote even if not validated (recorded)"),
        ),
        _promote,
    ),
    Command(
        "card",
        "Render a version's model card (HTML and Markdown) and log it to MLflow.",
        (
            arg("ref", metavar="REF", help=REF_HELP),
            arg("--intended-use", metavar="TEXT", help="record what the model is for first (replaces the last)"),
            arg("--description", metavar="TEXT", help="record a new description first (the validation summary stays)"),
            arg("--out", metavar="DIR", help="also write model_card.html and model_card.md into DIR"),
            arg("--no-log", action="store_true", help="do not log the card to MLflow"),
        ),
        _card,
    ),
    Command(
        "models",
        "List registered models, or the versions of one model.",
        (arg("name", nargs="?", metavar="NAME", help="list the versions of this model"),),
        _models,
    ),
]  # fmt: skip
