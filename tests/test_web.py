"""The operator's page and /metrics as the operator and the attacker meet them: a guard in the
lab in front of its Kamailio, `fastban web` beside it, Debian's Chromium driven by selenium,
real attacks from the lab's hosts, and Debian's Prometheus scraping /metrics.

The page runs in the host's network namespace on loopback (where the browser is); a second
`fastban web` serves HTTPS on the server's lab address, for the attacker's wrong logins.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import kernel_holds, require_tool, wait_for
from fastban.lab.guard_process import GuardProcess
from fastban.lab.siplab import SipLab
from fastban.lab.web_process import WebProcess, free_port

PASSWORD = "correct horse battery staple"
MAXRETRY = 5
COMMENT = "# written by the test: the page keeps this line"


@pytest.fixture(scope="module")
def lab(kernel):
    for tool in ("kamailio", "sipp", "chromium", "chromedriver", "openssl"):
        require_tool(tool)
    with SipLab(attackers=3) as lab:
        yield lab


@pytest.fixture(scope="module")
def guard(lab, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("web")
    guard = GuardProcess(lab.server_namespace, lab.server_iface, workdir, maxretry=MAXRETRY,
                         bantime=600, web_password_file=str(workdir / "web-password"))
    guard.config.write_text(f"{COMMENT}\n{guard.config.read_text()}")
    guard.start()
    try:
        yield guard
    finally:
        guard.detach()


@pytest.fixture(scope="module")
def web(guard):
    web = WebProcess(guard, f"127.0.0.1:{free_port()}")
    web.set_password(PASSWORD)
    web.start()
    try:
        yield web
    finally:
        web.stop()


@pytest.fixture(scope="module")
def browser(web, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()



def log_in(browser, web, password):
    from selenium.webdriver.common.by import By

    browser.get(web.url + "/login")
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login").click()


def row(browser, target) -> list[str] | None:
    """The texts of the target's row in the list, or None. Read in one script: the page
    rebuilds the list every 2 s, so an element found before may be gone a moment later."""
    return browser.execute_script(
        "const row = [...document.querySelectorAll('#bans tr')]"
        "  .find(r => r.dataset.target === arguments[0]);"
        "return row ? [...row.cells].map(cell => cell.innerText.trim()) : null;", target)


def click_unblock(browser, target) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            browser.find_element(By.CSS_SELECTOR, f'#bans tr[data-target="{target}"] '
                                 "button.unblock").click()
            return
        except StaleElementReferenceException:      # the list was rebuilt meanwhile
            time.sleep(0.05)
    raise AssertionError(f"the unblock button of {target} stayed out of reach")



def test_a_wrong_password_is_refused_and_the_right_one_logs_in(web, browser):
    from selenium.webdriver.common.by import By

    log_in(browser, web, "not the password")
    wait_for(lambda: browser.find_elements(By.ID, "login-error") and
             browser.find_element(By.ID, "login-error").text == "Wrong password.",
             what="the wrong password's answer")
    assert browser.current_url.endswith("/login")
    assert browser.get_cookie("fastban_session") is None
    browser.get(web.url + "/")
    assert browser.current_url.endswith("/login")           # no page without a login

    log_in(browser, web, PASSWORD)
    wait_for(lambda: browser.current_url == web.url + "/", what="the login")
    wait_for(lambda: browser.find_element(By.ID, "maxretry").get_attribute("value") == "5",
             what="the settings form")
    cookie = browser.get_cookie("fastban_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"


def test_the_attackers_ban_appears_and_unblock_lifts_it_in_the_kernel(lab, guard, web, browser):
    attacker = lab.attacker_address(0)
    lab.start_attacker(index=0, guesses=20, rate=20).wait()
    cells = wait_for(lambda: row(browser, f"{attacker}/32"), what="the attacker's row")
    assert cells[4] == str(MAXRETRY)                                     # failures
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in cells[5]
    assert cells[5].endswith("proven") and cells[6] == "sip"             # class, origin
    assert int(cells[3]) > 0                                             # dropped
    first = cells[2]                                                     # time left
    wait_for(lambda: row(browser, f"{attacker}/32")[2] != first, what="the countdown")
    assert kernel_holds(lab, attacker)

    click_unblock(browser, f"{attacker}/32")
    alert = browser.switch_to.alert
    assert alert.text == f"Unblock {attacker}/32?"
    alert.accept()
    wait_for(lambda: row(browser, f"{attacker}/32") is None, what="the row's removal")
    assert not kernel_holds(lab, attacker)
    assert f"{attacker}/32" not in {r["target"] for r in guard.json("list")["bans"]}


def save_settings(browser, **fields):
    from selenium.webdriver.common.by import By

    for name, value in fields.items():
        box = browser.find_element(By.ID, name)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "save").click()


def test_a_bad_setting_shows_beside_its_field_and_a_good_one_applies_live(lab, guard, web,
                                                                          browser):
    from selenium.webdriver.common.by import By

    before = guard.config.read_bytes()
    try:
        save_settings(browser, maxretry="ten", findtime="-3")
        error = wait_for(lambda: browser.find_element(By.ID, "maxretry-error").text,
                         what="the error beside attempts")
        assert "whole number" in error and '"ten"' in error
        assert "whole number" in browser.find_element(By.ID, "findtime-error").text
        assert browser.find_element(By.ID, "bantime-error").text == ""
        assert guard.config.read_bytes() == before

        save_settings(browser, maxretry="7", findtime="600")
        wait_for(lambda: browser.find_element(By.ID, "settings-saved").text ==
                 "Saved and applied.", what="the save")
        after = guard.config.read_text()
        assert "maxretry = 7\n" in after and after.startswith(COMMENT + "\n")
        assert browser.find_element(By.ID, "maxretry-error").text == ""
        wait_for(lambda: "settings reloaded" in guard.log(), what="the reload")

        attacker = lab.attacker_address(1)
        lab.start_attacker(index=1, guesses=20, rate=20).wait()
        cells = wait_for(lambda: row(browser, f"{attacker}/32"), what="the attacker's row")
        assert cells[4] == "7"
        assert lab.server_auth_failures_to(attacker) == 7

        save_settings(browser, maxretry=str(MAXRETRY))
        wait_for(lambda: f"maxretry = {MAXRETRY}\n" in guard.config.read_text(),
                 what="the reset")
    finally:
        if f"maxretry = {MAXRETRY}\n" not in guard.config.read_text():
            guard.restore_settings(before)      # the later tests count to MAXRETRY


def _session_cookie(browser):
    return f"fastban_session={browser.get_cookie('fastban_session')['value']}"


def _post(url, body, headers):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_post_without_the_csrf_token_is_refused(lab, guard, web, browser):
    from selenium.webdriver.common.by import By

    target = "203.0.113.77"
    guard.cli("ban", target)
    wait_for(lambda: row(browser, f"{target}/32"), what="the hand ban's row")
    script = """
        const done = arguments[arguments.length - 1];
        fetch('/api/unban', {method: 'POST', headers: {'Content-Type': 'application/json',
              ...arguments[0]}, body: JSON.stringify({target: '203.0.113.77'})})
          .then(r => done(r.status));"""
    assert browser.execute_async_script(script, {}) == 403
    assert browser.execute_async_script(script, {"X-CSRF-Token": "forged"}) == 403
    token = browser.find_element(By.CSS_SELECTOR, 'meta[name="csrf-token"]') \
        .get_attribute("content")
    cookie = _session_cookie(browser)
    # the right token and cookie from another site's page: refused on its Origin
    assert _post(web.url + "/api/unban", {"target": target},
                 {"Cookie": cookie, "X-CSRF-Token": token,
                  "Origin": "http://attacker.example"}) == 403
    assert _post(web.url + "/api/unban", {"target": target}, {"Cookie": cookie}) == 403
    assert kernel_holds(lab, target)
    assert "without its CSRF token: refused" in web.log()
    # with it, the same request works
    assert browser.execute_async_script(script, {"X-CSRF-Token": token}) == 200
    assert not kernel_holds(lab, target)


def test_a_request_for_another_host_name_is_refused(web):
    """DNS rebinding: a foreign page whose name now resolves to 127.0.0.1 sends its own name."""
    port = web.url.rsplit(":", 1)[1]
    for host, expected in ((f"attacker.example:{port}", 421), (f"localhost:{port}", 200),
                           (f"127.0.0.1:{port}", 200)):
        request = urllib.request.Request(web.url + "/login", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status == expected, host


def test_markup_in_a_reason_shows_as_text(lab, web, browser):
    from selenium.webdriver.common.by import By

    label = "<img src=x onerror=\"document.title='owned'\"><b>bold</b> & <script>x()</script>"
    title = browser.title
    browser.find_element(By.ID, "ban-target").send_keys("203.0.113.66")
    browser.find_element(By.ID, "ban-reason").send_keys(label)
    browser.find_element(By.ID, "ban-submit").click()
    cells = wait_for(lambda: row(browser, "203.0.113.66/32"), what="the hand ban's row")
    assert cells[5] == f"banned by hand: {label}" and cells[6] == "hand"
    elements = browser.execute_script(
        "const row = [...document.querySelectorAll('#bans tr')]"
        "  .find(r => r.dataset.target === '203.0.113.66/32');"
        "return row.querySelector('td.reason').querySelectorAll('img, b, script').length;")
    assert elements == 0                # no <img>, <b> or <script> was made of the label
    time.sleep(0.5)
    assert browser.title == title
    assert kernel_holds(lab, "203.0.113.66")


LOGIN_SCRIPT = r"""
import http.cookiejar, re, ssl, sys, urllib.parse, urllib.request
url, password, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context(cafile=sys.argv[4])
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                     urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
for _ in range(tries):
    try:
        page = opener.open(url + "/login", timeout=5).read().decode()
    except OSError as error:
        print("unreachable", error); continue
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": token, "password": password}).encode()
    try:
        opener.open(url + "/login", data=form, timeout=5)
        print("200")
    except urllib.error.HTTPError as error:
        print(error.code)
    except OSError as error:
        print("unreachable", error)
"""


def make_certificate(folder: Path, address: str) -> tuple[Path, Path]:
    cert, key = folder / "web.pem", folder / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    f"/CN={address}", "-addext", f"subjectAltName=IP:{address}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_wrong_logins_from_a_lab_host_are_banned_in_xdp(lab, guard, web, tmp_path):
    server = lab.server_address()
    listen = f"{server}:8443"
    refused = subprocess.run(lab.server_namespace.nsenter(
        [sys.executable, "-m", "fastban", "web", "--config", str(guard.config),
         "--listen", listen]), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "is not a loopback address: set web_tls_cert, web_tls_key" in refused.stderr

    cert, key = make_certificate(tmp_path, server)
    edge = WebProcess(guard, listen, "--tls-cert", str(cert), "--tls-key", str(key),
                      namespace=lab.server_namespace, name="web-tls")
    edge.start()
    try:
        attacker = lab.attacker_address(2)
        attempt = lab._attackers[2].run(
            [sys.executable, "-c", LOGIN_SCRIPT, edge.url, "guess", str(MAXRETRY + 2),
             str(cert)], timeout=120)
        answers = attempt.stdout.split("\n")
        # maxretry wrong passwords refused; then the address is banned: its packets are
        # dropped in XDP and it cannot reach the page at all
        assert answers[:MAXRETRY] == ["401"] * MAXRETRY, attempt.stdout
        assert all(a.startswith("unreachable") for a in answers[MAXRETRY:MAXRETRY + 2]), \
            attempt.stdout
        ban = {r["target"]: r for r in guard.json("list")["bans"]}[f"{attacker}/32"]
        assert ban["origin"] == "web login" and ban["failure_class"] == "proven"
        assert f"{MAXRETRY}×wrong web page password" in ban["reason"]
        assert ban["packets_dropped"] > 0 and kernel_holds(lab, attacker)
        assert f"wrong web password from {attacker}" in edge.log()
    finally:
        edge.stop()


def test_at_a_glance_shows_the_counters_and_the_last_hour(guard, web, browser):
    """The chart's totals over the hour (a sample every 10 s since the guard started, before
    any attack) come to the guard's own totals."""
    stats = guard.json("stats")

    def glance():
        """What the chart and the counters show, read in one script (the page redraws both
        every 2 s)."""
        return browser.execute_script("""
            const labels = [...document.querySelectorAll('#chart text')].map(t => t.textContent);
            const lines = [...document.querySelectorAll('#chart polyline')].map(
                line => [line.dataset.series, line.getAttribute('points').split(' ').length]);
            const shown = Object.fromEntries([...document.querySelectorAll('#stats tr')].map(
                row => [row.dataset.stat, row.cells[1].textContent]));
            return {labels, lines, shown};""")

    def chart_totals(labels):
        return {label.split(":")[0]: int(label.split(":")[1].split()[0]) for label in labels}

    def once_the_bans_are_in():
        shown = glance()
        return shown if chart_totals(shown["labels"]).get("bans") == stats["bans_total"] else None
    seen = wait_for(once_the_bans_are_in, timeout=30,
                    what="the chart's bans reaching the guard's total")
    totals = chart_totals(seen["labels"])
    assert totals["failures"] == stats["failures_counted"] >= 2 * MAXRETRY + 2
    assert totals["dropped packets"] > 0
    assert [series for series, _ in seen["lines"]] == ["failures", "bans", "dropped packets"]
    assert all(points >= 2 for _, points in seen["lines"])
    assert seen["shown"]["bans_active"] == str(guard.json("stats")["bans_active"])
    screenshot = os.environ.get("FASTBAN_SCREENSHOT")     # the README's picture
    if screenshot:
        browser.save_screenshot(screenshot)


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: fastban
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"""


def query(prometheus_url, expression):
    url = f"{prometheus_url}/api/v1/query?query={urllib.parse.quote(expression)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def test_prometheus_scrapes_the_guards_metrics(guard, web, tmp_path):
    require_tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.replace("{target}", web.url.removeprefix("http://")))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return [value for labels, value in query(url, 'up{job="fastban"}')] == [1.0]
            except OSError:
                return False
        wait_for(up, timeout=60, what="Prometheus's first good scrape")
        active = guard.json("stats")["bans_active"]
        assert active >= 2                       # the earlier tests' attackers
        wait_for(lambda: [v for _, v in query(url, "fastban_bans_active")] == [active],
                 timeout=10, what="fastban_bans_active == the guard's count")
        origins = {labels["origin"]: value for labels, value in
                   query(url, "fastban_bans_total")}
        assert origins["sip"] >= 1 and origins["web login"] >= 1 and origins["hand"] >= 2
        assert query(url, "fastban_ban_latency_seconds_count")[0][1] >= 1
    finally:
        prometheus.terminate()
        prometheus.wait(10)


def test_metrics_are_named_as_prometheus_asks(web):
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(web.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    kinds = {family.name: family.type for family in text_string_to_metric_families(text)}
    for name in ("fastban_packets_seen", "fastban_packets_passed", "fastban_packets_dropped",
                 "fastban_packets_captured", "fastban_responses_parsed", "fastban_failures",
                 "fastban_bans", "fastban_unbans", "fastban_events_lost"):
        assert kinds[name] == "counter", name
        assert f"\n{name}_total" in text
    for name in ("fastban_bans_active", "fastban_challenges_open", "fastban_trusted_addresses",
                 "fastban_up"):
        assert kinds[name] == "gauge", name
    assert kinds["fastban_ban_latency_seconds"] == "histogram"
    assert 'fastban_failures_total{class="proven"}' in text
    assert "fastban_up 1.0" in text


def test_metrics_behind_the_login_ask_for_the_pages_password(guard, web):
    """metrics_auth (or a listener off loopback): HTTP basic auth with the page's password,
    which Prometheus can send; a wrong one counts as a wrong login."""
    import asyncio

    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from fastban.web import passwords
    from fastban.web.app import Page, make_app
    from fastban.web.guard_link import GuardLink

    stored = passwords.read_hash(str(guard.workdir / "web-password"))
    counted = guard.json("stats")["failures_web_login"]

    async def scenario():
        page = Page(GuardLink(guard.socket), stored, secure=False)
        server = TestServer(make_app(page, with_page=False), host="127.0.0.1")
        await server.start_server()
        answers = {}
        try:
            async with ClientSession() as client:
                url = server.make_url("/metrics")
                for name, password in (("none", None), ("wrong", "guess"), ("right", PASSWORD),
                                       ("again", PASSWORD)):
                    headers = {} if password is None else {"Authorization": "Basic " + base64.
                               b64encode(f"prometheus:{password}".encode()).decode()}
                    async with client.get(url, headers=headers) as response:
                        answers[name] = (response.status, response.headers.get(
                            "WWW-Authenticate"), await response.text())
                async with client.get(server.make_url("/")) as response:
                    answers["page"] = response.status
        finally:
            await server.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers["none"][:2] == (401, 'Basic realm="fastban"')
    assert answers["wrong"][0] == 401
    assert answers["right"][0] == answers["again"][0] == 200
    assert "fastban_up 1.0" in answers["right"][2]
    assert answers["page"] == 404                     # a metrics listener serves nothing else
    assert guard.json("stats")["failures_web_login"] == counted + 1


def test_a_banned_address_cannot_log_in_even_with_the_password(guard, web):
    """The XDP ban stops a banned host on the guarded interface; the page itself refuses it
    too (a loopback client, which no XDP program sees)."""
    import asyncio
    import re

    from aiohttp import ClientSession, CookieJar
    from aiohttp.test_utils import TestServer

    from fastban.web import passwords
    from fastban.web.app import Page, make_app
    from fastban.web.guard_link import GuardLink

    stored = passwords.read_hash(str(guard.workdir / "web-password"))

    async def log_in():
        server = TestServer(make_app(Page(GuardLink(guard.socket), stored, secure=False)),
                            host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as client:  # an IP host
                async with client.get(server.make_url("/login")) as response:
                    token = re.search(r'name="csrf" value="([^"]+)"', await response.text())[1]
                async with client.post(server.make_url("/login"), allow_redirects=False,
                                       data={"csrf": token, "password": PASSWORD}) as response:
                    return response.status, await response.text()
        finally:
            await server.close()

    guard.cli("ban", "127.0.0.1")
    try:
        status, text = asyncio.run(log_in())
        assert status == 403 and "This address is blocked." in text
    finally:
        guard.cli("unban", "127.0.0.1")
    assert asyncio.run(log_in())[0] == 303            # unbanned: the password opens the page
