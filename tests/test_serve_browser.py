"""`newsletter serve` in a real browser: headless Chromium (via selenium + chromedriver) against uvicorn.

Skipped when Chromium, chromedriver or selenium is absent (Chromium or chromedriver: except under CI,
where that fails). Screenshots go to the test's tmp folder
and are copied to /tmp/serve-shots/ for a person to look at.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import Settings, load_settings

from .helpers import LiveServer, add_dumps, make_env, seed_names, tool_missing, with_key

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)
pytestmark = pytest.mark.slow

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SSM = "ssm@example.org"
SHOTS = Path("/tmp/serve-shots")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)

# The lowest WCAG contrast ratio of any visible text against the background it is drawn on.
CONTRAST_JS = """
function rgba(text) { const m = text.match(/[\\d.]+/g).map(Number); return m.length === 3 ? [...m, 1] : m; }
function lum(c) { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); }
function canvas() { const dark = matchMedia('(prefers-color-scheme: dark)').matches
    && getComputedStyle(document.documentElement).colorScheme.includes('dark');
  return dark ? [18, 18, 18, 1] : [255, 255, 255, 1]; }
function background(el) { for (; el; el = el.parentElement) { const c = rgba(getComputedStyle(el).backgroundColor);
    if (c[3] > 0.5) return c; } return canvas(); }
let worst = [99, ''];
for (const el of document.body.querySelectorAll('*')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  const box = el.getBoundingClientRect();
  if (!own || box.width === 0 || box.height === 0 || getComputedStyle(el).visibility === 'hidden') continue;
  const a = lum(rgba(getComputedStyle(el).color)), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < worst[0]) worst = [ratio, el.tagName + ': ' + el.textContent.trim().slice(0, 60)];
}
return worst;
"""


def _settings(tmp: Path) -> Settings:
    env = make_env(tmp)
    add_dumps(env, *seed_names()[:2])
    return load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="lexical",
        sender=env["NEWSLETTER_FROM"],
        base_url="https://papers.example.org",
        unsubscribe_secret="browser-test-secret",
    )


@pytest.fixture(scope="module", autouse=True)
def _chromium() -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        tool_missing("needs Debian chromium and chromium-driver")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(_settings(tmp_path_factory.mktemp("serve")), NOW) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shots")


def show(driver: Any, url: str, width: int, scheme: str) -> None:
    """Load ``url`` in a ``width`` px wide viewport with ``prefers-color-scheme: scheme``."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    media = [{"name": "prefers-color-scheme", "value": scheme}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": media})
    driver.get(url)


def screenshot(driver: Any, shots: Path, name: str) -> Path:
    """The whole page (the viewport grown to the document's height), saved and copied to SHOTS."""
    width = driver.execute_script("return window.innerWidth")
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), 9000)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    time.sleep(0.5)  # let the resized page (and any frame in it) paint
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def no_horizontal_scroll(driver: Any) -> tuple[int, int]:
    return driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")


def raw_hrefs(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
    )


# --- the digest as sent ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 800])
def test_digest_reads_well_at_phone_and_desktop_width(
    server: LiveServer, browser: Any, shots: Path, width: int, scheme: str
) -> None:
    show(browser, with_key(f"{server.url}/s/{SSM}/html", server.app), width, scheme)
    assert browser.current_url == f"{server.url}/s/{SSM}/html"  # the key went to a cookie, out of the URL
    scroll_width, inner_width = no_horizontal_scroll(browser)
    assert inner_width == width
    assert scroll_width <= inner_width, f"horizontal scroll at {width}px: {scroll_width}px wide"
    page = server.app.state.previewer.page(SSM)
    expected = [item.url for item in page.view.items]
    hrefs = raw_hrefs(browser)
    assert len(expected) == 10 and all(url in hrefs for url in expected)
    assert all(href.startswith("https://") for href in hrefs), hrefs
    ratio, where = browser.execute_script(CONTRAST_JS)
    assert ratio >= 4.5, f"text hard to read in {scheme} mode (contrast {ratio:.2f}): {where}"
    path = screenshot(browser, shots, f"digest-{width}-{scheme}")
    shot_width, shot_height = png_size(path)
    assert shot_width == width and shot_height > 1500


# --- the preview UI --------------------------------------------------------------------------------

UI_PAGES = {
    "index": "/",
    "subscriber": f"/s/{SSM}?width=375",
    "nothing-relevant": "/s/nobody@example.org",
    "unsubscribe": None,
    "key-needed": "/?key=wrong",
}
OPEN_PAGES = ("unsubscribe", "key-needed")  # opened without the key


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1280])
@pytest.mark.parametrize("name", sorted(UI_PAGES))
def test_preview_pages_fit_and_stay_readable(
    server: LiveServer, browser: Any, shots: Path, name: str, width: int, scheme: str
) -> None:
    url = server.url + (UI_PAGES[name] or _unsubscribe_path(server))
    show(browser, url if name in OPEN_PAGES else with_key(url, server.app), width, scheme)
    assert browser.execute_script("return document.title")
    scroll_width, inner_width = no_horizontal_scroll(browser)
    assert scroll_width <= inner_width, f"{name}: horizontal scroll at {width}px: {scroll_width}px wide"
    ratio, where = browser.execute_script(CONTRAST_JS)
    assert ratio >= 4.5, f"{name}: text hard to read in {scheme} mode (contrast {ratio:.2f}): {where}"
    screenshot(browser, shots, f"ui-{name}-{width}-{scheme}")


HEADINGS_JS = "return Array.from(document.querySelectorAll('h1'), h => h.textContent).join('\\n')"


def _unsubscribe_path(server: LiveServer) -> str:
    page = server.app.state.previewer.page("diff@example.org")
    url = next(v for k, v in page.draft.headers if k == "List-Unsubscribe")
    return "/unsubscribe/" + url.split("/unsubscribe/", 1)[1].split(">", 1)[0]


def test_unsubscribe_button_works_in_the_browser(server: LiveServer, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    show(browser, server.url + _unsubscribe_path(server), 375, "light")
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # The click starts a navigation: wait for the confirmation page instead of reading the old one.
    # Headings are read in one script call, so a page swap between finding and reading cannot
    # leave a stale element reference.
    WebDriverWait(browser, 10).until(lambda b: "You are unsubscribed" in b.execute_script(HEADINGS_JS))
    screenshot(browser, shots, "ui-unsubscribed-375-light")
    assert "diff@example.org" in server.app.state.previewer.store().unsubscribed_emails()


def test_template_error_page_in_the_browser(
    tmp_path: Path, browser: Any, shots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.mjml.j2").write_text(
        "<mjml><mj-body><mj-section><mj-column>\n<mj-text>{{ view.nope }}</mj-text>\n</mj-column></mj-section></mj-body></mjml>\n"
    )
    monkeypatch.setenv("NEWSLETTER_TEMPLATES", str(templates))
    with LiveServer(_settings(tmp_path), NOW) as running:
        show(browser, with_key(f"{running.url}/s/{SSM}", running.app), 375, "light")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Template error"
        message = browser.find_element(By.CSS_SELECTOR, "pre").text
        assert "digest.mjml.j2:2" in message and "nope" in message
        scroll_width, inner_width = no_horizontal_scroll(browser)
        assert scroll_width <= inner_width
        screenshot(browser, shots, "ui-template-error-375-light")
