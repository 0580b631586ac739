"""What a reader of an executed notebook should not see, and what its outputs must be (#16):
no stderr, no warning text, text forms within 100 columns, no memory addresses."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["long_lines", "memory_addresses", "text_of", "unclean_outputs"]

# a Python warning (``UserWarning: ...``) or a library's log line (``WARNING mlflow...``, ``INFO alembic...``)
_WARNING_TEXT = re.compile(r"\b[A-Z][A-Za-z]*Warning\b|\b(WARNING|INFO|DEBUG)\b \S+:|\bWARNING:")


def unclean_outputs(outputs: list[Any]) -> list[str]:
    """What in a cell's outputs a reader should not see: stderr, warning text."""
    found = []
    for out in outputs:
        if out.get("output_type") == "stream":
            text = "".join(out.get("text", ""))
            if out.get("name") == "stderr":
                found.append(f"stderr: {text.strip()[:300]}")
                continue
        elif out.get("output_type") in ("display_data", "execute_result"):
            text = "".join(out.get("data", {}).get("text/plain", ""))
        else:  # an error a cell expects (NBVAL_RAISES_EXCEPTION) is its own output
            continue
        hit = _WARNING_TEXT.search(text)
        if hit:
            found.append(f"warning text: ...{text[max(0, hit.start() - 80) : hit.end() + 200]}...")
    return found


def text_of(out: dict[str, Any], mime: str = "text/plain") -> str:
    if out.get("output_type") == "stream":
        return "".join(out.get("text", "")) if mime == "text/plain" else ""
    return "".join(out.get("data", {}).get(mime, ""))


def long_lines(outputs: list[Any], width: int = 100) -> list[str]:
    """The lines of the outputs' text forms wider than ``width`` columns."""
    return [line for out in outputs for line in text_of(out).splitlines() if len(line) > width]


_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{6,}")


def memory_addresses(outputs: list[Any]) -> list[str]:
    """``<... object at 0x7f...>``: differs at each run, so it breaks a diff of the notebook."""
    found = []
    for out in outputs:
        for mime in ("text/plain", "text/html"):
            hit = _ADDRESS.search(text_of(out, mime))
            if hit:
                found.append(text_of(out, mime)[max(0, hit.start() - 80) : hit.end()])
    return found
