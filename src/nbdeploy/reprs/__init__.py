"""HTML for the notebook reprs of core objects (version cards, listings, reports, statuses):
small helpers, every interpolated value escaped, CSS loaded once from `nbdeploy.css` beside this
file; and the number formats their `text/plain` forms share."""

from __future__ import annotations

import functools
import html
import math
import textwrap
from collections.abc import Iterable, Sequence
from importlib import resources

__all__ = ["FOLD_ROWS", "TEXT_WIDTH", "card", "esc", "fit", "fit_columns", "fmt", "fold", "kv_table",
           "markdown_text", "page", "signed", "table"]  # fmt: skip

# a section longer than this many rows is collapsed (a <details> a reader opens without JavaScript)
FOLD_ROWS = 8

# the widest line of a text form: GitHub's and VS Code's text outputs, a terminal, a diff
TEXT_WIDTH = 100


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


def fold(title_html: str, body_html: str, rows: int, open_: bool = False, always: bool = False) -> str:
    """A section under its ``<h4>`` title, collapsed into ``<details>`` (its title the summary)
    when it has more than :data:`FOLD_ROWS` rows (or ``always``); shown open when ``open_``
    (something in it is flagged)."""
    if rows <= FOLD_ROWS and not always:
        return f"<h4>{title_html}</h4>{body_html}"
    return f"<details{' open' if open_ else ''}><summary><h4>{title_html}</h4></summary>{body_html}</details>"


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


def fit(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` with every line within ``width`` columns: prose is wrapped under its own
    indent (plus two), a table row (``|`` ...) is cut with ``...``, as it cannot wrap. A
    single word longer than a line is left whole."""
    out: list[str] = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line)
        elif line.lstrip().startswith("|"):
            out.append(line[: width - 3] + "...")
        else:
            indent = line[: len(line) - len(line.lstrip())]
            # a word is never cut (a URL, a path, a fingerprint must stay whole to be copied)
            out += textwrap.wrap(line.strip(), width, initial_indent=indent, subsequent_indent=indent + "  ",
                                 break_on_hyphens=False, break_long_words=False)  # fmt: skip
    return "\n".join(out)


def markdown_text(markdown: str, width: int = TEXT_WIDTH) -> str:
    """Markdown as text within ``width`` columns, nothing cut: a table row becomes its cells
    joined by `` · `` (wrapped like prose), a separator row or an empty header goes."""
    lines = []
    for line in markdown.splitlines():
        if line.lstrip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(not c or set(c) <= set("-: ") for c in cells):
                continue
            line = "  " + " · ".join(c for c in cells if c)
        lines.append(line)
    return fit("\n".join(lines), width)


def fit_columns(header: Sequence[str], rows: Sequence[Sequence[str]], width: int = TEXT_WIDTH,
                keep: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """An aligned table (header first) within ``width`` columns: the widest column is cut
    (``...``) until the lines fit, none below 8 characters or its header, and never the first
    nor those named in ``keep`` (what a reader looks for and copies: a name, a URL). A table
    that cannot fit so becomes a block a row: ``name: column value, column value...``, wrapped."""
    cells = [list(map(str, header)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    over = sum(widths) + 2 * (len(widths) - 1) - width
    least = [max(8, len(h)) for h in cells[0]]  # a header is never cut
    while over > 0:  # one character at a time off the widest: the long columns end up equal
        cuttable = [i for i in range(1, len(widths)) if widths[i] > least[i] and header[i] not in keep]
        if not cuttable:
            break
        widths[max(cuttable, key=lambda i: widths[i])] -= 1
        over -= 1
    if over > 0:  # cut as far as it goes and still too wide: a block a row, its cells named, wrapped
        named = ([f"{h} {c}" for h, c in zip(cells[0][1:], r[1:], strict=True) if c] for r in cells[1:])
        return [line for r, pairs in zip(cells[1:], named, strict=True)
                for line in fit(f"{r[0]}: " + ", ".join(pairs), width).splitlines()]  # fmt: skip
    cut = [[c if len(c) <= w else c[: w - 3] + "..." for c, w in zip(r, widths, strict=True)] for r in cells]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cut]
