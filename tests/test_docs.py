"""Documentation: every relative link in README.md and docs/*.md resolves, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def links(md: Path) -> list[str]:
    """Markdown link targets of a file, outside fenced code blocks and inline code."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def test_relative_links_resolve() -> None:
    bad = []
    for md in doc_files():
        for target in links(md):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                continue
            path, _, frag = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif frag and dest.suffix == ".md" and frag not in anchors(dest):
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_docs_index_lists_every_page() -> None:
    index = {(ROOT / "docs" / t).resolve() for t in links(ROOT / "docs" / "index.md")}
    pages = {p.resolve() for p in (ROOT / "docs").glob("*.md")} - {(ROOT / "docs" / "index.md").resolve()}
    assert pages <= index, f"pages missing from docs/index.md: {sorted(p.name for p in pages - index)}"


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it at most {README_MAX_LINES} (move detail to docs/)"


def test_link_checker_sees_broken_links(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# Title\n[ok](x.md#title) [code](`no.md`)\n```\n[fenced](nope.md)\n```\n[bad](missing.md)\n")
    assert links(md) == ["x.md#title", "missing.md"]
    assert anchors(md) == {"title"}
    assert slug("--labeled FILE") == "--labeled-file" and slug("GPU and TensorRT status") == "gpu-and-tensorrt-status"
