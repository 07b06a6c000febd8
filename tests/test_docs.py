"""What the README and docs/ claim that can be checked: the two set-up commands, every make target they name,
every file they link or name, every anchor they link to."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from synth import PROJECT_DIR

PAGES = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]
# Where a path named in backticks is a file of this repository (not out/, ~/.cache or ../shared).
REPO_ROOTS = {path.name for path in PROJECT_DIR.iterdir() if not path.name.startswith((".venv", "out"))} - {".bench"}
# Files the docs name as what a reader would create (a new cloud, a new team's stack), or a chart's own file.
NOT_OURS = re.compile(r"clouds/aks/.*|Pulumi\.team-nlp\.yaml|values\.yaml")


def _targets() -> set[str]:
    makefile = (PROJECT_DIR / "Makefile").read_text()
    return {match for line in makefile.splitlines() if (m := re.match(r"^([a-z][-a-z0-9]*):", line))
            for match in [m.group(1)]}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_make_target_a_page_names_exists(page: Path):
    text = page.read_text()
    named = set(re.findall(r"`make (?:--silent )?([a-z][-a-z0-9]*)", text))
    named |= set(re.findall(r"^\s*make (?:--silent )?([a-z][-a-z0-9]*)", text, flags=re.MULTILINE))
    assert named - _targets() == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_and_anchor_of_a_page_resolves(page: Path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
            if anchor not in {_slug(heading) for heading in headings}:
                broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_repository_file_a_page_names_exists(page: Path):
    named = re.findall(r"`([\w./-]+\.(?:py|yaml|yml|md|json|txt|csv|toml))`", page.read_text())
    missing = [name for name in named if (name.split("/")[0] in REPO_ROOTS or "/" not in name)
               and not NOT_OURS.fullmatch(name)
               if not (PROJECT_DIR / name).exists() and not list(PROJECT_DIR.glob(f"*/{name}"))
               and not list(PROJECT_DIR.glob(f"*/*/{name}"))]
    assert missing == []


def test_the_readme_front_page_gives_the_two_set_up_commands_and_they_run():
    readme = (PROJECT_DIR / "README.md").read_text()
    (block,) = re.findall(r"## Two commands\n.*?```sh\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    assert commands == ["make synth", "make test"]
    for command in commands:
        subprocess.run([*command.split(), "-n"], cwd=PROJECT_DIR, check=True, capture_output=True)
    # CI runs the README's test command (.ci/run), so what passes there is what a newcomer gets.
    assert "\nmake test\n" in (PROJECT_DIR / ".ci" / "run").read_text()


def test_the_readme_is_a_front_page_and_links_every_page_of_docs():
    readme = (PROJECT_DIR / "README.md").read_text()
    assert len(readme.splitlines()) <= 80, "the README is the front page: the rest goes to docs/"
    assert {page.name for page in PAGES[1:]} <= set(re.findall(r"\(docs/([\w-]+\.md)\)", readme))
