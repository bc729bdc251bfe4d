"""The README and the pages under docs/ link to each other by file and by heading: a moved section
must not leave a reader at a missing page or at the top of one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        s = slug(heading)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")  # GitHub numbers a repeated heading's anchor
    return out


def broken_links(pages: list[Path]) -> list[str]:
    anchors: dict[Path, set[str]] = {}
    bad = []
    for page in pages:
        for link in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", link):
                continue  # http(s), mailto: not checked here (no network)
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                bad.append(f"{page.name}: {link} (no such file)")
            elif anchor and target.suffix == ".md":
                if target not in anchors:
                    anchors[target] = _anchors(target)
                if anchor not in anchors[target]:
                    bad.append(f"{page.name}: {link} (no such heading in {target.name})")
    return bad


def test_every_link_between_the_readme_and_the_docs_finds_its_page_and_heading():
    assert broken_links(_pages()) == []


def test_the_check_finds_a_missing_page_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Speed: measurements (2026-12-04)\n\nsee [b](b.md#there) and [c](c.md)\n"
                                   "and [here](#speed-measurements-2026-12-04), [gone](#speed)\n\n```\n[not a link](x.md)\n```\n")
    (tmp_path / "b.md").write_text("# Here\n")
    assert broken_links([tmp_path / "a.md"]) == [
        "a.md: b.md#there (no such heading in b.md)", "a.md: c.md (no such file)", "a.md: #speed (no such heading in a.md)"]
