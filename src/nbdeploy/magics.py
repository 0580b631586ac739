"""The ``%deploy`` line magic: the command table (:mod:`nbdeploy.commands`) in a kernel.

>>> %load_ext nbdeploy                                           # doctest: +SKIP
>>> %deploy register model --name cancer --data X_train --target y_train   # doctest: +SKIP

Arguments that name data are Python expressions evaluated in the notebook's namespace. Any
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
from traitlets import CaselessStrEnum, Float, Unicode, observe

from nbdeploy._quiet import LEVELS, log_level, loud, quiet, set_log_level
from nbdeploy.commands import COMMANDS, MAGIC, add_arguments, overview
from nbdeploy.commands.examples import examples_text
from nbdeploy.errors import NbdeployError, ValidationFailedError, with_docs

__all__ = ["SUBCOMMANDS", "DeployMagics"]

SUBCOMMANDS = {name: c.help for name, c in COMMANDS.items()}
USAGE = "Usage: %deploy SUBCOMMAND [options]   (%deploy SUBCOMMAND --help for its options and examples)"
FIRST_STEPS = """First steps (a guide to each is in docs/ of nbdeploy's repository):
  %deploy register model --name cancer --data X_train --target y_train
  %deploy validate cancer/1 --data X_test --target y_test --gate "f1>=0.9"
  %deploy promote cancer/1
  %deploy serve cancer@champion
  %deploy predict cancer --data X_test.head()
  %deploy monitor cancer
  %deploy stop cancer"""


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


class _KernelContext:
    """How the command handlers see a kernel: expressions, printed messages, widgets."""

    face = MAGIC

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def load(self, text: str | None, option: str, kind: str) -> Any:
        if text is None:
            return None
        try:
            with loud():  # the user's own code: its warnings and output are the user's
                return eval(text, self.shell.user_global_ns, self.shell.user_ns)
        except Exception as exc:
            raise UsageError(f"Could not evaluate {option} {text!r}: {type(exc).__name__}: {exc}.") from None

    def say(self, text: str) -> None:
        print(text)

    def present(self, result: Any) -> Any:
        from nbdeploy.deployments import DeploymentList

        if isinstance(result, DeploymentList) and type(self.shell).__name__ == "ZMQInteractiveShell":
            from nbdeploy.widgets.deployments import DeploymentsPanel

            return DeploymentsPanel(result)
        return result

    def watch(self, deployment: Any, args: argparse.Namespace) -> Any:
        return deployment.monitor(interval=args.interval, window=args.window, panel=args.panel)

    def progress(self, what: str) -> Any:
        """A progress bar under the cell (HTML ``<progress>``, and a line of text elsewhere)."""
        from nbdeploy.widgets.progress import progress_bar

        return progress_bar(what)

    @property
    def source(self) -> str | None:
        ns = self.shell.user_ns
        return ns.get("__session__") or ns.get("__vsc_ipynb_file__") or os.environ.get("JPY_SESSION_NAME")


@magics_class
class DeployMagics(Magics):
    """``%deploy SUBCOMMAND ...``; run ``%deploy`` alone for the list of subcommands."""

    tracking_uri = Unicode(
        "", config=True, help="MLflow tracking URI; empty means MLFLOW_TRACKING_URI, else ./mlflow.db."
    )
    experiment = Unicode("", config=True, help="MLflow experiment for nbdeploy's runs (default 'nbdeploy').")
    home = Unicode("", config=True, help="Folder for deployment state; empty means NBDEPLOY_HOME, else ./.nbdeploy.")

    core_hour_price = Float(
        None, allow_none=True, config=True,
        help="Price of one CPU core for an hour: serve gives its servers cost figures (default none).",
    )  # fmt: skip

    log_level = CaselessStrEnum(
        LEVELS, default_value=log_level(), config=True,
        help="What of MLflow's, alembic's and scikit-learn's log lines and warnings shows under a cell "
        "during %deploy (default ERROR, or NBDEPLOY_LOG_LEVEL): DEBUG shows all.",
    )  # fmt: skip

    @observe("log_level")
    def _push_log_level(self, change: Any) -> None:
        set_log_level(change["new"])

    @observe("core_hour_price")
    def _push_price(self, change: Any) -> None:
        from nbdeploy.config import set_core_hour_price

        set_core_hour_price(change["new"])

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
            print(overview(USAGE) + "\n\n" + FIRST_STEPS)
            return None
        sub, rest = argv[0], argv[1:]
        if sub not in COMMANDS:
            close = difflib.get_close_matches(sub, COMMANDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"Unknown subcommand {sub!r}{hint}; valid subcommands: {', '.join(COMMANDS)}.")
        command = COMMANDS[sub]
        parser = _Parser(prog=f"%deploy {sub}", description=command.help, epilog=examples_text(sub, MAGIC),
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        add_arguments(parser, command, MAGIC)
        try:
            args = parser.parse_args(rest)
        except _HelpShown:
            return None
        if self.shell is None:
            raise UsageError("%deploy needs a running IPython shell.")
        try:
            with quiet():
                return command.run(args, _KernelContext(self.shell))
        except ValidationFailedError as exc:
            from IPython.display import display

            display(exc.report)  # the report first, then the error that fails the cell
            raise  # must fail the cell and nbval, which only print a UsageError; shown as one line
        except NbdeployError as exc:
            raise UsageError(with_docs(exc)) from None


# `%deploy?` shows this: what the magic does, its subcommands, and the first steps
DeployMagics.deploy.__doc__ = f"""Register, validate, serve and monitor models from this notebook.

{overview(USAGE)}

{FIRST_STEPS}
"""
