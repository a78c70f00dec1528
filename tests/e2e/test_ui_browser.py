"""The cluster page in a real headless browser (Debian's chromium, driven by selenium): a 3-node
cluster of real processes, the page of a follower shows the three members and the leader, and
after the leader is killed with SIGKILL it shows a new leader and the old one down.

Selenium never downloads anything: the driver and the browser are given by path (which skips
Selenium Manager) and ``SE_OFFLINE`` forbids it anyway. Skipped only where chromium or its
driver is not installed (CI installs both, see .ci/run). ``RAFTLY_UI_SCREENSHOT=path`` saves a
screenshot of the page after the failover (docs/images/cluster-page.png is one).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import ELECTION_TIMEOUT, FAILOVER_BOUND, HEARTBEAT, started

from raftly.kv.client import Client
from raftly.localcluster import ProcessCluster, plan_loopback

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver")

PAGE_DEADLINE = 30.0
"""Seconds the page gets to show a state (it polls once a second)."""


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager, were it ever run: no download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,1100",
                 "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # The console, to see Content-Security-Policy violations (a blocked inline style or script).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def page_state(driver: object) -> dict[str, object]:
    """What the page shows: the leader, each member's role and health, the serving node's state."""
    state: dict[str, object] = driver.execute_script(  # type: ignore[attr-defined]
        """
        const members = {};
        for (const m of document.querySelectorAll('#members .member')) {
          members[m.dataset.name] = {role: m.dataset.role, health: m.dataset.health};
        }
        return {leader: document.getElementById('leader-name').dataset.leader,
                members: members, serving: document.body.dataset.serving || null,
                writes: document.getElementById('writes').textContent,
                busy: Number(document.getElementById('chart-writes').dataset.busySeconds || 0)};
        """)
    return state


def csp_violations(driver: object) -> list[str]:
    """The browser console's messages about the Content-Security-Policy (none expected: the
    page's inline code is allowed by hash, and it fetches only from its own node)."""
    entries: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[attr-defined]
    return [e["message"] for e in entries if "Content Security Policy" in e["message"]]


def wait_for_page(driver: object, what: str, check: object) -> dict[str, object]:
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d: object) -> dict[str, object] | None:
        state = page_state(d)
        return state if check(state) else None  # type: ignore[operator]

    try:
        return WebDriverWait(driver, PAGE_DEADLINE, poll_frequency=0.2).until(shown)  # type: ignore[arg-type]
    except Exception as exc:
        raise AssertionError(f"the page did not show {what} within {PAGE_DEADLINE}s; "
                             f"it shows {page_state(driver)}") from exc


def test_a_followers_page_shows_the_members_and_a_new_leader_after_the_leader_is_killed(
        cluster: ProcessCluster, browser: object) -> None:
    leader, _ = cluster.wait_for_leader()
    follower = next(name for name in cluster.names if name != leader)
    # Some writes while the page watches, so its charts have something to draw.
    stop = threading.Event()
    writer = threading.Thread(target=_write_until, args=(cluster, stop), daemon=True)
    writer.start()
    try:
        browser.get(cluster.url(follower) + "/ui")  # type: ignore[attr-defined]
        before = wait_for_page(browser, f"three members up and {leader} leading", lambda s: (
            s["leader"] == leader and len(s["members"]) == 3
            and all(m["health"] == "up" for m in s["members"].values())))
        assert before["members"][leader]["role"] == "leader"  # type: ignore[index]
        screenshot = os.environ.get("RAFTLY_UI_SCREENSHOT")
        # The writes reach the throughput chart (for a screenshot: long enough to show a line).
        busy = 15 if screenshot else 1
        wait_for_page(browser, "the writes on the chart", lambda s: s["busy"] >= busy)

        cluster.kill(leader, signal.SIGKILL)
        survivors = [n for n in cluster.names if n != leader]
        new_leader, _ = cluster.wait_for_leader(timeout=FAILOVER_BOUND * 3, among=survivors)
        after = wait_for_page(browser, f"{new_leader} leading and {leader} down", lambda s: (
            s["leader"] == new_leader
            and s["members"][leader]["health"] == "down"  # type: ignore[index]
            and s["members"][new_leader]["role"] == "leader"))  # type: ignore[index]
        assert after["serving"] == "ok"
        # The timeline shows both terms' leaders, merged from the survivors' timelines.
        terms = browser.execute_script(  # type: ignore[attr-defined]
            "return [...document.querySelectorAll('#terms tr')].map(r => r.innerText)")
        assert any(new_leader in row for row in terms), terms
        # The writes go on through the new leader, and the page shows them.
        wait_for_page(browser, "writes through the new leader",
                      lambda s: s["writes"] not in ("—", "0"))
        if screenshot:
            wait_for_page(browser, "the charts after the failover",
                          lambda s: s["busy"] >= busy + 10)
            height = browser.execute_script(  # type: ignore[attr-defined]
                "return document.documentElement.scrollHeight")
            browser.set_window_size(1280, height + 140)  # type: ignore[attr-defined]
            browser.save_screenshot(screenshot)  # type: ignore[attr-defined]
        # Only the members that answer count as up; the summary agrees with the cards.
        up = browser.find_element("id", "members-up").text  # type: ignore[attr-defined]
        assert up == "2 / 3", up
        assert csp_violations(browser) == []
    finally:
        stop.set()
        writer.join(timeout=30)


def test_the_page_says_when_the_node_serving_it_is_unreachable(
        cluster: ProcessCluster, browser: object) -> None:
    name = cluster.names[0]
    browser.get(cluster.url(name) + "/ui")  # type: ignore[attr-defined]
    wait_for_page(browser, "three members", lambda s: len(s["members"]) == 3)
    cluster.kill(name, signal.SIGKILL)
    wait_for_page(browser, "that the node serving it is unreachable",
                  lambda s: s["serving"] == "unreachable")
    banner = browser.find_element("id", "banner-down")  # type: ignore[attr-defined]
    assert banner.is_displayed() and f"Cannot reach {name}" in banner.text


READ_TOKEN = "ui-read-token-0123456789"


def test_with_an_auth_file_the_page_asks_for_a_token_and_then_shows_the_cluster(
        tmp_path: Path, browser: object) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(f'[[tokens]]\ntoken = "{READ_TOKEN}"\nrole = "read"\nname = "viewer"\n')
    # The nodes call each other's APIs with a read token of their own (no TLS here).
    cluster = ProcessCluster(tmp_path / "cluster", plan_loopback(3),
                             election_timeout=ELECTION_TIMEOUT, heartbeat=HEARTBEAT,
                             token=READ_TOKEN, env={"RAFTLY_TOKEN": READ_TOKEN},
                             serve_options=["--auth-file", str(auth)])
    with contextlib.contextmanager(started)(cluster):
        browser.get(cluster.url(cluster.names[0]) + "/ui")  # type: ignore[attr-defined]

        def prompted() -> bool:
            shown: bool = browser.find_element("id", "auth").is_displayed()  # type: ignore[attr-defined]
            return shown

        def stored_token() -> str | None:
            token: str | None = browser.execute_script(  # type: ignore[attr-defined]
                "return sessionStorage.getItem('raftly-token')")
            return token

        wait_for_page(browser, "the token prompt", lambda s: prompted())
        assert page_state(browser)["members"] == {}
        browser.find_element("id", "token").send_keys("not-a-token")  # type: ignore[attr-defined]
        browser.find_element("id", "token-go").click()  # type: ignore[attr-defined]
        wait_for_page(browser, "the prompt again after a wrong token",
                      lambda s: prompted() and stored_token() is None)
        browser.find_element("id", "token").send_keys(READ_TOKEN)  # type: ignore[attr-defined]
        browser.find_element("id", "token-go").click()  # type: ignore[attr-defined]
        wait_for_page(browser, "three members up", lambda s: len(s["members"]) == 3 and all(
            m["health"] == "up" for m in s["members"].values()))  # type: ignore[attr-defined]
        assert not prompted() and stored_token() == READ_TOKEN


def _write_until(cluster: ProcessCluster, stop: threading.Event) -> None:
    """Writes through any node until ``stop``; failures during the failover are expected."""
    client = Client(cluster.endpoints, timeout=2.0)
    i = 0
    while not stop.is_set():
        i += 1
        try:
            client.put(f"ui/{i % 50}", b"x" * 64)
        except Exception:
            stop.wait(0.05)
