"""The live dashboard in a real headless chromium (Debian's, driven by chromedriver).

The page loads with no console error, shows the active call count and the KPIs of
known test traffic, and updates without a reload when a new call starts. The
screenshot is kept as dashboard.png in the test's tmp_path (its path is printed).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitoring_harness import (
    KnownCall,
    authorize,
    ctl_json,
    http_port,
    known_traffic,
    play,
    start_daemon,
    wait_for,
)
from radius_e2e_harness import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1250",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chargingd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, workers=2)
    try:
        d.wait_ready()
        yield d
    finally:
        d.kill()
        print(f"---- daemon log ----\n{d.log()}")


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


async def test_dashboard_shows_live_calls_and_kpis(
    daemon: Daemon, browser: Any, tmp_path: Path
) -> None:
    daemon.create_account("kpi", "100.00")
    daemon.create_account("poor", "0.00")
    await asyncio.gather(*(play(daemon, c) for c in known_traffic()))
    wait_for(
        lambda: (
            ctl_json(daemon, "stats", "--window", "5m")["windows"]["5m"]["all"]["all"]["attempts"]
            == 11
        ),
        "the KPI windows to hold the 11 calls",
    )
    browser.get(f"http://127.0.0.1:{http_port(daemon)}/")
    browser.execute_script("window.loadedOnce = true;")  # gone if the page reloads

    def shown(element_id: str, expected: str) -> bool:
        return text_of(browser, element_id) == expected

    wait_for(lambda: shown("asr", "36.4%"), "the ASR tile")
    assert text_of(browser, "ner") == "90.0%"
    assert text_of(browser, "acd") == "1m 15s"
    assert text_of(browser, "attempts") == "11"
    assert text_of(browser, "refused") == "3"
    assert text_of(browser, "active_calls") == "0"
    table = text_of(browser, "kpi_table")
    for row in ("all calls", "gateway 127.0.0.1", "gateway 127.0.0.2", "destination FR"):
        assert row in table, table
    assert "66.7%" in table and "2,500 ms" in table and "4.00" in table  # NER FR, PDD, MOS

    # The KPI alert rule's incident (gateway 127.0.0.1's ASR, 40 % < 50 %) is listed.
    await asyncio.to_thread(
        wait_for, lambda: "asr of gateway 127.0.0.1" in text_of(browser, "alerts"), "the alert"
    )
    # A new call starts: the page shows it without a reload.
    sock, accepted = await authorize(daemon, KnownCall("live-1", "kpi"))
    try:
        assert accepted
        await asyncio.to_thread(wait_for, lambda: shown("active_calls", "1"), "1 active call")
        assert browser.execute_script("return window.loadedOnce === true")
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        print(f"dashboard screenshot: {shot}")
    finally:
        sock.close()
    # At 1280 px (8 tiles a row down to 1100 px) every figure stays on one line inside
    # its tile: "90.0%" ran past the NER tile's edge and "1m 15s" took two lines (and
    # 132,944 active calls ran past the tile at 1920 px).
    browser.set_window_size(1280, 1000)
    wait_for(lambda: browser.execute_script(_SPILLING) == [], "every tile figure to fit")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    assert browser.find_element("id", "link").get_attribute("class") == "dot up"


# The tile figures wider than their tile or on more than one line.
_SPILLING = """
return [...document.querySelectorAll(".tile .value")].filter(e => {
  const r = document.createRange();
  r.selectNodeContents(e);
  const lines = new Set([...r.getClientRects()].map(q => Math.round(q.top))).size;
  return e.scrollWidth > e.clientWidth || lines > 1;
}).map(e => e.id + "=" + e.textContent);
"""
