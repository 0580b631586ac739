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
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from nbdeploy import config
from nbdeploy.deployments import manifests
from nbdeploy.errors import InvalidInputError
from nbdeploy.refs import validate_name
from nbdeploy.spec import DeploymentSpec

__all__ = ["Package", "package"]

TARGETS = ("docker", "k8s", "kuberay")
# what the server process imports besides the model's libraries (tests/test_package_build.py
# runs the packaged entry point in a virtualenv of exactly these)
SERVING = ("starlette", "uvicorn", "uvloop", "httptools", "prometheus_client", "psutil", "httpx", "pyyaml",
           "cloudpickle", "numpy", "pandas", "scipy")  # fmt: skip
_SKIP = re.compile(r"^\s*(mlflow|mlflow-skinny|mlflow-tracing)\b", re.IGNORECASE)


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
    spec = DeploymentSpec(name=validate_name(re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:60] or "model"))
    spec.history = [entry]
    return spec


def _requirements(model: Path, target: str) -> str:
    lines = ["# the model's pinned requirements (MLflow left out: the server unpickles the model itself)"]
    try:
        given = (model / "requirements.txt").read_text().splitlines()
    except OSError:
        given = []
    lines += [ln.strip() for ln in given if ln.strip() and not ln.startswith("#") and not _SKIP.match(ln)]
    have = {re.split(r"[=<>!~\[ ;]", ln, maxsplit=1)[0].lower().replace("_", "-") for ln in lines[1:]}
    lines.append("# nbdeploy's serving dependencies, as installed where this was packaged")
    for dist in (*SERVING, *(("ray[serve]",) if target == "kuberay" else ())):
        base = dist.split("[")[0]
        if base.replace("_", "-") not in have:
            lines.append(f"{dist}=={metadata.version(base)}")
    return "\n".join(lines) + "\n"


def _plain_dumper() -> type:
    import yaml

    class Plain(yaml.SafeDumper):
        """YAML without anchors and aliases: manifests read by people as well as kubectl."""

        def ignore_aliases(self, data: object) -> bool:
            return True

    return Plain


def _python(model: Path) -> str:
    try:
        text = (model / "python_env.yaml").read_text()
    except OSError:
        text = ""
    found = re.search(r"^python:\s*(\d+)\.(\d+)", text, re.MULTILINE)
    return f"{found[1]}.{found[2]}" if found else "3.11"


DOCKERFILE = """\
# Built by %deploy package: the model, its pinned requirements and nbdeploy's server, nothing else.
FROM python:{python}-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PYTHONPATH=/app NBDEPLOY_PACKAGE=/app NBDEPLOY_STATE=/tmp/nbdeploy HOST=0.0.0.0 PORT=8080
WORKDIR /app
COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin nbdeploy
COPY --chown=root:root . /app
USER 10001
EXPOSE 8080
# the token: NBDEPLOY_TOKEN, or a file at NBDEPLOY_TOKEN_FILE (default /var/run/secrets/nbdeploy/token)
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/health')"
CMD ["python", "-m", "nbdeploy.serving.container"]
"""


def package(name_or_ref: str, to: str, out: str | Path, *, image: str | None = None, replicas: int = 2) -> Package:
    """Write the build context for ``to`` (docker, k8s or kuberay) into the empty or new folder ``out``."""
    import yaml

    from nbdeploy.registry.loadtests import latest_loadtest

    _Plain = _plain_dumper()

    if to not in TARGETS:
        raise InvalidInputError(f"Unknown --to {to!r}: use docker, k8s or kuberay.")
    if replicas < 1:
        raise InvalidInputError(f"Invalid --replicas {replicas}: use 1 or more.")
    path = Path(out).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInputError(f"{path} is not an empty folder: package writes a new build context.")
    with tempfile.TemporaryDirectory(prefix="nbdeploy-package-") as tmp:
        spec = _source(name_or_ref, Path(tmp))
        entry = spec.current
        tag = f"{spec.name.lower()}:{entry.version or 'latest'}"
        path.mkdir(parents=True, exist_ok=True)
        shutil.copytree(entry.model_path, path / "model")  # its manifest too: the server checks the files against it
        if entry.profile_path and Path(entry.profile_path).exists():
            shutil.copyfile(entry.profile_path, path / "profile.json")
    source = Path(__file__).resolve().parents[1]
    shutil.copytree(source, path / "nbdeploy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    spec.history, spec.experiment, spec.ray, spec.target = [entry], None, None, "local"
    spec.tls_cert = spec.tls_key = None
    (path / "deployment.json").write_text(json.dumps(spec.to_dict(), indent=1, default=str) + "\n")
    (path / "requirements.txt").write_text(_requirements(path / "model", to))
    (path / "Dockerfile").write_text(DOCKERFILE.format(python=_python(path / "model")))
    (path / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
    result = Package(path, to, image or tag)
    if to != "docker":
        from nbdeploy import registry

        mv = registry.resolve(entry.resolved) if entry.version is not None and entry.resolved else None
        result.sizing = manifests.Sizing.of(latest_loadtest(mv.tags) if mv is not None else None)
        k8s = path / "k8s"
        k8s.mkdir()
        docs = (manifests.kubernetes(spec.name, result.image, result.sizing, replicas) if to == "k8s"
                else [manifests.rayservice(spec.name, result.image, result.sizing, replicas)])  # fmt: skip
        for doc in docs:
            (k8s / f"{doc['kind'].lower()}.yaml").write_text(yaml.dump(doc, Dumper=_Plain, sort_keys=False))
    result.files = sorted(str(p.relative_to(path)) for p in path.iterdir())
    return result
