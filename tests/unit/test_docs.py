"""The README is a front page that leads to every page under docs/.

The README stays short (under 200 lines) and opens with the two commands; every relative link
in it resolves; every page under docs/ is reachable from it by following links (the README
links docs pages, and those pages link each other), and is in the site's nav. `make docs`
(`mkdocs build --strict`) checks the links between the docs pages and their anchors; the
README is not part of the site, so its links are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# [text](target) outside code; the target up to a space or ')'
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def links(path: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]


def anchors(path: Path) -> set[str]:
    """The ids MkDocs' toc (and GitHub) give the headings: lower case, punctuation dropped, spaces to '-'."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def resolve(source: Path, target: str) -> tuple[Path, str]:
    name, _, anchor = target.partition("#")
    page = (source.parent / name).resolve() if name else source
    return page, anchor


def nav_pages() -> set[str]:
    """The pages mkdocs.yml's nav names (its last section: every `x.md` after `nav:`)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return set(re.findall(r"[\w./-]+\.md\b", nav))


def test_the_readme_is_a_front_page_under_200_lines_opening_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move sections into docs/ and link them"
    first_block = lines[lines.index("```sh") + 1 : lines.index("```")]
    assert [line.split()[:2] for line in first_block] == [["make", "run"], ["make", "test"]]


def test_every_link_of_the_readme_resolves() -> None:
    for target in links(README):
        page, anchor = resolve(README, target)
        assert page.exists(), f"README.md links {target!r}, which does not exist"
        if anchor and page.suffix == ".md":
            assert anchor in anchors(page), f"README.md links {target!r}: no heading gives #{anchor}"


def test_every_docs_page_is_reachable_from_the_readme_and_in_the_nav() -> None:
    seen: set[Path] = set()
    todo = [README]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.exists():
            continue
        seen.add(page)
        todo.extend(resolve(page, target)[0] for target in links(page))
    pages = sorted(DOCS.glob("**/*.md"))
    assert pages, "docs/ has no pages"
    unreachable = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in seen]
    assert not unreachable, f"not reachable from README.md by links (link them under 'Where to read on'): {unreachable}"

    in_nav = nav_pages()
    missing = [str(p.relative_to(DOCS)) for p in pages if str(p.relative_to(DOCS)) not in in_nav]
    assert not missing, f"docs pages missing from mkdocs.yml's nav: {missing}"


def test_the_site_asks_for_no_outside_fonts() -> None:
    """Material's default loads Google Fonts in every page; data hosts often have no internet."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    theme = config[config.index("\ntheme:") : config.index("\nmarkdown_extensions:")]
    assert re.search(r"^\s+font: false\s*$", theme, re.M), "mkdocs.yml: theme.font must be false"
