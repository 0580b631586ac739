"""The one command table behind ``%deploy`` and the ``nbdeploy`` CLI.

Each subcommand is declared once, with its arguments (and their help) and its handler;
:mod:`nbdeploy.magics` and :mod:`nbdeploy.cli` build their parsers from :data:`COMMANDS`.
Importing this package imports neither MLflow, pandas nor numpy: handlers import the core
when they run.

>>> list(COMMANDS)[:4]
['register', 'validate', 'promote', 'models']
"""

from __future__ import annotations

from nbdeploy.commands.capacity_commands import COMMANDS as _CAPACITY
from nbdeploy.commands.data_commands import COMMANDS as _DATA
from nbdeploy.commands.experiment_commands import COMMANDS as _EXPERIMENT
from nbdeploy.commands.registry_commands import COMMANDS as _REGISTRY
from nbdeploy.commands.retrain_commands import COMMANDS as _RETRAIN
from nbdeploy.commands.security_commands import COMMANDS as _SECURITY
from nbdeploy.commands.serving_commands import COMMANDS as _SERVING
from nbdeploy.commands.table import BOTH, CLI, MAGIC, Arg, Command, Context, Loads, add_arguments

__all__ = [
    "BOTH", "CLI", "COMMANDS", "FACE_ONLY", "MAGIC", "Arg", "Command", "Context", "Loads", "add_arguments", "overview",
]  # fmt: skip

COMMANDS: dict[str, Command] = {c.name: c for c in [*_REGISTRY, *_SERVING, *_EXPERIMENT, *_DATA, *_RETRAIN, *_SECURITY,
                                                   *_CAPACITY]}

# Options one front end has and the other has not, and why (docs/index.md lists them too).
FACE_ONLY: dict[tuple[str, str], str] = {
    ("serve", "--attach"): "ties the server to the kernel's life; a CLI process ends at once",
    ("monitor", "--panel"): "opens a JupyterLab side panel",
    ("monitor", "--once"): "prints one snapshot on a terminal and exits",
    ("monitor", "--json"): "prints the /monitor document for scripts",
}


def overview(usage: str) -> str:
    """The list of subcommands with one line each, under ``usage``."""
    width = max(map(len, COMMANDS))
    lines = [usage, "", "Subcommands:"]
    lines += [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    return "\n".join(lines)
