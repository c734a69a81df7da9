"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by Selenium)
watches the inbox while ``sockhop send`` and swaks deliver, without a reload; opens the HTML mail and finds its
script did not run; downloads the attachment; deletes the message. Screenshots go to build/artifacts/.

One browser and one server for the module. Chromium is told to resolve no name but loopback's and to fetch
nothing in the background, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support import ROOT, cannot_run, require_tool

ARTIFACTS = ROOT / "build" / "artifacts"
WAIT = 10.0

HTML = """<p id="said">what the sender wrote</p>
<script>document.getElementById("said").textContent = "the script ran"; parent.document.title = "pwned";</script>
<img src="x" onerror="parent.document.title = 'pwned'">"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_tool("chromium")
    driver_path = require_tool("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        cannot_run("selenium is not installed (make test installs it)")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--no-default-browser-check", "--window-size=1280,900",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers on the network
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"waited {timeout:g}s for {what}")


def subjects(driver) -> list[str]:
    """The list as shown, read in one go (the page rebuilds it whenever mail arrives)."""
    script = "return [...document.querySelectorAll('#messages li .subject')].map(e => e.textContent)"
    return driver.execute_script(script)


def click_first_message(driver) -> bool:
    """Click the newest message; False if the list was rebuilt under the click (then try again)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        driver.find_elements(By.CSS_SELECTOR, "#messages li")[0].click()
    except StaleElementReferenceException:
        return False
    return True


def test_the_inbox_lives_in_a_browser(browser, served):
    from selenium.webdriver.common.by import By

    server, root = served
    host, port = server.address("dashboard")
    mail_host, mail_port = server.address("mail")
    browser.get(f"http://{host}:{port}/#inbox")
    wait_for(lambda: browser.find_element(By.ID, "live").text == "live", "the event stream to open")
    browser.execute_script("window.sameDocument = true")  # gone if the page reloads

    sent = subprocess.run(
        [sys.executable, "-m", "sockhop", "send", "--server", f"{mail_host}:{mail_port}", "--from", "me@sockhop.test",
         "--to", "you@sockhop.test", "--subject", "sent with sockhop send", "--body", "plain words"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: "sent with sockhop send" in subjects(browser), "the message from sockhop send to appear")

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "swaks@sockhop.test", "you@sockhop.test", "sent with swaks"
    message.set_content("see the HTML")
    message.add_alternative(HTML, subtype="html")
    message.add_attachment(b"the attached report\n", maintype="text", subtype="plain", filename="report.txt")
    raw = root / "swaks.eml"
    raw.write_bytes(bytes(message))
    swaks = subprocess.run(
        [require_tool("swaks"), "--server", mail_host, "--port", str(mail_port), "--from", "swaks@sockhop.test",
         "--to", "you@sockhop.test", "--data", str(raw), "--helo", "swaks.test"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert swaks.returncode == 0, swaks.stdout + swaks.stderr
    wait_for(lambda: subjects(browser)[:1] == ["sent with swaks"], "the message from swaks to appear, newest first")
    assert browser.execute_script("return window.sameDocument") is True  # no reload
    browser.save_screenshot(str(ARTIFACTS / "dashboard-inbox.png"))

    wait_for(lambda: click_first_message(browser), "a click on the newest message")
    wait_for(lambda: browser.find_element(By.ID, "m-subject").text == "sent with swaks", "the message to open")
    frame = browser.find_element(By.ID, "html-frame")
    wait_for(lambda: frame.is_displayed(), "the HTML tab")
    assert frame.get_attribute("sandbox") == ""  # sandboxed, nothing allowed
    browser.switch_to.frame(frame)
    said = wait_for(lambda: browser.find_elements(By.TAG_NAME, "p"), "the HTML view to load")  # nh3 drops its id
    assert said[0].text == "what the sender wrote"
    assert browser.find_elements(By.TAG_NAME, "script") == []
    browser.switch_to.default_content()
    assert browser.title == "sockhop"  # neither the script nor the onerror handler ran
    browser.save_screenshot(str(ARTIFACTS / "dashboard-message.png"))

    link = browser.find_element(By.CSS_SELECTOR, "#attachments a")
    assert link.text.startswith("report.txt")
    link.click()
    downloaded = browser.downloads / "report.txt"
    wait_for(downloaded.exists, "the attachment to download")
    assert downloaded.read_bytes() == b"the attached report\n"

    browser.find_element(By.ID, "delete-one").click()
    wait_for(lambda: "sent with swaks" not in subjects(browser), "the message to leave the list")
    with urllib.request.urlopen(f"http://{host}:{port}/api/v1/messages") as answer:
        left = json.load(answer)["messages"]
    assert [m["Subject"] for m in left] == ["sent with sockhop send"]
    browser.save_screenshot(str(ARTIFACTS / "dashboard-deleted.png"))

    browser.get(f"http://{host}:{port}/#services")
    wait_for(lambda: "mail" in browser.find_element(By.ID, "services").text, "the services table")
    wait_for(lambda: "to=<you@sockhop.test>" in browser.find_element(By.ID, "tail").text, "the activity tail")
    assert Path(ARTIFACTS / "dashboard-inbox.png").stat().st_size > 0
    browser.save_screenshot(str(ARTIFACTS / "dashboard-services.png"))
