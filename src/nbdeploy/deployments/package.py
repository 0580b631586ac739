"""``%deploy package NAME|REF --to docker|k8s|kuberay DIR``: a build context to ship.

DIR gets the model (``model/``, its training profile), the spec of the deployment
(``deployment.json``: batching, windows, alerts, log settings), nbdeploy's own package, a
``requirements.txt`` of the model's pinned requirements (MLflow left out: the server
unpickles the model itself) and nbdeploy's serving dependencies at the versions installed
here (no Jupyter, no MLflow, no Ray unless ``kuberay``), and a ``Dockerfile`` on the slim
Python image of the model's Python, running as a non-root user, listening on 0.0.0.0:8080
with its token from ``NBDEPLOY_TOKEN`` or a mounted file. ``k8s`` adds ``k8s/*.yaml``
(:mod:`~nbdeploy.deployments.manifests`), ``kuberay`` a ``RayService``.

>>> package("cancer", "k8s", "build/cancer")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy.deployments import manifests
from nbdeploy.deployments.package_files import dockerfile, kube_name, requirements
from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.refs import validate_name
from nbdeploy.spec import DeploymentSpec

__all__ = ["Package", "package"]

TARGETS = ("docker", "k8s", "kuberay")


@dataclass
class Package:
    """What ``package`` wrote: the folder, its files, and how to build and run it."""

    path: Path
    target: str
    image: str
    files: list[str] = field(default_factory=list)
    sizing: manifests.Sizing | None = None

    def __repr__(self) -> str:
        lines = [f"Packaged {self.image} for {self.target} in {self.path}:", *(f"  {f}" for f in self.files)]
        lines.append(f"build: docker build -t {self.image} {self.path}")
        if self.target != "docker":
            lines.append(f"apply: put a token in k8s/secret.yaml, then kubectl apply -f {self.path / 'k8s'}")
        if self.sizing is not None and not self.sizing.measured:
            lines.append("resource requests are defaults: run %deploy loadtest first to size them from measurements")
        return "\n".join(lines)


def _source(name_or_ref: str, tmp: Path) -> DeploymentSpec:
    """The deployment's spec when ``name_or_ref`` names one here, else a default spec of the
    model ``name_or_ref`` resolves to (fetched into ``tmp``)."""
    from nbdeploy.deployments.models import fetch

    folder = config.home() / name_or_ref
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name_or_ref) and (folder / "spec.json").exists():
        return DeploymentSpec.load(folder)
    entry = fetch(name_or_ref, tmp)
    name = (entry.resolved or name_or_ref).split("/")[0].split("@")[0]
    if name_or_ref.startswith("runs:/"):
        name = f"run-{name_or_ref[len('runs:/'):].split('/')[0][:12]}"
    spec = DeploymentSpec(name=validate_name(re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:60].strip("-.") or "model"))
    spec.history = [entry]
    return spec


def _target_folder(out: str | Path) -> Path:
    path = Path(out).expanduser()
    if path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir()))):
        raise InvalidInputError(f"{path} is not an empty folder: package writes a new build context.")
    inside = [p for p in (config.home(), Path(__file__).resolve().parents[1]) if _within(path, p)]
    if inside:
        raise InvalidInputError(f"{path} is inside {inside[0]}: write the build context somewhere of its own.")
    return path


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _manifests(spec: DeploymentSpec, result: Package, to: str, replicas: int, k8s: Path) -> None:
    import yaml

    from nbdeploy import registry
    from nbdeploy.deployments.package_files import plain_dumper
    from nbdeploy.registry.loadtests import latest_loadtest

    entry = spec.current
    mv = registry.resolve(entry.resolved) if entry.version is not None and entry.resolved else None
    result.sizing = manifests.Sizing.of(latest_loadtest(mv.tags) if mv is not None else None)
    name = kube_name(spec.name)
    docs = manifests.kubernetes(name, result.image, result.sizing, replicas) if to == "k8s" else [
        manifests.rayservice(name, result.image, result.sizing, replicas), manifests.secret(name)]  # fmt: skip
    k8s.mkdir()
    for doc in docs:
        (k8s / f"{doc['kind'].lower()}.yaml").write_text(yaml.dump(doc, Dumper=plain_dumper(), sort_keys=False))


def package(name_or_ref: str, to: str, out: str | Path, *, image: str | None = None, replicas: int = 2) -> Package:
    """Write the build context for ``to`` (docker, k8s or kuberay) into the new or empty
    folder ``out``: built beside it, renamed into place when whole."""
    if to not in TARGETS:
        raise InvalidInputError(f"Unknown --to {to!r}: use docker, k8s or kuberay.", docs=Docs.PACKAGE)
    if replicas < 1:
        raise InvalidInputError(f"Invalid --replicas {replicas}: use 1 or more.")
    path = _target_folder(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="nbdeploy-package-") as tmp:
            spec = _source(name_or_ref, Path(tmp))
            entry = spec.current
            reqs = requirements(Path(entry.model_path), to)  # before any file: a version not pinned is one sentence
            shutil.copytree(entry.model_path, build / "model")  # its manifest too: the server checks the files
            if entry.profile_path and Path(entry.profile_path).exists():
                shutil.copyfile(entry.profile_path, build / "profile.json")
        shutil.copytree(Path(__file__).resolve().parents[1], build / "nbdeploy",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
        _write_spec(spec, build)
        (build / "requirements.txt").write_text(reqs)
        (build / "Dockerfile").write_text(dockerfile(build / "model", to))
        (build / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
        result = Package(path, to, image or f"{kube_name(spec.name)}:{entry.version or 'latest'}")
        if to != "docker":
            _manifests(spec, result, to, replicas, build / "k8s")
        if path.exists():
            path.rmdir()  # empty: checked above
        os.replace(build, path)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    result.files = sorted(str(p.relative_to(path)) for p in path.iterdir())
    return result


def _write_spec(spec: DeploymentSpec, build: Path) -> None:
    """The deployment's settings for the container: its model only, no experiment, no Ray,
    no certificate, no kernel to stop with (``attach``)."""
    entry: Any = spec.current
    spec.history, spec.experiment, spec.ray, spec.target = [entry], None, None, "local"
    spec.tls_cert = spec.tls_key = None
    spec.attach_to = None
    (build / "deployment.json").write_text(json.dumps(spec.to_dict(), indent=1, default=str) + "\n")
