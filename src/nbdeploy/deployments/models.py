"""Local copies of the models a deployment serves: ``FOLDER/models/NAME-vN/``.

Servers load from these copies, so they need neither MLflow nor the tracking store.

>>> entry = fetch("cancer@champion", Path(".nbdeploy/cancer"))   # doctest: +SKIP
>>> entry.model_path                                            # doctest: +SKIP
'.../.nbdeploy/cancer/models/cancer-v3/model'
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nbdeploy._files import write_atomic
from nbdeploy.refs import parse_ref
from nbdeploy.spec import ModelEntry

__all__ = ["fetch"]


def fetch(ref: str, folder: Path) -> ModelEntry:
    """Resolve ``ref`` and copy its model (and training profile) into the deployment folder."""
    from nbdeploy import registry

    r = parse_ref(ref)
    if r.run_id is not None:
        uri, version, label = r.uri, None, str(r)
        dst = folder / "models" / f"run-{r.run_id}"
        profile, task = None, None
    else:
        mv = registry.resolve(r)
        uri, version, label = mv.source or mv.uri, mv.version, f"{mv.name}/{mv.version}"
        dst = folder / "models" / f"{mv.name}-v{mv.version}"  # one name may serve another model later
        profile, task = registry.load_profile(mv), mv.tags.get("nbdeploy.task")
    if not (dst / "model" / "MLmodel").exists():
        registry.download_model(uri, dst / "model")
    path = dst / "model"
    if not (path / "MLmodel").exists():  # MLflow keeps the last path segment for runs:/ URIs
        path = next(p.parent for p in dst.rglob("MLmodel"))
    profile_path = None
    if profile is not None:
        profile_path = dst / "profile.json"
        write_atomic(profile_path, json.dumps(profile))  # a server may be reading the last one
    return ModelEntry(
        ref=ref, resolved=label, version=version, model_path=str(path), task=task,
        profile_path=str(profile_path) if profile_path else None, at=time.time(),
    )  # fmt: skip
