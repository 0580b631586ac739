"""Error sentences link to the section of the docs that says how to fix them.

Each link is a :class:`nbdeploy.errors.Docs` value: a file of the repository and a heading's
anchor as GitHub makes it. The tests read the files, so a renamed heading fails here, not in a
user's notebook.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nbdeploy
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError, PromotionRefusedError, with_docs, without_docs
from tests.helpers import usage_error

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {name: value for name, value in vars(Docs).items() if name.isupper()}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the ATX headings of ``markdown`` (outside ``` and ~~~ fences):
    the text without closing ``#``s, lower case, punctuation dropped but ``-`` and ``_``, spaces
    to ``-``; a repeated one gets ``-1``, ``-2``. (Headings with links, HTML or emphasis, which
    GitHub slugs as rendered, are not used by the links.)"""
    anchors: set[str] = set()
    fence = ""
    for line in markdown.splitlines():
        opened = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if opened and (not fence or opened[1].startswith(fence)):
            fence = "" if fence else opened[1]
            continue
        heading = re.match(r" {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", line)
        if fence or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def test_anchors_follow_githubs_rule() -> None:
    text = "# `%deploy loadtest NAME`\n```\n# not a heading\n```\n## Sizing: `--rps N`\n## Errors\n## Errors ##\n"
    text += "~~~~\n# not one either\n```\n~~~~\n### Erasing a person's records\n"
    assert github_anchors(text) == {
        "deploy-loadtest-name",
        "sizing---rps-n",
        "errors",
        "errors-1",
        "erasing-a-persons-records",
    }


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_section_an_error_links_to_exists(name: str) -> None:
    path, _, anchor = SECTIONS[name].partition("#")
    assert (ROOT / path).is_file(), f"Docs.{name}: no file {path}"
    assert anchor in github_anchors((ROOT / path).read_text()), f"Docs.{name}: no heading #{anchor} in {path}"


def test_each_section_is_linked_from_an_error() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "nbdeploy").rglob("*.py"))
    unused = [name for name in SECTIONS if not re.search(rf"\bDocs\.{name}\b", source)]
    assert unused == []


def test_the_link_follows_the_sentence_and_only_when_there_is_one() -> None:
    plain = DeploymentError("Deployment 'x' is stopped.")
    assert with_docs(plain) == "Deployment 'x' is stopped."
    linked = InvalidInputError("Choose --tls or --insecure-http, not both.", docs=Docs.HTTPS)
    assert str(linked) == "Choose --tls or --insecure-http, not both."  # the sentence itself is unchanged
    assert with_docs(linked) == "Choose --tls or --insecure-http, not both. See docs/security.md#https"
    log_tail = DeploymentError(
        "The local Ray cluster did not start: its log ends\n  Failed to start GCS", docs=Docs.RAY
    )
    assert with_docs(log_tail).endswith("Failed to start GCS\nSee docs/scale-out.md#starting-a-cluster")
    refused = PromotionRefusedError("Refusing.")  # a class's own section
    assert with_docs(refused) == "Refusing. See docs/promote.md#gated-promotion"
    if sys.version_info >= (3, 11):
        assert refused.__notes__ == ["See docs/promote.md#gated-promotion"]  # under a Python traceback


def test_a_usage_error_ends_with_the_link(ip: Any, name: str) -> None:
    ip.run_line_magic("deploy", f"register model --name {name} --data X_train")
    said = usage_error(ip, f"promote {name}/1")
    assert said.startswith(f"Refusing to promote {name}/1 to @champion: it was never validated;")
    assert said.endswith(" See docs/promote.md#gated-promotion")
    assert usage_error(ip, f"validate {name}/1 --data X_test --target y_test --gate 'f1>>0.9'").endswith(
        " See docs/validate.md#--gate-expr-repeatable"
    )
    assert usage_error(ip, "serve x --tls --insecure-http").endswith(" See docs/security.md#the-threat-model")


def test_the_command_line_prints_the_link(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nbdeploy.cli", "--home", str(tmp_path), "serve", "x", "--tls", "--insecure-http"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "nbdeploy: error: Choose --tls or --insecure-http, not both. See docs/security.md#the-threat-model\n"
    ), done.stderr


def test_a_python_error_keeps_its_sentence(name: str, cancer: dict[str, Any]) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    with pytest.raises(PromotionRefusedError) as caught:
        nbdeploy.promote(f"{name}/1")
    assert "See docs" not in str(caught.value) and caught.value.docs == Docs.PROMOTE


def test_a_sentence_kept_elsewhere_drops_the_link_in_either_form() -> None:
    one_line = InvalidInputError("Choose --tls or --insecure-http, not both.", docs=Docs.THREAT_MODEL)
    log_tail = DeploymentError("The local Ray cluster did not start:\n  Failed to start GCS", docs=Docs.RAY)
    for error in (one_line, log_tail, DeploymentError("No link.")):
        assert without_docs(f"nbdeploy: error: {with_docs(error)}\n").rstrip() == f"nbdeploy: error: {error}"
