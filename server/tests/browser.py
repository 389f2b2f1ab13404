"""A headless Chromium for the dashboard's tests, driven by Selenium through chromedriver.

The browser is the distribution's (Debian: ``apt-get install chromium chromium-driver``);
nothing is downloaded: Selenium gets both executables' paths and runs offline. Outside
CI a missing browser skips the tests with the reason; with ``DOTFLOW_REQUIRE_BROWSER=1``
(set by ``.ci/run``) it fails them.

Every request the browser makes is in its performance log; ``foreign_requests`` lists
those to any host but the server's, which the tests require to be none. Host resolution
is also mapped so that no name but the loopback resolves: a page that tried to reach
another host could not, and would still show up in the log.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REQUIRE_ENV = "DOTFLOW_REQUIRE_BROWSER"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get install -y chromium chromium-driver"

#: Chromium's flags: headless, no sandbox (CI runs as root), and no traffic of its own.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
)


def find_browser() -> tuple[str, str] | None:
    """The paths of Chromium and chromedriver, or None if either is missing."""
    browser = next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None
    return browser, driver


def require_browser() -> tuple[str, str]:
    """Chromium and chromedriver, else skip (or fail where the browser is required)."""
    found = find_browser()
    if found is not None:
        return found
    reason = f"Chromium and chromedriver are not installed ({INSTALL_HINT})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires them")
    pytest.skip(reason)


def start_chromium(width: int = 1280, height: int = 900) -> Any:
    """A new headless Chromium session with a fresh profile; quit it when done."""
    pytest.importorskip("selenium", reason="selenium is not installed (requirements/test.txt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_browser()
    # Selenium Manager (which may download drivers) is not needed: both paths are given.
    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="dotflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    session.set_page_load_timeout(30)
    session.dotflow_profile = profile  # type: ignore[attr-defined]
    return session


def quit_chromium(session: Any) -> None:
    profile = getattr(session, "dotflow_profile", None)
    try:
        session.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)


def requested_urls(session: Any) -> list[str]:
    """Every URL the browser requested since the last call (the log is drained)."""
    urls = []
    for entry in session.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def foreign_requests(urls: Iterable[str], server: str) -> list[str]:
    """The URLs that went to any origin but ``server``'s (data: and about: are local)."""
    allowed = urlsplit(server).netloc
    return [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "about", "blob") and urlsplit(url).netloc != allowed
    ]


def screenshot(session: Any, path: Path) -> Path:
    """Save the whole page (not only the window) as a PNG at ``path``."""
    height = session.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    width = session.get_window_size()["width"]
    session.set_window_size(width, max(int(height) + 120, 400))
    path.parent.mkdir(parents=True, exist_ok=True)
    session.save_screenshot(str(path))
    return path
