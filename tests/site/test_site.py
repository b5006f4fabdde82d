"""The built website (``make docs``), opened in headless Chromium as a reader opens it.

Run after ``make docs`` (``make test`` does both, in that order). Every notebook page must show
every figure its executed notebook holds, none of them broken, and its equations typeset (no TeX
left as text); the start page must link to every notebook page. A screenshot of each page goes to
build/site-screenshots/ for a look by eye.

Chromium: ``$AVISC_CHROMIUM``, else a ``chromium`` / ``chromium-browser`` / ``google-chrome`` on
PATH, else the one ``playwright install chromium`` downloads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import sync_playwright

from avisc_lib.course import syllabus

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "site-screenshots"
EXECUTED = ROOT / "build" / "site-src" / "notebooks"
pytestmark = pytest.mark.site
PAGES = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _chromium() -> str | None:
    """A Chromium executable to drive, or None for playwright's own download."""
    named = os.environ.get("AVISC_CHROMIUM")
    if named:
        return named
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def browser():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no site in {SITE}: run `make docs` first")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _figures_in(notebook: Path) -> int:
    """How many PNG figures the executed notebook's outputs hold."""
    cells = nbformat.read(notebook, as_version=4).cells
    return sum("image/png" in o.get("data", {}) for c in cells if c.cell_type == "code" for o in c.outputs)


def _open(browser, page_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri(), wait_until="load")
    return page, errors


@pytest.mark.parametrize("name", PAGES)
def test_each_notebook_page_renders_its_figures(browser, name):
    expected = _figures_in(EXECUTED / f"{name}.ipynb")
    assert expected > 0 or name.startswith("00"), f"{name}: the executed notebook holds no figure"
    page, errors = _open(browser, SITE / "notebooks" / f"{name}.html")
    if syllabus.LESSONS[name[:2]].equations:  # MathJax (served with the site) typesets every equation
        page.wait_for_function("document.querySelectorAll('.MathJax_Display').length > 0", timeout=30_000)
        page.wait_for_function("MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running === 0")
    images = page.eval_on_selector_all(
        "article img", "imgs => imgs.map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0}))"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    title = page.title()
    text = page.inner_text("article")
    page.close()
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"{name}: broken images {broken}"
    figures = [i for i in images if i["src"].startswith("data:image/png")]
    assert len(figures) >= expected, f"{name}: {len(figures)} figures shown, the notebook holds {expected}"
    assert name[:2] in title and "You will" in text  # the page is the notebook, outline first
    assert "$$" not in text and "\\frac" not in text, f"{name}: an equation was left as TeX"
    assert "Math Processing Error" not in text, f"{name}: MathJax could not typeset an equation"
    assert not errors, f"{name}: script errors {errors}"


def test_the_start_page_links_every_notebook(browser):
    page, errors = _open(browser, SITE / "index.html")
    links = page.eval_on_selector_all("article a", "anchors => anchors.map(a => a.getAttribute('href'))")
    page.screenshot(path=str(SHOTS / "index.png"), full_page=True)
    page.close()
    for name in PAGES:
        assert f"notebooks/{name}.html" in links, f"the start page does not link {name}"
        assert (SITE / "notebooks" / f"{name}.html").is_file()
    assert not errors
