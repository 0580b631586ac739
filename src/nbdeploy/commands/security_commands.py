"""``token``: a deployment's tokens with roles, added, listed, revoked and rotated while it serves
(:mod:`nbdeploy.deployments.access`); ``audit``: who changed what it serves or allows
(:mod:`nbdeploy.deployments.audit`); ``snippet``: a working call in curl, Python or JavaScript;
``forget``: a person's records erased from every log (:mod:`nbdeploy.deployments.forget`)."""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import CLI, Command, Context, Loads, arg
from nbdeploy.errors import InvalidInputError
from nbdeploy.tokens import ROLES

__all__ = ["COMMANDS"]


def _token(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    chosen = [flag for flag, value in (("--add", args.add), ("--list", args.list), ("--revoke", args.revoke),
                                       ("--rotate", args.rotate)) if value]  # fmt: skip
    if len(chosen) > 1:
        raise InvalidInputError(f"Choose one of {', '.join(chosen)}.")
    if (args.label or args.out) and not (args.add or args.rotate):
        raise InvalidInputError("--label and --out go with --add (and --out with --rotate).")
    dep = get(args.name)
    if args.revoke:
        return dep.revoke_token(args.revoke)
    if not (args.add or args.rotate):
        return dep.tokens()
    if args.add:
        made = dep.add_token(args.add, label=args.label, out=args.out)
    else:
        made = dep.rotate_token(args.rotate, out=args.out)
    if ctx.face == CLI and made.written_to is None:  # a terminal's one chance to see it: on stdout alone
        ctx.say(repr(made).split(": its value")[0] + ":")
        ctx.say(made.value)
        return None
    return made  # in a notebook the value stays out of the output: .value of the result


def _snippet(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).snippet(args.lang, token_file=args.token_file)


def _forget(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    ids = ctx.load(args.ids, "--ids", Loads.IDS) if args.ids is not None else None
    result = get(args.name).forget(ids=ids, where=args.where)
    removed = result["removed"]
    if args.where and not result["ids"]:  # a typo in the value matches nothing: said, not silent
        ctx.say(f"No logged request has a row where {args.where} (check the value's type and quotes; with "
                "--log-inputs none no value can be found).")  # fmt: skip
    ctx.say(f"Forgot {result['ids']} request(s): {removed['requests']} record(s) removed from the request log, "
            f"{removed['feedback']} from the feedback log; the audit trail records it.")  # fmt: skip


def _audit(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).audit(since=args.since)


COMMANDS = [
    Command("token", "List, add, revoke or rotate a deployment's tokens with roles, while it serves.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--add", metavar="ROLE", choices=tuple(ROLES), help=f"add a token of this role ({', '.join(ROLES)})"),
             arg("--label", help="the new token's label (default: ROLE-N)"),
             arg("--out", metavar="FILE", help="write the new token's value to this file (owner-only)"),
             arg("--list", action="store_true", help="list labels and roles, never values (the default)"),
             arg("--revoke", metavar="LABEL", help="remove the token with this label"),
             arg("--rotate", metavar="LABEL", help="give this label's token a new value ('owner': the kernel's)")),
            _token),
    Command("audit", "Show who changed what a deployment serves or allows, and when (its audit trail).",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--since", metavar="AGE", help="only the last AGE, e.g. 1d (default: all)")), _audit),
    Command("snippet", "Print a working call to a deployment (curl, Python or JavaScript) with an example row.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--lang", choices=("curl", "python", "javascript"), default="python",
                 help="the language (default python: the standard library only)"),
             arg("--token-file", metavar="FILE",
                 help="the token file the call reads (default: the owner's, when a token is needed)")), _snippet),
    Command("forget", "Erase the requests with these ids (or a row matching --where) and their labels from every log.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--ids", metavar="EXPR", loads=Loads.IDS, help="expression for the request ids",
                 cli_help="a CSV or Parquet file with an 'id' column of request ids (or of that one column)"),
             arg("--where", metavar="TEXT", help="COLUMN == VALUE: every request with a row where it holds")), _forget),
]  # fmt: skip
