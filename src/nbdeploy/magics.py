"""The ``%deploy`` line magic: a thin router from subcommands to the plain-Python core.

>>> %load_ext nbdeploy                                           # doctest: +SKIP
>>> %deploy register model --name cancer --data X_train --target y_train   # doctest: +SKIP

Each subcommand has an ``_args_<sub>`` method that declares its arguments and a
``_do_<sub>`` method that evaluates them and calls one core function. Any
:class:`~nbdeploy.errors.NbdeployError` becomes a one-sentence ``UsageError``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from traitlets import Unicode, observe

from nbdeploy._serve_magics import SERVE_SUBCOMMANDS, ServeCommands
from nbdeploy.errors import NbdeployError, ValidationFailedError

__all__ = ["DeployMagics"]

SUBCOMMANDS = {
    "register": "Log a fitted model to MLflow and register a new version of it.",
    "validate": "Score a version on held-out data against gates and a baseline; record the report.",
    "promote": "Point an alias (default: champion) at a validated model version.",
    "models": "List registered models, or the versions of one model.",
    **SERVE_SUBCOMMANDS,
}


class _HelpShown(Exception):
    """Raised instead of exiting after argparse printed help."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises ``UsageError`` instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError((message or f"{self.prog} failed").strip())
        raise _HelpShown()


@magics_class
class DeployMagics(ServeCommands, Magics):
    """``%deploy SUBCOMMAND ...``; run ``%deploy`` alone for the list of subcommands."""

    tracking_uri = Unicode(
        "", config=True, help="MLflow tracking URI; empty means MLFLOW_TRACKING_URI, else ./mlflow.db."
    )
    experiment = Unicode("", config=True, help="MLflow experiment for nbdeploy's runs (default 'nbdeploy').")
    home = Unicode("", config=True, help="Folder for deployment state; empty means NBDEPLOY_HOME, else ./.nbdeploy.")

    @observe("tracking_uri", "experiment", "home")
    def _push_setting(self, change: Any) -> None:
        """``%config DeployMagics.X = ...`` changes the core's setting (``''`` resets it)."""
        from nbdeploy.config import configure

        configure(**{change["name"]: change["new"]})

    @line_magic
    def deploy(self, line: str) -> Any:
        """Register, validate, serve and monitor models; ``%deploy`` alone lists subcommands."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"Could not split the arguments of %deploy: {exc}.") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(self._overview())
            return None
        sub, rest = argv[0], argv[1:]
        if sub not in SUBCOMMANDS:
            close = difflib.get_close_matches(sub, SUBCOMMANDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"Unknown subcommand {sub!r}{hint}; valid subcommands: {', '.join(SUBCOMMANDS)}.")
        parser = _Parser(prog=f"%deploy {sub}", description=SUBCOMMANDS[sub])
        getattr(self, f"_args_{sub}")(parser)
        try:
            args = parser.parse_args(rest)
        except _HelpShown:
            return None
        try:
            return getattr(self, f"_do_{sub}")(args)
        except ValidationFailedError:
            raise  # must fail the cell and nbval, which only print a UsageError; shown as one line
        except NbdeployError as exc:
            raise UsageError(str(exc)) from None

    @staticmethod
    def _overview() -> str:
        width = max(map(len, SUBCOMMANDS))
        lines = [
            "Usage: %deploy SUBCOMMAND [options]   (%deploy SUBCOMMAND --help for its options)",
            "",
            "Subcommands:",
        ]
        lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
        return "\n".join(lines)

    # helpers ---------------------------------------------------------------------------

    @property
    def _shell(self) -> Any:
        if self.shell is None:
            raise UsageError("%deploy needs a running IPython shell.")
        return self.shell

    def _eval(self, expr: str | None, option: str) -> Any:
        """Evaluate a Python expression in the notebook's namespace."""
        if expr is None:
            return None
        try:
            return eval(expr, self._shell.user_global_ns, self._shell.user_ns)
        except Exception as exc:
            raise UsageError(f"Could not evaluate {option} {expr!r}: {type(exc).__name__}: {exc}.") from None

    def _notebook_path(self) -> str | None:
        ns = self._shell.user_ns
        return ns.get("__session__") or ns.get("__vsc_ipynb_file__") or os.environ.get("JPY_SESSION_NAME")

    @staticmethod
    def _tags(raw: list[str] | None) -> dict[str, str]:
        tags = {}
        for item in raw or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"Malformed --tag {item!r}: expected KEY=VALUE, for example --tag team=fraud.")
            tags[key.strip()] = value
        return tags

    # register --------------------------------------------------------------------------

    def _args_register(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL", help="expression for the fitted estimator")
        p.add_argument("--name", required=True, help="registered model name")
        p.add_argument("--data", metavar="X", help="expression for the training features")
        p.add_argument("--target", metavar="Y", help="expression for the training target")
        p.add_argument("--alias", help="alias to point at the new version")
        p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="extra tag (repeatable)")
        p.add_argument("--description", help="version description")

    def _do_register(self, args: argparse.Namespace) -> Any:
        from nbdeploy.registry import register

        tags = self._tags(args.tag)
        model = self._eval(args.model, "MODEL")
        X = self._eval(args.data, "--data")
        y = self._eval(args.target, "--target")
        return register(
            model,
            args.name,
            X,
            y,
            alias=args.alias,
            tags=tags,
            description=args.description,
            source=self._notebook_path(),
        )

    # validate --------------------------------------------------------------------------

    def _args_validate(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("ref", metavar="REF", help="NAME, NAME/VERSION, NAME@ALIAS or models:/...")
        p.add_argument("--data", metavar="X", required=True, help="expression for the evaluation features")
        p.add_argument("--target", metavar="Y", required=True, help="expression for the evaluation target")
        p.add_argument("--gate", action="append", metavar="EXPR", help="METRIC OP VALUE, e.g. 'f1>=0.9'")
        p.add_argument("--baseline", default="auto", metavar="REF|none", help="default: @champion")
        p.add_argument("--slice", action="append", metavar="COLUMN", help="metrics per value or bin")
        p.add_argument("--strict", action="store_true", help="fail if a gate fails or is not evaluated")

    def _do_validate(self, args: argparse.Namespace) -> Any:
        from nbdeploy.validation import validate

        X = self._eval(args.data, "--data")
        y = self._eval(args.target, "--target")
        try:
            return validate(
                args.ref, X, y, gates=args.gate, baseline=args.baseline, slices=args.slice, strict=args.strict
            )
        except ValidationFailedError as exc:
            from IPython.display import display

            display(exc.report)  # the report first, then the error that fails the cell
            raise

    # promote / models ------------------------------------------------------------------

    def _args_promote(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("ref", metavar="REF", help="NAME, NAME/VERSION, NAME@ALIAS or models:/...")
        p.add_argument("--alias", default="champion", help="alias to move (default: champion)")
        p.add_argument("--force", action="store_true", help="promote even if not validated (recorded)")

    def _do_promote(self, args: argparse.Namespace) -> Any:
        from nbdeploy.registry import promote

        return promote(args.ref, alias=args.alias, force=args.force)

    def _args_models(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", nargs="?", metavar="NAME", help="list the versions of this model")

    def _do_models(self, args: argparse.Namespace) -> Any:
        from nbdeploy.registry import models

        return models(args.name)
