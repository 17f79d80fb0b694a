"""The documentation a newcomer reads: a short README, one file per topic under docs/, links
that land on a file and a heading that exist, and only commands the project itself installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imgbatch.cli.main import main

ROOT = Path(__file__).parents[2]
# docs/_pending/ holds other engineers' fragments waiting to be merged: not published yet.
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md"))]
TOPICS = {
    "api", "csv-format", "profiles-and-outputs", "webhooks", "live-events", "operating",
    "security", "failure-behaviour", "scaling-out", "settings", "development", "architecture",
}  # fmt: skip
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", page.read_text()), re.M)
    slugs = set()
    for heading in headings:
        text = re.sub(r"[^\w\s-]", "", heading.lower().replace("`", ""))
        slugs.add(re.sub(r"\s", "-", text.strip()))
    return slugs


def test_the_readme_is_short_and_every_topic_has_its_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    assert {p.stem for p in PAGES[1:]} >= TOPICS
    assert (ROOT / "docs" / "screenshot.png").exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_internal_link_lands_on_a_file_and_a_heading(page: Path) -> None:
    for target in _LINK.findall(_FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: {target}"


def _commands(text: str, program: str) -> set[str]:
    """The first word after ``program`` wherever the pages show it as a command."""
    code = "\n".join(_FENCE.findall(text) + re.findall(r"`([^`\n]+)`", text))
    return set(re.findall(rf"(?:^|[\s;(])(?:\$ )?{program} ([a-z][\w-]*)", code, re.M))


def test_the_pages_name_only_commands_the_project_installs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "\n".join(page.read_text() for page in PAGES)
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert _commands(text, "make") <= targets, _commands(text, "make") - targets
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = re.search(r"\{([\w,-]+)\}", capsys.readouterr().out)
    assert listed
    assert _commands(text, "imgbatch") <= set(listed.group(1).split(","))
    # A contributor tool the project does not install was once asked for here.
    assert not re.search(r"`duplicates\b", text)
