"""Check every internal link of the built book: each relative ``href``/``src`` names a file of
the build, and each ``#fragment`` an element id of the page it points to.

External links (``http:``, ``https:``, ``mailto:``) are listed, not fetched: the book is built
and checked offline. Usage: ``python book/check_links.py build/book/html`` (exit 1 on a
broken link, each printed as ``page: link (reason)``).
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and a.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(a[key])


def _parse(path: Path, cache: dict) -> _Page:
    if path not in cache:
        page = _Page()
        page.feed(path.read_text(errors="replace"))
        cache[path] = page
    return cache[path]


def broken_links(root: Path) -> tuple[list[str], int, int]:
    """``(broken, checked, external)`` over every ``.html`` file under ``root``."""
    cache: dict[Path, _Page] = {}
    broken, checked, external = [], 0, 0
    for page_path in sorted(root.rglob("*.html")):
        if "_static" in page_path.relative_to(root).parts:   # theme templates, not pages
            continue
        page = _parse(page_path, cache)
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme in ("http", "https", "mailto", "data", "javascript") or link.startswith("//"):
                external += 1
                continue
            checked += 1
            target = page_path if not parts.path else (page_path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page_path.relative_to(root)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _parse(target, cache).ids:
                broken.append(f"{page_path.relative_to(root)}: {link} (no element with id {parts.fragment!r})")
    return broken, checked, external


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "build/book/html").resolve()
    if not root.is_dir():
        print(f"error: no built book at {root} (run scripts/build_book.sh)", file=sys.stderr)
        return 2
    broken, checked, external = broken_links(root)
    for b in broken:
        print(b)
    print(f"links: {checked} internal checked, {len(broken)} broken; {external} external not fetched")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
