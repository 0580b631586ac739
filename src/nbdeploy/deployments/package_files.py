"""The files of a build context (:mod:`~nbdeploy.deployments.package`): requirements, the
Dockerfile, names Kubernetes and docker accept.

>>> kube_name("Fraud_Model.v2")
'fraud-model-v2'
>>> kube_name("runs-")
'runs'
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.model_entry import pickled_sklearn, read_mlmodel

__all__ = ["DOCKERFILE", "dockerfile", "kube_name", "plain_dumper", "python_version", "requirements",
           "unpickled_directly"]  # fmt: skip

# what the server process imports besides the model's libraries (tests/test_package_build.py
# runs the packaged entry point in a virtualenv of exactly these)
SERVING = ("starlette", "uvicorn", "uvloop", "httptools", "prometheus_client", "psutil", "httpx", "pyyaml", "orjson",
           "cloudpickle", "numpy", "pandas", "scipy")  # fmt: skip
_MLFLOW = re.compile(r"^\s*(mlflow|mlflow-skinny|mlflow-tracing)\b", re.IGNORECASE)


def kube_name(name: str) -> str:
    """``name`` as a Kubernetes object name (DNS-1035: lowercase letters, digits and ``-``,
    starting with a letter, at most 63 characters); also a valid image name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if not slug or not slug[0].isalpha():
        slug = f"m-{slug}".rstrip("-")
    return slug[:63].rstrip("-")


def unpickled_directly(model: Path) -> bool:
    """Whether the server loads this model without MLflow (a pickled scikit-learn flavor)."""
    try:
        return pickled_sklearn(read_mlmodel(model)) is not None  # the loader's own test (serving/loader.py)
    except (OSError, ValueError):
        return False


def requirements(model: Path, target: str) -> str:
    """The model's pinned requirements (MLflow left out when the server unpickles the model
    itself) and nbdeploy's serving dependencies at the versions installed here."""
    direct = unpickled_directly(model)
    head = ("MLflow left out: the server unpickles the model itself" if direct
            else "MLflow kept: the server loads this flavor through mlflow.pyfunc")  # fmt: skip
    lines = [f"# the model's pinned requirements ({head})"]
    try:
        given = (model / "requirements.txt").read_text().splitlines()
    except OSError:
        given = []
    kept = [ln.strip() for ln in given if ln.strip() and not ln.startswith("#")]
    lines += [ln for ln in kept if not (direct and _MLFLOW.match(ln))]
    have = {re.split(r"[=<>!~\[ ;@]", ln, maxsplit=1)[0].lower().replace("_", "-") for ln in lines[1:]}
    lines.append("# nbdeploy's serving dependencies, as installed where this was packaged")
    for dist in (*SERVING, *(("ray[serve]",) if target == "kuberay" else ())):
        base = dist.split("[")[0]
        if base.replace("_", "-") in have:
            continue
        try:
            lines.append(f"{dist}=={metadata.version(base)}")
        except metadata.PackageNotFoundError:
            if base == "uvloop":  # uvicorn's faster loop: absent on Windows, where asyncio serves
                continue
            extra = " (pip install 'nbdeploy[ray]')" if base == "ray" else ""
            raise InvalidInputError(
                f"{base} is not installed here, so its version cannot be pinned{extra}.", docs=Docs.EXTRAS
            ) from None
    return "\n".join(lines) + "\n"


def plain_dumper() -> type:
    import yaml

    class Plain(yaml.SafeDumper):
        """YAML without anchors and aliases: manifests read by people as well as kubectl."""

        def ignore_aliases(self, data: object) -> bool:
            return True

    return Plain


def python_version(model: Path) -> str:
    try:
        text = (model / "python_env.yaml").read_text()
    except OSError:
        text = ""
    found = re.search(r"^python:\s*(\d+)\.(\d+)", text, re.MULTILINE)
    return f"{found[1]}.{found[2]}" if found else "3.11"


DOCKERFILE = """\
# Built by %deploy package: the model, its pinned requirements and nbdeploy's server, nothing else.
FROM python:{python}-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PYTHONPATH=/app NBDEPLOY_PACKAGE=/app NBDEPLOY_STATE=/tmp/nbdeploy HOST=0.0.0.0 PORT=8080
WORKDIR /app
{system}COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin nbdeploy
COPY --chown=root:root . /app
USER 10001
EXPOSE 8080
# the token: NBDEPLOY_TOKEN, or a file at NBDEPLOY_TOKEN_FILE (default /var/run/secrets/nbdeploy/token)
HEALTHCHECK --interval=10s --timeout=3s \\
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/health')"
CMD ["python", "-m", "nbdeploy.serving.container"]
"""


def dockerfile(model: Path, target: str) -> str:
    # KubeRay's probes run wget in the Ray containers; the slim image has none
    system = ("RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*\n"
              if target == "kuberay" else "")  # fmt: skip
    return DOCKERFILE.format(python=python_version(model), system=system)
