"""Examples of every subcommand, shown by ``%deploy SUB --help``, ``nbdeploy SUB --help`` and
``%deploy?``. Each is parsed by the real parser in the tests, so an example cannot outlive an
option. In a kernel, data options are Python expressions; on the CLI they are files, so a
command with data has examples of its own there.
"""

from __future__ import annotations

from nbdeploy.commands.table import CLI, MAGIC

__all__ = ["EXAMPLES", "examples", "examples_text"]

# the magic's form, without "%deploy "; the CLI's where it differs (data in files)
EXAMPLES: dict[str, dict[str, tuple[str, ...]]] = {
    "register": {
        MAGIC: ("register model --name cancer --data X_train --target y_train",
                "register model --name cancer --data X_train --alias candidate --tag team=fraud"),
        CLI: ("register model.joblib --name cancer --data train.csv --target label",),
    },
    "validate": {
        MAGIC: ('validate cancer/2 --data X_test --target y_test --gate "f1>=0.9" --gate "f1>=baseline-0.01"',
                'validate cancer@candidate --data X_test --target y_test --gate "auc>=0.95 @95%" --strict'),
        CLI: ('validate cancer/2 --data test.csv --target label --gate "f1>=0.9" --strict',),
    },
    "promote": {MAGIC: ("promote cancer/2", "promote cancer/2 --alias staging")},
    "card": {MAGIC: ("card cancer@champion", "card cancer/2 --out card.html --no-log")},
    "models": {MAGIC: ("models", "models cancer")},
    "serve": {
        MAGIC: ("serve cancer@champion",
                "serve cancer@champion --name cancer --port 5001 --log-inputs hashed --retention 30d",
                'serve cancer@champion --alert "psi>0.2" --alert "p95_ms>250" --webhook https://hooks.example/x',
                "serve cancer@champion --target ray --replicas 2"),
    },
    "list": {MAGIC: ("list",)},
    "status": {MAGIC: ("status cancer",)},
    "logs": {MAGIC: ("logs cancer", "logs cancer -n 100 --job")},
    "predict": {
        MAGIC: ("predict cancer --data X_test.head()", "predict cancer --data X_test.head() --proba"),
        CLI: ("predict cancer --data rows.csv", "predict cancer --data rows.csv --proba"),
    },
    "update": {MAGIC: ("update cancer cancer/3",)},
    "rollback": {MAGIC: ("rollback cancer",)},
    "stop": {MAGIC: ("stop cancer", "stop --all")},
    "monitor": {
        MAGIC: ("monitor cancer", "monitor cancer --window 15m --panel"),
        CLI: ("monitor cancer --once", "monitor cancer --json --window 15m"),
    },
    "feedback": {
        MAGIC: ("feedback cancer --ids answered_ids --target y_true",),
        CLI: ("feedback cancer --ids labels.csv --target label",),
    },
    "alerts": {MAGIC: ("alerts cancer", 'alerts cancer --add "psi>0.25" --k 3', "alerts cancer --clear")},
    "canary": {
        MAGIC: ("canary cancer cancer/3 --percent 10 --sticky customer_id",
                'canary cancer cancer/3 --percent 10 --promote-when "accuracy>=baseline" --min-labels 500 '
                '--rollback-when "error_rate>baseline+0.01"'),
    },
    "shadow": {MAGIC: ("shadow cancer cancer/3", "shadow cancer cancer/3 --percent 50")},
    "experiment": {MAGIC: ("experiment cancer",)},
    "conclude": {MAGIC: ("conclude cancer --promote", "conclude cancer --abort")},
    "export": {MAGIC: ("export cancer --since 1d --labelled --out traffic.parquet",)},
    "batch": {
        MAGIC: ("batch cancer@champion --data X_new --out scores.parquet",
                "batch cancer@champion --data big.parquet --out scores.parquet --workers 2 --chunk-rows 50000"),
        CLI: ("batch cancer@champion --data big.parquet --out scores.parquet --workers 2",),
    },
    "retrain": {
        MAGIC: ('retrain cancer --notebook train.ipynb --on "psi>0.2" --alert-k 3 --canary 10',
                'retrain cancer --notebook train.ipynb --cron "0 3 * * *" --param n_estimators=200 --promote'),
    },
    "token": {MAGIC: ("token cancer --list", "token cancer --add predict --label dashboard",
                      "token cancer --rotate dashboard")},
    "audit": {MAGIC: ("audit cancer", "audit cancer --since 7d")},
    "snippet": {MAGIC: ("snippet cancer", "snippet cancer --lang python")},
    "forget": {
        MAGIC: ('forget cancer --ids "[\'3f2a9c\']"', "forget cancer --where customer_id=1234"),
        CLI: ("forget cancer --ids ids.csv", "forget cancer --where customer_id=1234"),
    },
    "loadtest": {MAGIC: ("loadtest cancer", "loadtest cancer --connections 1,4,16 --duration 10")},
    "recommend": {MAGIC: ("recommend cancer --rps 2000 --p99-ms 50",)},
    "package": {MAGIC: ("package cancer build/cancer --to docker",
                        "package cancer@champion build/k8s --to k8s --replicas 3")},
}  # fmt: skip


def examples(name: str, face: str) -> tuple[str, ...]:
    """``name`` 's examples on ``face`` (``MAGIC`` or ``CLI``), without the prefix."""
    forms = EXAMPLES.get(name, {})
    return forms.get(face) or forms.get(MAGIC, ())


def examples_text(name: str, face: str) -> str:
    """The ``Examples:`` block under a subcommand's ``--help``."""
    prefix = "%deploy " if face == MAGIC else "nbdeploy "
    lines = examples(name, face)
    return "examples:\n" + "\n".join(f"  {prefix}{line}" for line in lines) if lines else ""
