"""The observatory in a real browser: every page, a run, a comparison, the lake, and a live run as it goes.

`bt ui` runs as a process against the session's site; headless Chromium opens each page, clicks
through, and its performance log shows that no request left 127.0.0.1. Screenshots go to
results/observatory-screenshots/.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ui_helpers import BTC, LIVE_CONFIG, ISSUE_DAY, SCREENSHOTS, UNCHECKED_DAY, first_line, start_process, stop_process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(driver, cond, timeout_s: float = 30, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda d: cond(d))
    except Exception as exc:  # selenium's TimeoutException carries no message of its own
        raise AssertionError(f"timed out waiting for {what} on {driver.current_url}") from exc


def _shot(driver, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _requests(driver) -> list[str]:
    """URLs the browser asked for since the last call (performance log, Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _assert_local(driver, base: str, seen: list[str]) -> None:
    urls = _requests(driver)
    seen.extend(urls)
    away = [u for u in urls if not (u.startswith(base + "/") or u.startswith(("data:", "about:", "blob:")))]
    assert not away, f"requests left {base}: {away[:5]}"


def _plotted(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('.js-plotly-plot .main-svg').length")


@pytest.fixture(scope="module")
def ui(site, tmp_path_factory):
    """``(base URL, live runner URL, processes)``: `bt ui` over the site, pointed at one live runner port."""
    log_dir = tmp_path_factory.mktemp("ui-logs")
    live_port = _free_port()
    live_url = f"http://127.0.0.1:{live_port}"
    proc = start_process(
        [
            "-m",
            "bt.cli",
            "ui",
            "--results",
            str(site["results"]),
            "--lake",
            str(site["lake"]),
            "--tracking-uri",
            site["tracking_uri"],
            "--live",
            live_url,
            "--port",
            "0",
            "--poll-ms",
            "500",
        ],
        log_dir / "ui.log",
    )
    try:
        line = first_line(proc, "observatory: http://127.0.0.1:", log_dir / "ui.log")
        base = line.split()[1].rstrip("/")
        yield base, live_port, log_dir
    finally:
        stop_process(proc)


def test_runs_run_page_and_comparison(browser, site, ui):
    from selenium.webdriver.common.by import By

    base, _, _ = ui
    seen: list[str] = []
    d = browser
    d.get(base + "/")
    rows = d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    names = {r.get_attribute("data-run") for r in rows}
    plain, big = site["runs"]["plain"].name, site["runs"]["big"].name
    assert {plain, big, site["runs"]["live"].name, site["study"]} <= names
    plain_metrics = json.loads((site["runs"]["plain"] / "metrics.json").read_text())
    row = d.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{plain}"]')
    assert f"{plain_metrics['n_signals']:,}" in row.text and plain_metrics["config_id"] in row.text
    # sort by signals (descending on the second click), then filter
    header = next(th for th in d.find_elements(By.CSS_SELECTOR, "#runs thead th") if th.text.strip() == "signals")
    header.click()
    header.click()
    order = [r.get_attribute("data-run") for r in d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")]
    counts = {n: json.loads((site["results"] / n / "metrics.json").read_text()).get("n_signals") for n in order}
    known = [counts[n] for n in order if counts[n] is not None]
    assert known == sorted(known, reverse=True)
    box = d.find_element(By.ID, "filter")
    box.send_keys("sweep")
    visible = [
        r.get_attribute("data-run") for r in d.find_elements(By.CSS_SELECTOR, "#runs tbody tr") if r.is_displayed()
    ]
    assert visible == [site["study"]]
    box.clear()
    box.send_keys(" ")  # an input event with an empty filter: every row again
    _shot(d, "01-runs")
    _assert_local(d, base, seen)

    # a run: its figures, report.html (plotly drawn) and tearsheet
    d.find_element(By.LINK_TEXT, plain_metrics["run_id"]).click()
    _wait(d, lambda d: d.find_elements(By.ID, "report"), what="the run page")
    assert "mean return" in d.find_element(By.ID, "figures").text
    d.switch_to.frame(d.find_element(By.ID, "report"))
    _wait(d, lambda d: _plotted(d) >= 5, what="the report's figures")
    d.switch_to.default_content()
    assert d.find_element(By.ID, "tearsheet-link").get_attribute("href").endswith(f"/runs/{plain}/tearsheet.html")
    _shot(d, "02-run")
    _assert_local(d, base, seen)
    d.get(base + f"/runs/{plain}/tearsheet.html")
    _wait(d, lambda d: "Cumulative Returns" in d.page_source or "Returns" in d.title, what="the tearsheet")
    _shot(d, "03-tearsheet")
    _assert_local(d, base, seen)

    # tick two runs and compare them: equity, distributions, config diff, span warning
    d.get(base + "/")
    for name in (plain, site["study"]):
        d.find_element(By.CSS_SELECTOR, f'input.pick[value="{name}"]').click()
    button = d.find_element(By.ID, "compare")
    assert button.is_enabled() and "(2)" in button.text
    button.click()
    _wait(d, lambda d: "Run comparison" in d.page_source, what="the comparison")
    _wait(d, lambda d: _plotted(d) >= 2, what="the comparison's figures")
    page = d.page_source
    for label in ("Equity curves", "Return distributions", "Config differences", "deflated Sharpe ratio"):
        assert label in page
    warn = d.find_element(By.CSS_SELECTOR, "p.warn").text
    assert "cover different spans" in warn and "test 2024-03" in warn
    report = d.find_element(By.LINK_TEXT, "report")
    assert report.get_attribute("href") == f"{base}/runs/{plain}/report.html"
    _shot(d, "04-compare")
    _assert_local(d, base, seen)


def test_sweeps_and_lake(browser, site, ui):
    from selenium.webdriver.common.by import By

    base, _, _ = ui
    seen: list[str] = []
    d = browser
    d.get(base + "/sweeps")
    row = d.find_element(By.CSS_SELECTOR, f'#sweeps tr[data-study="{site["study"]}"]')
    sweep = json.loads((site["results"] / site["study"] / "sweep.json").read_text())
    assert f"{sweep['dsr']['dsr']:.4f}" in row.text and f"{sweep['pbo']['pbo']:.4f}" in row.text
    assert site["model_uri"] in row.text and "@live" in row.text and "gate fail" in row.text
    _shot(d, "05-sweeps")
    d.find_element(By.LINK_TEXT, site["study"]).click()
    _wait(d, lambda d: _plotted(d) >= 1, what="the trials figure")
    assert len(d.find_elements(By.CSS_SELECTOR, "#trials tbody tr")) == 4
    assert "@live" in d.find_element(By.ID, "versions").text
    _shot(d, "06-sweep")
    _assert_local(d, base, seen)
    assert any(u.endswith("/static/plotly.min.js") for u in seen)

    d.get(base + "/lake")
    group = d.find_element(By.ID, "group-binance_usdm-PLANTUSDT")
    days = {
        c.get_attribute("data-date"): c.get_attribute("data-state")
        for c in group.find_elements(By.CSS_SELECTOR, "a.day")
    }
    assert len(days) == 8 and days[ISSUE_DAY] == "issues" and days[UNCHECKED_DAY] == "unchecked"
    assert {s for k, s in days.items() if k not in (ISSUE_DAY, UNCHECKED_DAY)} == {"full"}
    assert "missing_ids: 1" in group.text and "id spaces unknown" in group.text
    # a day's cell links its row of the partition table, which shows the content hash
    group.find_element(By.CSS_SELECTOR, f'a.day[data-date="{ISSUE_DAY}"]').click()
    row = d.find_element(By.ID, f"p-binance_usdm-PLANTUSDT-{ISSUE_DAY}")
    assert "missing_ids" in row.text and len(row.find_element(By.TAG_NAME, "code").text) == 16
    assert d.find_elements(By.ID, "group-binance_usdm-BTCUSDT")
    _shot(d, "07-lake")
    _assert_local(d, base, seen)


def test_live_page_shows_signals_and_their_realised_returns(browser, site, ui):
    from selenium.webdriver.common.by import By

    base, live_port, log_dir = ui
    d = browser
    seen: list[str] = []
    replay = run = None
    try:
        # no runner yet: the panel says so and the page keeps polling
        d.get(base + "/live")
        _wait(
            d,
            lambda d: "unreachable" in d.execute_script("return document.getElementById('runner-0').textContent"),
            what="an unreachable runner",
        )
        replay = start_process(
            ["-m", "live.cli", "replay", str(BTC), "--port", "0", "--speed", "10"], log_dir / "replay.log"
        )
        ws = first_line(replay, "ws://127.0.0.1:", log_dir / "replay.log")
        journal = site["root"] / "live" / "journal.jsonl"
        run = start_process(
            [
                "-m",
                "live.cli",
                "run",
                "--config",
                str(LIVE_CONFIG),
                "--exchange",
                "binance_usdm",
                "--symbols",
                "BTCUSDT",
                "--ws-url",
                ws + "/stream",
                "--stream",
                "trade",
                "--journal",
                str(journal),
                "--http-port",
                str(live_port),
                "--quiet",
            ],
            log_dir / "run.log",
        )

        # the panel is swapped in whole on every poll: read it in one script, never through stale elements
        def newest(d):
            return d.execute_script(
                "var r = document.querySelector('#signals-0 tbody tr'); return r && r.getAttribute('data-trade-id');"
            )

        first = _wait(d, newest, 90, "a first signal")
        panel = d.execute_script("return document.getElementById('runner-0').textContent")
        assert site["live_config_id"] in panel
        assert site["runs"]["live"].name in panel  # the backtest it is scored against
        _wait(d, lambda d: (newest(d) or first) != first, 60, "a new signal")
        _shot(d, "08-live-signals")

        def realised(d):
            return d.execute_script(
                "return Array.from(document.querySelectorAll('#signals-0 tr.closed td.realised'))"
                ".map(function (c) { return c.textContent.trim(); }).filter(function (t) { return t.indexOf('%') >= 0; });"
            )

        got = _wait(d, realised, 90, "a realised return")
        paper = [json.loads(x) for x in (journal.with_suffix(".paper.jsonl")).read_text().splitlines() if x.strip()]
        shown = {f"{100 * o['net_return']:+.3f} %" for o in paper}
        assert set(got) <= shown and got
        card = d.execute_script("return document.getElementById('scorecard-0').textContent")
        bt_mean = json.loads((site["runs"]["live"] / "metrics.json").read_text())["mean_return"]
        assert f"{100 * bt_mean:+.3f} %" in card
        _shot(d, "09-live-realised")
        _assert_local(d, base, seen)
    finally:
        stop_process(run)
        stop_process(replay)
