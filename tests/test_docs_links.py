"""Every relative link in README.md and docs/*.md points to a file that exists, and to a heading in it.

The README is a map into docs/: a section moved or renamed must not leave a link behind that leads nowhere.
Anchors are made as GitHub makes them from a heading (lower case, punctuation dropped, spaces to dashes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipglr_builder import render

PAGES = [render.PROJECT / "README.md", *sorted((render.PROJECT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without fenced blocks and with code spans made harmless (they may hold brackets or #)."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", FENCE.sub("", page.read_text()), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # https:, mailto: ... are not ours to check


def test_the_pages_are_there_and_the_readme_links_to_each_doc():
    docs = [page for page in PAGES if page.parent.name == "docs"]
    assert docs, "no docs/*.md found"
    readme_targets = {target.split("#")[0] for target in relative_links(PAGES[0])}
    for page in docs:
        assert f"docs/{page.name}" in readme_targets, f"README.md does not link to docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(render.PROJECT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page: Path):
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link {target!r}: no file {file}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: link {target!r}: no heading with that anchor in {file.name}"


def test_anchors_are_made_as_github_makes_them():
    assert slug("Where gitlab-runner comes from (`runner_source`)") == "where-gitlab-runner-comes-from-runner_source"
    assert slug("Pruning nested storage (`prune_interval`, `prune_age`)") == \
        "pruning-nested-storage-prune_interval-prune_age"
    assert slug("Stopping, and resource limits") == "stopping-and-resource-limits"
