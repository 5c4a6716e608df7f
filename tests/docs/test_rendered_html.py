"""The built documentation shows no error boxes.

``sphinx-build -W`` fails on warnings, but some errors only show in the rendered page: docutils
``system-message`` blocks and ``problematic`` references, ``.. error::`` admonitions, and furo's
red "ERROR: Adding a table of contents ... is unnecessary" box, which furo's CSS draws over any
``contents`` topic (the ``.. contents::`` directive). This test reads every built page.

It uses the HTML that ``scripts/test`` has just built (``APIGW_WS_DOCS_HTML``), else builds the
docs itself into a temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: furo's escape hatch: a contents topic with this class is drawn without the error box.
FURO_ALLOWED_CONTENTS = "this-will-duplicate-information-and-it-is-still-useful-here"


class ErrorBoxes(HTMLParser):
    """Collects the elements that render as an error box."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._noscript = 0  # search.html's "activate JavaScript" box shows only without JS

    def handle_endtag(self, tag: str) -> None:
        if tag == "noscript":
            self._noscript -= 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "noscript":
            self._noscript += 1
        if self._noscript:
            return
        classes = set((dict(attrs).get("class") or "").split())
        if "system-message" in classes:
            self.found.append(f"<{tag}> docutils system message")
        elif "problematic" in classes:
            self.found.append(f"<{tag}> problematic reference")
        elif {"admonition", "error"} <= classes:
            self.found.append(f"<{tag}> error admonition")
        elif "contents" in classes and FURO_ALLOWED_CONTENTS not in classes:
            self.found.append(f"<{tag}> contents directive (furo draws an ERROR box over it)")


def error_boxes(html: str) -> list[str]:
    parser = ErrorBoxes()
    parser.feed(html)
    return parser.found


def test_detector_finds_each_kind_of_box():
    assert error_boxes('<nav class="contents local" id="modules"></nav>')
    assert error_boxes('<div class="topic contents">x</div>')
    assert error_boxes('<aside class="system-message"><p>ERROR/3</p></aside>')
    assert error_boxes('<a class="problematic" href="#id1">`x`_</a>')
    assert error_boxes('<div class="admonition error"><p>x</p></div>')
    assert not error_boxes(f'<nav class="contents topic {FURO_ALLOWED_CONTENTS}"></nav>')
    assert not error_boxes('<div class="toc-tree-container"><div class="toc-tree"></div></div>')
    assert not error_boxes('<span class="pre">ConfigurationError</span>')
    assert not error_boxes('<noscript><div class="admonition error">JS</div></noscript>')


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory) -> Path:
    built = os.environ.get("APIGW_WS_DOCS_HTML")
    if built and (Path(built) / "index.html").is_file():
        return Path(built)
    out = tmp_path_factory.mktemp("docs-html")
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
        check=True,
        timeout=600,
    )
    return out


@pytest.mark.slow
def test_no_page_renders_an_error_box(html_dir: Path):
    pages = sorted(html_dir.glob("*.html"))
    assert len(pages) > 10
    problems = {
        page.name: found
        for page in pages
        if (found := error_boxes(page.read_text(encoding="utf-8")))
    }
    assert problems == {}
