"""Look at the built book as a reader would: every page of the toc in headless Chromium.

Runs only when ``LAYERFUSION_BROWSER_TEST=1`` (``.ci/run`` sets it after ``make book-only``). Checks that each page
renders, that every image and internal link resolves to a file in the build, that nothing is loaded from the network,
and that MathJax typesets the math; saves screenshots of the landing page and one results page. What a reader sees
is checked on each page's built HTML (no browser needed: the tables and outputs are static): no raw Python dict,
no table cell cut with an ellipsis, no Python traceback. Code cells' inputs are left out (a dict literal in code is
code, not an output).
"""

from __future__ import annotations

import os
import re
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


VOID_TAGS = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                       "wbr"))
SKIPPED_CLASSES = frozenset(("cell_input", "headerlink", "sig"))
"""Elements whose text is not output: code cells' inputs, the pilcrow of heading anchors, API signatures (a
constant's value shown as code in the API reference)."""


class VisibleText(HTMLParser):
    """What the article of one built page shows as text and as table cells, code cells' inputs, scripts and styles
    left out."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.cells: list[str] = []
        self._stack: list[tuple[str, bool]] = []
        self._article = 0
        self._cell: list[str] | None = None

    def _skipping(self) -> bool:
        return bool(self._stack) and self._stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS:
            return
        classes = set(dict((k, v or "") for k, v in attrs).get("class", "").split())
        skip = self._skipping() or tag in ("script", "style") or bool(classes & SKIPPED_CLASSES)
        self._stack.append((tag, skip))
        if tag == "article":
            self._article += 1
        if tag in ("td", "th") and not skip:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        while self._stack:  # close up to the matching tag (HTML allows omitted end tags)
            open_tag, _ = self._stack.pop()
            if open_tag == "article":
                self._article -= 1
            if open_tag in ("td", "th") and self._cell is not None:
                self.cells.append("".join(self._cell).strip())
                self._cell = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._article and not self._skipping():
            self.text.append(data)
            if self._cell is not None:
                self._cell.append(data)


RAW_DICT = re.compile(r"\{\s*'[^'\n]{1,80}'\s*:")
"""A printed Python dict: ``{'key':`` (the repr of a dict with string keys)."""
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\w+Error\s+Traceback")
"""A Python or IPython traceback shown in an output."""


def visible(page: Path) -> VisibleText:
    """Parse one built page's article."""
    parser = VisibleText()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def reader_problems(page: Path) -> dict[str, list[str]]:
    """What a reader should never see on ``page``: raw dicts, "…"-cut table cells (pandas also cuts with "..."),
    tracebacks; each with up to three examples."""
    shown = visible(page)
    text = " ".join(shown.text)
    return {
        "raw dict": [m.group(0) for m in RAW_DICT.finditer(text)][:3],
        "truncated cell": [c for c in shown.cells if "…" in c or c == "..." or c.endswith("...")][:3],
        "traceback": [m.group(0) for m in TRACEBACK.finditer(text)][:3],
    }


EXPECTED_UNTIL_RERUN: dict[tuple[str, str], str] = {}
"""Problems on committed executed pages that only a re-run of the default profile can fix, as (page relative to the
build, problem) -> reason; each becomes an xfail(strict=True). Empty since the re-run of 2026-12-05 (every page
renders from the current display code)."""


def _reader_cases() -> list:
    cases = []
    for page in toc_pages():
        name = str(page.relative_to(HTML))
        for problem in ("raw dict", "truncated cell", "traceback"):
            expected = EXPECTED_UNTIL_RERUN.get((name, problem))
            marks = [pytest.mark.xfail(strict=True, reason=f"{name}: {expected}")] if expected else []
            cases.append(pytest.param(page, problem, marks=marks, id=f"{name}-{problem.replace(' ', '_')}"))
    return cases


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


@pytest.mark.parametrize(("page", "problem"), _reader_cases())
def test_reader_sees_no_raw_output(page: Path, problem: str) -> None:
    """No raw dict, "…"-cut cell or traceback on any page of the toc (checked on the built HTML)."""
    assert page.exists(), f"{page.relative_to(HTML)} is missing from the build; run make book"
    found = reader_problems(page)[problem]
    assert not found, f"{page.relative_to(HTML)} shows a {problem}: {found}"


def test_reader_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The three checks fire on a page showing each problem, and not on the same things inside a code cell's input."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><article><div class='cell_output'><pre>{'slope': 0.013, 'p': 0.2}</pre></div>"
                   "<table><tr><td>smollm2-135m, gemma3-27…</td></tr></table>"
                   "<pre>NameError    Traceback (most recent call last)</pre></article></body></html>")
    found = reader_problems(bad)
    assert all(found.values()), found
    good = tmp_path / "good.html"
    good.write_text("<html><body><article><div class='cell_input'><pre>x = {'slope': 1}</pre></div>"
                    "<table><tr><td>22</td></tr></table><p>A dict {} is fine; so is a set {1}.</p>"
                    "</article></body></html>")
    assert not any(reader_problems(good).values()), reader_problems(good)


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
