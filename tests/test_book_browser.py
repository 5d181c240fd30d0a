"""Look at the built book as a reader would: every page of the toc in headless Chromium.

Runs only when ``LAYERFUSION_BROWSER_TEST=1`` (``.ci/run`` sets it after ``make book-only``). Checks that each page
renders, that every image and internal link resolves to a file in the build, that nothing is loaded from the network,
and that MathJax typesets the math; saves screenshots of the landing page and one results page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
ENV_SWITCH = "LAYERFUSION_BROWSER_TEST"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=5000",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get(ENV_SWITCH) != "1" or not (HTML / "index.html").exists(),
        reason=f"set {ENV_SWITCH}=1 after building the book (make book-only) to look at it in Chromium",
    ),
]


class PageParser(HTMLParser):
    """Collects what the checks need from one DOM: title, images, links, remote assets, math and article text."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.images: list[str] = []
        self.links: list[str] = []
        self.remote_assets: list[str] = []
        self.ids: set[str] = set()
        self.math_spans = 0
        self.mjx_containers = 0
        self.mjx_errors = 0
        self.h1 = 0
        self.article_text = 0
        self._in_title = False
        self._article_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "title":
            self._in_title = True
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "h1":
            self.h1 += 1
        elif tag == "mjx-container":
            self.mjx_containers += 1
        elif tag == "mjx-merror":
            self.mjx_errors += 1
        if tag in ("span", "div") and "math" in a.get("class", "").split():
            self.math_spans += 1
        if tag == "article":
            self._article_depth += 1
        if tag == "script" and _is_remote(a.get("src", "")):
            self.remote_assets.append(a["src"])
        if tag == "link" and "stylesheet" in a.get("rel", "") and _is_remote(a.get("href", "")):
            self.remote_assets.append(a["href"])
        if tag == "img" and _is_remote(a.get("src", "")):
            self.remote_assets.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "article" and self._article_depth:
            self._article_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._article_depth:
            self.article_text += len(data.strip())


def _is_remote(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https") or url.startswith("//")


def toc_pages() -> list[Path]:
    """The HTML page of every file listed in _toc.yml."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [HTML / f"{f}.html" for f in files]


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{ENV_SWITCH}=1 but no Chromium found ({', '.join(CHROMIUM_NAMES)}); "
                "install it with `apt-get install -y chromium fonts-dejavu-core`")


def run_chromium(binary: str, url: str, *extra: str) -> str:
    """Run headless Chromium on one URL with a throw-away profile and return its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=120, check=False,
        )
    assert done.returncode == 0, f"chromium failed on {url}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def doms(chromium: str) -> dict[Path, PageParser]:
    pages = toc_pages()
    missing = [str(p.relative_to(HTML)) for p in pages if not p.exists()]
    assert not missing, f"toc pages missing from the build: {missing}; run make book-only"
    parsed = {}
    for page in pages:
        parser = PageParser()
        parser.feed(run_chromium(chromium, page.as_uri(), "--dump-dom"))
        parsed[page] = parser
    return parsed


def _target(page: Path, url: str) -> tuple[Path, str]:
    parts = urlsplit(url)
    path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


def test_every_page_renders(doms: dict[Path, PageParser]) -> None:
    for page, dom in doms.items():
        name = page.relative_to(HTML)
        assert dom.title.strip(), f"{name}: empty <title>"
        assert dom.h1 >= 1, f"{name}: no <h1> heading"
        assert dom.article_text > 0, f"{name}: the main article has no text"


def test_images_resolve_to_files(doms: dict[Path, PageParser]) -> None:
    for page, dom in doms.items():
        for src in dom.images:
            if src.startswith("data:") or _is_remote(src):
                continue
            target, _ = _target(page, src)
            assert target.is_file(), f"{page.relative_to(HTML)}: <img src={src!r}> points to a missing file"


def test_internal_links_resolve(doms: dict[Path, PageParser]) -> None:
    id_cache: dict[Path, set[str]] = {page: dom.ids for page, dom in doms.items()}
    for page, dom in doms.items():
        for href in dom.links:
            scheme = urlsplit(href).scheme
            if scheme in ("http", "https", "mailto", "javascript") or href.startswith("//"):
                continue
            target, fragment = _target(page, href)
            assert target.exists(), f"{page.relative_to(HTML)}: link {href!r} points to a missing file"
            if fragment and target.suffix == ".html":
                if target not in id_cache:
                    static = PageParser()
                    static.feed(target.read_text(encoding="utf-8"))
                    id_cache[target] = static.ids
                assert fragment in id_cache[target], f"{page.relative_to(HTML)}: link {href!r}: no id {fragment!r}"


def test_nothing_is_loaded_from_the_network(doms: dict[Path, PageParser]) -> None:
    for page, dom in doms.items():
        assert not dom.remote_assets, f"{page.relative_to(HTML)} loads remote assets: {dom.remote_assets}"


def test_mathjax_typesets_the_math(doms: dict[Path, PageParser]) -> None:
    method = HTML / "book" / "method.html"
    assert method in doms, "book/method.html is not in the toc"
    assert doms[method].mjx_containers > 0, "method.html: MathJax produced no <mjx-container> (math shown as raw TeX)"
    for page, dom in doms.items():
        name = page.relative_to(HTML)
        assert dom.mjx_containers >= dom.math_spans, f"{name}: {dom.math_spans} math spans, {dom.mjx_containers} typeset"
        assert dom.mjx_errors == 0, f"{name}: {dom.mjx_errors} TeX errors (<mjx-merror>)"


def test_screenshots(chromium: str) -> None:
    pages = toc_pages()
    results = [p for p in pages if "executed" in p.parts]
    assert results, "_toc.yml lists no results page under book/executed/"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for page, name in ((pages[0], "landing.png"), (results[0], "results.png")):
        shot = SHOTS / name
        shot.unlink(missing_ok=True)
        run_chromium(chromium, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,900")
        assert shot.is_file() and shot.stat().st_size > 10_000, f"no usable screenshot of {page.relative_to(HTML)}"
