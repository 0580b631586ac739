"""How a command is declared once for both front ends: arguments with help, and one handler.

A :class:`Command` names its :class:`Arg` s and a handler ``run(args, ctx)``. The ``%deploy``
magic and the ``nbdeploy`` CLI each build an ``argparse`` parser from the same table
(:func:`add_arguments`) and call the same handler with a :class:`Context` of their own,
which says how a value that names data becomes data: in a kernel it is a Python expression
evaluated in the notebook's namespace, on the CLI a file path.

>>> from nbdeploy.commands import COMMANDS
>>> [a.flags[0] for a in COMMANDS["promote"].args]
['ref', '--alias', '--force']
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["BOTH", "CLI", "MAGIC", "Arg", "Command", "Context", "Loads", "add_arguments", "arg", "number"]

MAGIC, CLI = "magic", "cli"
BOTH = (MAGIC, CLI)


def number(text: str) -> float:
    """An option's value as a finite float (argparse's ``float`` takes ``nan`` and ``inf``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


class Loads:
    """What a data-naming argument holds (a Python expression in a kernel, a file on the CLI)."""

    TABLE = "table"  # features: a DataFrame/array; CLI: a CSV or Parquet file
    COLUMN = "column"  # a target or labels; CLI: a column of the table given before it, or a file
    MODEL = "model"  # a fitted estimator; CLI: a pickle or joblib file
    IDS = "ids"  # request ids; CLI: a table file's ``id`` column (else its first column)


class Context(Protocol):
    """What a front end gives a handler."""

    face: str  # MAGIC or CLI

    def load(self, text: str | None, option: str, kind: str) -> Any:
        """The value an argument names (see :class:`Loads`); ``None`` stays ``None``. On the CLI
        a ``COLUMN`` is looked up in the table loaded last (and taken out of it)."""

    def say(self, text: str) -> None:
        """Show one message (printed under the cell, or on stdout)."""

    def progress(self, what: str) -> Any:
        """A callable ``(done, total or None)`` that shows how far a long job is."""

    def present(self, result: Any) -> Any:
        """What the front end shows for ``result`` (a widget in a notebook, text on a terminal)."""

    def watch(self, deployment: Any, args: argparse.Namespace) -> Any:
        """The live monitoring view of a deployment (the panel, or a refreshing terminal)."""

    @property
    def source(self) -> str | None:
        """The notebook path, recorded as lineage (``None`` outside a notebook)."""


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: flags, argparse options, and how each face reads it.

    ``loads`` marks an argument that names data (see :class:`Loads`); ``cli_help`` replaces
    ``help`` on the CLI for those. ``faces`` limits an option to one front end (the list is
    :data:`nbdeploy.commands.FACE_ONLY`).
    """

    flags: tuple[str, ...]
    help: str
    loads: str | None = None
    cli_help: str | None = None
    faces: tuple[str, ...] = BOTH
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, help: str, loads: str | None = None, cli_help: str | None = None,
        faces: tuple[str, ...] = BOTH, **options: Any) -> Arg:  # fmt: skip
    """``arg("--port", type=int, default=0, help="...")``, as ``add_argument`` is written."""
    return Arg(flags, help, loads, cli_help, faces, options)


@dataclass(frozen=True)
class Command:
    """A subcommand of ``%deploy`` and of ``nbdeploy``."""

    name: str
    help: str
    args: tuple[Arg, ...]
    run: Callable[[argparse.Namespace, Context], Any]


def add_arguments(parser: argparse.ArgumentParser, command: Command, face: str) -> None:
    """Declare ``command`` 's arguments for ``face`` on ``parser``."""
    for a in command.args:
        if face not in a.faces:
            continue
        text = a.cli_help if face == CLI and a.cli_help else a.help
        options = dict(a.options)
        if a.loads and face == CLI:
            options["metavar"] = "FILE" if a.loads != Loads.COLUMN else "COLUMN|FILE"
        parser.add_argument(*a.flags, help=text, **options)
