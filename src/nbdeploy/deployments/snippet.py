"""A working call to a deployment in curl, Python or JavaScript, as ``%deploy snippet`` prints it.

>>> print(d.snippet("python"))       # doctest: +SKIP

The snippet carries the deployment's URL, the headers it needs, one example row (the
model's own input example, else a row of placeholders shaped by the signature) and, for
HTTPS, the certificate to trust. The token is read from its file when the call runs, never
pasted: a snippet is shared, committed and shown in notebooks. The Python one uses the
standard library only, so it runs wherever Python does.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdeploy.deployments.watching import HandleParts
from nbdeploy.errors import InvalidInputError
from nbdeploy.model_entry import read_serving_example, read_signature
from nbdeploy.privacy import keeps_private

__all__ = ["LANGUAGES", "Snippet", "Snippets"]

LANGUAGES = ("curl", "python", "javascript")
_PLACEHOLDER = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}


@dataclass(frozen=True)
class Snippet:
    """Code that calls a deployment; ``str()`` is the code."""

    lang: str
    code: str

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return self.code

    def _repr_markdown_(self) -> str:
        fence = {"curl": "bash", "python": "python", "javascript": "javascript"}[self.lang]
        return f"```{fence}\n{self.code}\n```"


def example_row(model_path: str, private: bool = False) -> dict[str, Any]:
    """A one-row ``dataframe_split`` body: the model's input example, else (or for a deployment
    that keeps its inputs private: the example is often a real row) placeholders."""
    doc = None if private else read_serving_example(model_path)
    try:
        split = (doc or {})["dataframe_split"]
        return {"dataframe_split": {"columns": list(split["columns"]), "data": [list(split["data"][0])]}}
    except (KeyError, TypeError, IndexError):
        inputs, _ = read_signature(Path(model_path))
        cols = [c for c in inputs or [] if "name" in c]
        return {"dataframe_split": {"columns": [c["name"] for c in cols],
                                    "data": [[_PLACEHOLDER.get(str(c.get("type")), "") for c in cols]]}}  # fmt: skip


def _python(url: str, body: str, token: str | None, cert: str | None) -> str:
    lines = ["import json", "import ssl", "import urllib.request", "from pathlib import Path", "",
             f"url = {url + '/invocations'!r}", f"body = {body}",
             'headers = {"Content-Type": "application/json"}']  # fmt: skip
    if token:
        lines.append(f'headers["Authorization"] = "Bearer " + Path({token!r}).read_text().strip()')
    context = f"ssl.create_default_context(cafile={cert!r})" if cert else "None"
    lines += [f"context = {context}",
              "request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)",
              "with urllib.request.urlopen(request, context=context, timeout=30) as answer:",
              '    print(json.load(answer)["predictions"])']  # fmt: skip
    return "\n".join(lines)


def _curl(url: str, body: str, token: str | None, cert: str | None) -> str:
    parts = [f"curl -sS {shlex.quote(url + '/invocations')}", "-H 'Content-Type: application/json'"]
    if cert:
        parts.append(f"--cacert {shlex.quote(cert)}")
    if token:
        parts.append(f'-H "Authorization: Bearer $(cat {shlex.quote(token)})"')
    parts.append(f"-d {shlex.quote(body)}")
    return " \\\n  ".join(parts)


def _javascript(url: str, body: str, token: str | None, cert: str | None) -> str:
    run = f"NODE_EXTRA_CA_CERTS={cert} node call.mjs" if cert else "node call.mjs"
    lines = [f"// Node 18 or later: {run}", 'import { readFileSync } from "node:fs";', "",
             f"const body = {body};", 'const headers = { "Content-Type": "application/json" };']  # fmt: skip
    if token:
        lines.append(f'headers.Authorization = "Bearer " + readFileSync({json.dumps(token)}, "utf8").trim();')
    lines += [f"const answer = await fetch({json.dumps(url + '/invocations')}, "
              "{ method: \"POST\", headers, body: JSON.stringify(body) });",
              "console.log((await answer.json()).predictions);"]  # fmt: skip
    return "\n".join(lines)


class Snippets(HandleParts):
    """The snippet method of a deployment."""

    def snippet(self, lang: str = "python", token_file: str | Path | None = None) -> Snippet:
        """A call to this deployment in ``lang`` (curl, python or javascript) with an example row;
        the token read from ``token_file`` (default: the owner token's file, when the server
        needs one; a client app should hold a ``predict`` token of its own)."""
        if lang not in LANGUAGES:
            raise InvalidInputError(f"Unknown language {lang!r}: use one of {', '.join(LANGUAGES)}.")
        spec = self.spec
        if token_file is not None and not Path(token_file).expanduser().is_file():
            raise InvalidInputError(f"Invalid --token-file: {token_file} is not a file.")
        token = str(Path(token_file).expanduser().absolute()) if token_file else None
        if token is None and spec.require_token:
            token = str(self.path / "token")
        row = example_row(spec.current.model_path, private=keeps_private(spec.log_inputs, spec.redact))
        body = repr(row) if lang == "python" else json.dumps(row)
        build = {"curl": _curl, "python": _python, "javascript": _javascript}[lang]
        return Snippet(lang, build(self.url, body, token, spec.tls_cert))
