"""The README is a front door and the docs hold together, read from the Markdown itself (no network).

- every relative link and image (``[text](path)``, ``![alt](path)``, with an optional ``#anchor``) in
  ``README.md``, ``docs/*.md`` and ``benchmarks/README.md`` names a file or folder of the repository, and an
  ``#anchor`` into a Markdown page names one of its headings by GitHub's slug;
- every page under ``docs/`` is linked from the README;
- the README has at most ``README_MAX_LINES`` lines.

Links inside code (fenced blocks, inline spans) are text, not links, and are not checked; links with a scheme
(``https:``, ``mailto:``) leave the repository and are not followed.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from paths import ROOT

README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) or ![alt](target); the text may hold one level of brackets; an optional "title" after.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def pages(root: Path) -> list[Path]:
    """The pages whose links are checked."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "benchmarks" / "README.md"]
    return [p for p in found if p.is_file()]


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked."""
    out, fenced = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence and (fenced is None or fence.group(1) == fenced):
            fenced = fence.group(1) if fenced is None else None
            continue
        if fenced is None:
            out.append((number, CODE_SPAN.sub(lambda m: m.group(2).replace("[", "").replace("]", ""), line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (a repeated one numbered -1, -2, … as GitHub does) and
    explicit ``<a name=…>``/``<a id=…>``."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose(page.read_text()):
        found |= set(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return found


def targets(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image on the page that stays in the repository."""
    return [
        (number, target)
        for number, line in prose(page.read_text())
        for target in LINK.findall(line)
        if not SCHEME.match(target) and not target.startswith("//")
    ]


def findings(root: Path, checked: list[Path]) -> list[str]:
    """One line per link that does not resolve: a missing file, a path outside the repository, a missing
    heading."""
    found = []
    for page in checked:
        where = page.relative_to(root)
        for number, target in targets(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
            if not dest.is_relative_to(root.resolve()):
                found.append(f"{where}:{number}: {target} leaves the repository")
            elif not dest.exists():
                found.append(f"{where}:{number}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                found.append(f"{where}:{number}: {target}: no heading #{anchor} in {dest.relative_to(root.resolve())}")
    return found


def test_every_relative_link_resolves():
    assert findings(ROOT, pages(ROOT)) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for _, t in targets(ROOT / "README.md")}
    orphans = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert orphans == []


def test_the_readme_is_a_front_door():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move a topic to docs/"


def test_slugs_are_githubs():
    assert slug("The comparison: `joulebench compare`") == "the-comparison-joulebench-compare"
    assert slug("Soaks: `soak.py`") == "soaks-soakpy"
    assert slug("Locust's web UI: the Energy tab") == "locusts-web-ui-the-energy-tab"
    assert slug("What we test: faults and what the user is told") == "what-we-test-faults-and-what-the-user-is-told"
    assert slug("See [the monitor](monitor.md) — *how*") == "see-the-monitor--how"


def test_the_check_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    """The check above can fail: a tree with one broken link and one broken anchor gives one finding each, and
    what is not a link (code, other sites) gives none."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Page A\n\n## Same name\n\n## Same name\n\n```\n# not a heading\n```\n")
    (tmp_path / "docs" / "shot.png").write_bytes(b"")
    (tmp_path / "README.md").write_text(
        "# Top\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#page-a) [ok](docs/a.md#same-name-1) [ok](#top) ![ok](docs/shot.png)\n"
        "[site](https://example.org/missing.md) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[broken](docs/missing.md)\n"
        "[broken anchor](docs/a.md#not-a-heading)\n"
    )
    found = findings(tmp_path, pages(tmp_path))
    assert len(found) == 2, found
    assert found[0].startswith("README.md:8: docs/missing.md: no such file"), found
    assert found[1].startswith("README.md:9: docs/a.md#not-a-heading: no heading #not-a-heading"), found
