"""Headless Chromium for the tests that open pages in a real browser (Selenium, the system's
chromium and chromedriver)."""

import tempfile
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def headless_chrome(tmp_path: Path, window_size: str = "1400,2400", headless: str = "--headless"):
    """A Selenium Chrome driver on headless Chromium with its own profile directory under
    ``tmp_path``; the caller quits it. ``headless``: the flag (``--headless=new`` for Chromium's
    new headless mode)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (headless, *FLAGS, f"--window-size={window_size}", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
