"""``retrain``: a deployment's training notebook run again on a trigger, gated, then canaried,
shadowed or promoted (``nbdeploy.retraining``)."""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import Command, Context, arg, number
from nbdeploy.spec import DEFAULT_ALERT_K

__all__ = ["COMMANDS"]


def _retrain(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.retraining import retrain

    job = retrain(args.name, args.notebook, on=args.on, alert_k=args.alert_k, every=args.every, cron=args.cron,
                  params=args.param, gates=args.gate, canary=args.canary, shadow=args.shadow, promote=args.promote,
                  promote_when=args.promote_when, rollback_when=args.rollback_when, min_labels=args.min_labels,
                  since=args.since, webhook=args.webhook, cell_timeout=args.timeout, kernel=args.kernel,
                  now=args.now, resume=args.resume)  # fmt: skip
    return job  # the live handle: its repr is the status, job.runs() and job.logs() follow it


COMMANDS = [
    Command("retrain", "Run a training notebook on a trigger; validate its candidate, then canary, shadow or promote.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--notebook", metavar="PATH", help="the training notebook (starts or replaces the job)"),
             arg("--on", metavar="RULE", help="run when this alert rule fires, e.g. 'psi>0.2' (added to the alerts)"),
             arg("--alert-k", type=int, metavar="K",
                 help=f"breaches before --on fires (default {DEFAULT_ALERT_K})"),
             arg("--every", metavar="AGE", help="run on a period, e.g. 1d or 12h"),
             arg("--cron", metavar="EXPR", help="run on a cron schedule in UTC, e.g. '0 3 * * *'"),
             arg("--param", action="append", default=[], metavar="KEY=VALUE",
                 help="a parameter for the notebook (repeatable)"),
             arg("--gate", action="append", default=[], metavar="GATE",
                 help="a gate against @champion (repeatable; default: the champion's last validation's)"),
             arg("--canary", type=number, metavar="PERCENT", help="then a canary with this share of requests"),
             arg("--shadow", type=number, nargs="?", const=100.0, metavar="PERCENT",
                 help="then a shadow of every request (or of PERCENT)"),
             arg("--promote", action="store_true", help="then promote to @champion and update the deployment"),
             arg("--promote-when", action="append", default=[], metavar="RULE",
                 help="the canary's or shadow's promotion rule (default accuracy>=baseline, or mae<=baseline)"),
             arg("--rollback-when", action="append", default=[], metavar="RULE",
                 help="its rollback rule (default error_rate>baseline+0.01)"),
             arg("--min-labels", type=int, metavar="N",
                 help="labels per variant before a rule on them (default 500)"),
             arg("--since", metavar="AGE",
                 help="the labelled traffic given to the notebook (default 7d)"),
             arg("--webhook", metavar="URL", help="POST each run's end to this URL"),
             arg("--timeout", metavar="AGE", help="longest a notebook cell may run (default 1h)"),
             arg("--kernel", metavar="NAME", help="the kernel to run the notebook (default: the notebook's own)"),
             arg("--now", action="store_true", help="run once now"),
             arg("--resume", action="store_true", help="start the job's process again, adopting its state")),
            _retrain),
]  # fmt: skip
