"""HTML for the notebook reprs of core objects (version cards, listings, reports, statuses):
small helpers, every interpolated value escaped, CSS loaded once from `nbdeploy.css` beside this
file; and the number formats their `text/plain` forms share."""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Iterable, Sequence
from importlib import resources

__all__ = ["card", "esc", "fmt", "kv_table", "page", "signed", "table"]


@functools.cache
def _css() -> str:
    return resources.files(__name__).joinpath("nbdeploy.css").read_text()


def esc(value: object) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (for cells built from escaped parts)."""
    cell = (lambda v: str(v)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of label → already-escaped HTML value."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def card(title_html: str, *sections: str) -> str:
    """A self-contained block: the stylesheet, a title and sections (already HTML)."""
    return f"<style>{_css()}</style><div class='nbd'><h3>{title_html}</h3>{''.join(sections)}</div>"


def page(title: str, body_html: str) -> str:
    """A whole HTML document around ``body_html``, declaring UTF-8: an artefact opened on its
    own (MLflow's artifact viewer, a browser) otherwise falls back to Latin-1 and shows a
    "✓" as "âœ“"."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>\n'
        f"<body>{body_html}</body></html>\n"
    )


def fmt(value: float | None) -> str:
    """A metric for display: 4 significant digits, ``-`` when not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def signed(value: float | None) -> str:
    """A difference for display: with its sign, ``-`` when not measured."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:+.4g}"
