"""What the registry returns: a model version card and a listing, each readable as
``text/plain`` (CI logs, nbval) and ``text/html`` (JupyterLab, VS Code, GitHub)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from nbdeploy.config import display_uri
from nbdeploy.reprs import card, esc, fit, fit_columns, fold, kv_table, table

# in a version's description, the latest validation's summary follows this (invisible in Markdown)
SUMMARY_MARKER = "<!-- nbdeploy:validation -->"
EVENT_TAGS = "nbdeploy.event."  # the history tags (registry/history.py), shown by the model card, not the listings

__all__ = ["Listing", "ModelList", "ModelVersion"]


def _when(millis: int | None) -> str:
    if not millis:
        return ""
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _columns(spec: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    out = []
    for i, col in enumerate(spec or []):
        name = col.get("name") or ("prediction" if i == 0 else f"[{i}]")
        kind = str(col.get("type", ""))
        if "tensor-spec" in col:
            tensor = col["tensor-spec"]
            kind = f"tensor {tensor.get('dtype', '')} {tuple(tensor.get('shape', ()))}"
        out.append((str(name), kind))
    return out


@dataclass
class ModelVersion:
    """One registered version of a model, as nbdeploy shows it."""

    name: str
    version: int
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None
    source: str = ""
    created: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    tracking_uri: str = ""

    @classmethod
    def from_mlflow(
        cls,
        mv: Any,
        *,
        tracking_uri: str,
        signature: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelVersion:
        """Build from an ``mlflow.entities.model_registry.ModelVersion``."""
        import json

        sig = dict(signature or {})
        return cls(
            name=mv.name,
            version=int(mv.version),
            aliases=sorted(mv.aliases or []),
            run_id=mv.run_id,
            source=mv.source or "",
            created=_when(mv.creation_timestamp),
            description=(mv.description or "").split(SUMMARY_MARKER, 1)[0].strip(),  # the user's words only
            tags=dict(mv.tags or {}),
            metrics=dict(metrics or {}),
            inputs=_columns(json.loads(sig["inputs"]) if sig.get("inputs") else None),
            outputs=_columns(json.loads(sig["outputs"]) if sig.get("outputs") else None),
            tracking_uri=display_uri(tracking_uri),  # never show credentials in a notebook
        )

    @property
    def ref(self) -> str:
        """Short reference, ``NAME/VERSION``."""
        return f"{self.name}/{self.version}"

    @property
    def uri(self) -> str:
        """MLflow model URI, ``models:/NAME/VERSION``."""
        return f"models:/{self.name}/{self.version}"

    @property
    def ui_url(self) -> str | None:
        """Link to this version in the MLflow UI when the tracking store is a server."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return f"{self.tracking_uri.rstrip('/')}/#/models/{self.name}/versions/{self.version}"

    def _signature_text(self) -> str:
        if not self.inputs:
            return "none (registered without data)"
        outs = ", ".join(f"{n}: {t}" for n, t in self.outputs) or "?"
        return f"{len(self.inputs)} inputs -> {outs}"

    def __repr__(self) -> str:
        lines = [f"ModelVersion {self.ref}" + (f"  @{' @'.join(self.aliases)}" if self.aliases else "")]
        lines.append(f"  run:        {self.run_id or '-'}")
        lines.append(f"  signature:  {self._signature_text()}")
        lines.append(f"  source:     {self.source}")
        if self.metrics:
            lines.append("  metrics:    " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(self.metrics.items())))
        if self.ui_url:
            lines.append(f"  ui:         {self.ui_url}")
        return fit("\n".join(lines))

    def _repr_html_(self) -> str:
        badges = "".join(f"<span class='nbd-badge'>@{esc(a)}</span>" for a in self.aliases)
        link = f"<a href='{esc(self.ui_url)}' target='_blank'>open in MLflow</a>" if self.ui_url else ""
        facts = kv_table(
            [
                ("run", f"<code>{esc(self.run_id or '-')}</code>"),
                ("created", esc(self.created)),
                ("artifacts", f"<code>{esc(self.source)}</code>"),
                ("tracking", f"<code>{esc(self.tracking_uri)}</code> {link}"),
            ]
            + ([("description", esc(self.description))] if self.description else [])
        )
        sig = (
            fold(f"Signature: {esc(self._signature_text())}",
                 table(["input", "type"], self.inputs) + table(["output", "type"], self.outputs), len(self.inputs))
            if self.inputs
            else "<p class='nbd-muted'>No signature: registered without data.</p>"
        )  # fmt: skip
        metrics = (
            "<h4>Metrics</h4>" + table(["metric", "value"], [(k, f"{v:.4g}") for k, v in sorted(self.metrics.items())])
            if self.metrics
            else ""
        )
        shown = sorted((k, v) for k, v in self.tags.items() if not k.startswith(EVENT_TAGS))  # events: the card's
        tags = fold(f"Tags ({len(shown)})", table(["tag", "value"], shown), len(shown)) if shown else ""
        return card(
            f"{esc(self.name)} <span class='nbd-muted'>version {self.version}</span> {badges}",
            facts,
            sig,
            metrics,
            tags,
        )


@dataclass
class Listing:
    """A titled table with aligned ``text/plain`` and an HTML table."""

    title: str
    header: list[str]
    rows: list[list[str]]
    keep: ClassVar[tuple[str, ...]] = ()  # columns the text form never cuts (reprs.fit_columns), besides the first

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return f"{self.title}: none"
        return "\n".join([self.title, *fit_columns(self.header, self.rows, keep=self.keep)])

    def _repr_html_(self) -> str:
        body = table(self.header, self.rows) if self.rows else "<p class='nbd-muted'>none</p>"
        return card(esc(self.title), body)


class ModelList(Listing):
    """A listing of registered models, or of the versions of one model."""

    @classmethod
    def of_models(cls, registered: Iterable[Any]) -> ModelList:
        rows = []
        for rm in sorted(registered, key=lambda m: m.name):
            latest = max((int(v.version) for v in rm.latest_versions or []), default=0)
            aliases = ", ".join(f"@{a}={v}" for a, v in sorted((rm.aliases or {}).items()))
            rows.append([rm.name, str(latest or "-"), aliases, _when(rm.last_updated_timestamp)])
        return cls("Registered models", ["name", "latest", "aliases", "updated"], rows)

    @classmethod
    def of_versions(cls, name: str, versions: Iterable[Any], aliases: Mapping[str, Any]) -> ModelList:
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(int(number), []).append(f"@{alias}")
        rows = []
        for mv in sorted(versions, key=lambda v: -int(v.version)):
            tags = ", ".join(f"{k}={v}" for k, v in sorted((mv.tags or {}).items())
                             if not k.startswith(("mlflow.", EVENT_TAGS)))  # fmt: skip
            rows.append(
                [
                    str(mv.version),
                    " ".join(sorted(by_version.get(int(mv.version), []))),
                    _when(mv.creation_timestamp),
                    tags,
                ]
            )
        return cls(f"Versions of {name}", ["version", "aliases", "created", "tags"], rows)
