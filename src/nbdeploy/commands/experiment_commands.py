"""``canary``, ``shadow``, ``experiment`` and ``conclude``: a challenger in front of real traffic."""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import Command, Context, arg, number

__all__ = ["COMMANDS"]

NAME = arg("name", metavar="NAME", help="deployment name")
REF = arg("ref", metavar="REF", help="the challenger: NAME/VERSION, NAME@ALIAS, models:/... or runs:/...")
RULES = (
    arg("--promote-when", action="append", default=[], metavar="RULE",
        help="promote once this holds, e.g. accuracy>=baseline (repeatable: every one must hold)"),
    arg("--rollback-when", action="append", default=[], metavar="RULE",
        help="drop the challenger once this holds, e.g. error_rate>baseline+0.01 or p95_ms>baseline*1.5 (repeatable)"),
    arg("--min-labels", type=int, default=500, metavar="N",
        help="labelled rows per variant before a rule on labels is decided (default 500)"),
    arg("--webhook", metavar="URL", help="POST each end of the experiment (promoted, rolled back) to this URL"),
)


def _canary(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).canary(args.ref, percent=args.percent, sticky=args.sticky, sticky_header=args.sticky_header,
                                 promote_when=args.promote_when, rollback_when=args.rollback_when,
                                 min_labels=args.min_labels, webhook=args.webhook)  # fmt: skip


def _shadow(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).shadow(args.ref, percent=args.percent, promote_when=args.promote_when,
                                 rollback_when=args.rollback_when, min_labels=args.min_labels, webhook=args.webhook)


def _experiment(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).experiment()


def _conclude(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    dep = get(args.name)
    dep.conclude(promote=args.promote, abort=args.abort, force=args.force)
    return dep.status()


COMMANDS = [
    Command("canary", "Answer a share of a deployment's requests from a challenger (an experiment).",
            (NAME, REF,
             arg("--percent", type=number, default=10.0, metavar="P", help="share of requests, 0-100 (default 10)"),
             arg("--sticky", metavar="COLUMN", help="keep each value of this input column on one variant"),
             arg("--sticky-header", metavar="HEADER", help="keep each value of this request header on one variant"),
             *RULES),
            _canary),
    Command("shadow", "Mirror a deployment's requests to a challenger after answering them (an experiment).",
            (NAME, REF,
             arg("--percent", type=number, default=100.0, metavar="P", help="share mirrored (default 100)"), *RULES),
            _shadow),
    Command("experiment", "Show a running experiment: challenger, split and counts.", (NAME,), _experiment),
    Command("conclude", "End a deployment's experiment: promote the challenger or abort.",
            (NAME,
             arg("--promote", action="store_true", help="move @champion to the challenger and serve it alone"),
             arg("--abort", action="store_true", help="drop the challenger"),
             arg("--force", action="store_true", help="with --promote: promote a version whose validation failed")),
            _conclude),
]  # fmt: skip
