"""``%deploy list`` in a notebook: one row per deployment with Stop and Rollback buttons."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from nbdeploy.reprs import esc

__all__ = ["DeploymentsPanel"]


class DeploymentsPanel(w.VBox):
    """A small panel over :func:`nbdeploy.deployments`; buttons call the core and refresh."""

    def __init__(self, listing: Any) -> None:
        super().__init__()
        self.message = w.HTML()
        self._render(listing)

    @property
    def rows(self) -> list[list[str]]:
        """The listing's rows, as ``nbdeploy.deployments().rows``."""
        return list(self._listing.rows)

    def refresh(self) -> None:
        from nbdeploy.deployments import deployments

        self._render(deployments())

    def _render(self, listing: Any) -> None:
        self._listing = listing
        self.buttons: dict[tuple[str, str], w.Button] = {}
        lines = []
        for dep, row in zip(listing.items, listing.rows, strict=True):
            name, state, url, serving, version = row[:5]
            label = w.HTML(
                f"<code>{esc(name)}</code> · <b>{esc(state)}</b> · {esc(url)} · {esc(serving)} (v{esc(version)})"
            )
            stop = w.Button(description="Stop", disabled=state == "stopped", layout=w.Layout(width="80px"))
            back = w.Button(description="Rollback", disabled=state != "running", layout=w.Layout(width="90px"))
            stop.on_click(lambda _b, d=dep: self._act(d, "stop"))
            back.on_click(lambda _b, d=dep: self._act(d, "rollback"))
            self.buttons[(dep.name, "stop")], self.buttons[(dep.name, "rollback")] = stop, back
            lines.append(w.HBox([stop, back, label]))
        self.children = [*lines, self.message] if lines else [w.HTML("No deployments."), self.message]

    def _act(self, dep: Any, action: str) -> None:
        from nbdeploy.errors import NbdeployError, with_docs

        try:
            getattr(dep, action)()
            self.message.value = esc(f"{action}: {dep.name} done.")
        except NbdeployError as exc:
            self.message.value = esc(f"{action} failed: {with_docs(exc)}")
        self.refresh()

    def __repr__(self) -> str:
        return repr(self._listing)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # ipywidgets cuts text/plain at 110 characters; a saved notebook and CI logs need every column
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = repr(self)
            bundle["text/html"] = self._listing._repr_html_()  # where widgets do not run (GitHub, a viewer)
        return bundle
