"""The model card: one page a reviewer or a regulator can read about a model version.

It gathers what the registry and the deployments know — description and intended use,
training-data profile, lineage, the latest validation with its intervals, slices, weak
segments and explanations, and the version's whole history: every validation, promotion
(forced or not), deployment, update, rollback and experiment — and renders it as HTML
(inline in a notebook, and a whole page), Markdown, and text (the Markdown). Both files are
logged to MLflow in the version's own run (``card/model_card.html``, ``card/model_card.md``),
the version's ``nbdeploy.card`` tag points at the page, and its description names it.

>>> c = nbdeploy.card("cancer/2", intended_use="Triage support; not for diagnosis.")   # doctest: +SKIP
>>> print(c)                                                                           # doctest: +SKIP
# Model card: cancer/2
...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy.cards.gather import INTENDED_USE_TAG, CardFacts, gather
from nbdeploy.cards.render import html, markdown, sections

__all__ = ["CARD_TAG", "ModelCard", "card"]

CARD_TAG = "nbdeploy.card"
ARTIFACT_DIR = "card"


@dataclass
class ModelCard:
    """A rendered card: ``markdown`` (also its text form), ``html`` (a fragment), ``uri`` (the
    logged page, ``None`` when not logged)."""

    facts: CardFacts
    markdown: str
    html: str
    uri: str | None = None

    def __repr__(self) -> str:
        from nbdeploy.reprs import markdown_text

        return markdown_text(self.markdown)  # nothing cut; the Markdown itself is .markdown (model_card.md)

    def _repr_html_(self) -> str:
        from nbdeploy.reprs import card as card_html
        from nbdeploy.reprs import esc

        where = f"<p class='nbd-muted'>Logged to MLflow: <code>{esc(self.uri)}</code></p>" if self.uri else ""
        return card_html(f"Model card: {esc(self.facts.ref)}", self.html + where)

    def page(self) -> str:
        """The whole card as a self-contained HTML page that declares UTF-8."""
        from nbdeploy.reprs import page

        return page(f"Model card: {self.facts.ref}", self._repr_html_())

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``model_card.html`` and ``model_card.md`` into ``folder``; returns their paths."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        files = [target / "model_card.html", target / "model_card.md"]
        files[0].write_text(self.page(), encoding="utf-8")
        files[1].write_text(self.markdown, encoding="utf-8")
        return files


def _note(mv: Any, *, intended_use: str | None, description: str | None) -> Any:
    """Record what the user adds now (intended use, a new description) before the card reads it."""
    from nbdeploy.registry import resolve
    from nbdeploy.registry._store import client, mlflow_errors
    from nbdeploy.registry.versions import SUMMARY_MARKER

    with mlflow_errors(f"updating {mv.ref}"):
        c = client()
        if intended_use is not None:
            c.set_model_version_tag(mv.name, str(mv.version), INTENDED_USE_TAG, intended_use[:5000])
        if description is not None:
            from nbdeploy.registry.promotion import with_summary

            current = c.get_model_version(mv.name, str(mv.version)).description or ""
            _, marker, summary = current.partition(SUMMARY_MARKER)
            text = with_summary(description.strip(), summary.strip()) if marker else description.strip()[:5000]
            c.update_model_version(mv.name, str(mv.version), description=text)
    return resolve(mv.ref) if intended_use is not None or description is not None else mv


def _log(mv: Any, made: ModelCard) -> str:
    """Log both files in the version's run, tag the version, and name the card in its description."""
    from nbdeploy.registry._store import client, mlflow_errors
    from nbdeploy.registry.promotion import with_summary
    from nbdeploy.registry.versions import SUMMARY_MARKER

    uri = f"runs:/{mv.run_id}/{ARTIFACT_DIR}/model_card.html"
    with mlflow_errors(f"logging the model card of {mv.ref}"):
        c = client()
        c.log_text(mv.run_id, made.page(), f"{ARTIFACT_DIR}/model_card.html")
        c.log_text(mv.run_id, made.markdown, f"{ARTIFACT_DIR}/model_card.md")
        c.set_model_version_tag(mv.name, str(mv.version), CARD_TAG, uri)
        current = c.get_model_version(mv.name, str(mv.version)).description or ""
        if uri not in current:  # below the marker, where each validation's summary names it again
            kept, _, summary = current.partition(SUMMARY_MARKER)
            line = f"- Model card: `{uri}`"
            text = with_summary(kept, f"{summary.strip()}\n{line}" if summary.strip() else line)
            c.update_model_version(mv.name, str(mv.version), description=text)
    return uri


def card(ref: str, *, intended_use: str | None = None, description: str | None = None, log: bool = True,
         out: str | Path | None = None) -> ModelCard:  # fmt: skip
    """The model card of the version ``ref``. ``intended_use`` and ``description`` are recorded
    on the version first (they are what register's ``--intended-use``/``--description`` set);
    with ``log`` both files are logged to MLflow; with ``out`` they are also written there."""
    from nbdeploy.registry import resolve

    mv = _note(resolve(ref), intended_use=intended_use, description=description)
    facts = gather(mv)
    parts = sections(facts)
    made = ModelCard(facts, markdown(facts, parts), html(parts))
    if log and mv.run_id:
        made.uri = _log(mv, made)
    if out is not None:
        made.save(out)
    return made
