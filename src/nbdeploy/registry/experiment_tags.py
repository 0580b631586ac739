"""Record how an experiment ended on the challenger's model version, as version tags.

The server decides promotions and rollbacks but imports no registry code; it runs

    python -m nbdeploy.registry.experiment_tags TRACKING_URI NAME/VERSION ACTION WHY

which sets ``nbdeploy.experiment.<ACTION>`` (``promoted``, ``rolled_back``,
``promotion_refused``) to ``WHY`` with its time, and exits 0, or 1 with one sentence.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from nbdeploy.errors import NbdeployError

__all__ = ["TAG_PREFIX", "main", "tag_experiment_end"]

TAG_PREFIX = "nbdeploy.experiment."
ACTIONS = ("promoted", "rolled_back", "promotion_refused")


def tag_experiment_end(ref: str, action: str, why: str) -> None:
    from nbdeploy.registry._store import client, mlflow_errors
    from nbdeploy.registry.lookup import resolve

    if action not in ACTIONS:
        raise NbdeployError(f"Unknown experiment end {action!r}: use one of {', '.join(ACTIONS)}.")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    with mlflow_errors(f"tagging {ref}"):
        mv = resolve(ref)
        client().set_model_version_tag(mv.name, str(mv.version), TAG_PREFIX + action, f"{stamp}: {why}"[:5000])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: python -m nbdeploy.registry.experiment_tags URI NAME/VERSION ACTION WHY", file=sys.stderr)
        return 2
    uri, ref, action, why = args
    from nbdeploy import config

    if uri:
        config.configure(tracking_uri=uri)
    try:
        tag_experiment_end(ref, action, why)
    except NbdeployError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
