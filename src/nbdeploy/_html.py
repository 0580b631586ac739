"""Small helpers for the HTML representations: escaped cells, tables, one stylesheet."""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable, Sequence
from importlib import resources

__all__ = ["card", "esc", "kv_table", "table"]


@functools.cache
def _css() -> str:
    return resources.files("nbdeploy").joinpath("static/nbdeploy.css").read_text()


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
