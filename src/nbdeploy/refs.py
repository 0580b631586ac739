"""Model references, parsed in one place.

Accepted forms: ``NAME`` (latest version), ``NAME/3``, ``NAME@champion``, and MLflow's
``models:/NAME/3``, ``models:/NAME@alias``, ``runs:/RUN_ID/PATH``.

>>> parse_ref("cancer@champion")
ModelRef(name='cancer', version=None, alias='champion', run_id=None, path=None)
>>> str(parse_ref("models:/cancer/3"))
'cancer/3'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbdeploy.errors import Docs, InvalidInputError, InvalidReferenceError

__all__ = ["ModelRef", "parse_ref", "validate_alias", "validate_name"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
_NAME_RE = re.compile(rf"^{_NAME}$")
_REF_RE = re.compile(rf"^(?P<name>{_NAME})(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z_][\w\-]*))?$")
_RUN_RE = re.compile(r"^runs:/(?P<run_id>[0-9a-f]{8,64})/(?P<path>[^\s]+)$")
FORMS = "NAME, NAME/VERSION, NAME@ALIAS, models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference; exactly one of ``name`` or ``run_id`` is set."""

    name: str | None
    version: int | None = None
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def uri(self) -> str:
        """The MLflow model URI for this reference (``models:/NAME/latest`` for a bare name)."""
        if self.run_id is not None:
            return f"runs:/{self.run_id}/{self.path}"
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        if self.alias is not None:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/latest"

    def __str__(self) -> str:
        if self.run_id is not None:
            return self.uri
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return str(self.name)


def parse_ref(text: str) -> ModelRef:
    """Parse a model reference, raising :class:`InvalidReferenceError` with the accepted forms."""
    raw = text.strip() if isinstance(text, str) else ""
    run = _RUN_RE.fullmatch(raw)
    if run:
        return ModelRef(name=None, run_id=run["run_id"], path=run["path"].strip("/"))
    body = raw[len("models:/") :] if raw.startswith("models:/") else raw
    match = _REF_RE.fullmatch(body)
    if not match:
        raise InvalidReferenceError(f"Invalid model reference {text!r}: expected {FORMS}.")
    version = int(match["version"]) if match["version"] else None
    return ModelRef(name=match["name"], version=version, alias=match["alias"])


def validate_name(name: object) -> str:
    """Return ``name`` if it can be a registered model name usable in every reference form."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"Invalid model name {name!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit (at most 128 characters).",
            docs=Docs.REFERENCES,
        )
    return name


_ALIAS_RE = re.compile(r"^[A-Za-z_][\w\-]{0,254}$")


def validate_alias(alias: object) -> str:
    """Return ``alias`` if MLflow accepts it (``latest`` and ``v<N>`` are MLflow's own)."""
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        raise InvalidInputError(
            f"Invalid alias {alias!r}: use letters, digits, '_' and '-', starting with a letter or '_'."
        )
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise InvalidInputError(f"Invalid alias {alias!r}: MLflow reserves 'latest' and 'v<number>'; choose another.")
    return alias
