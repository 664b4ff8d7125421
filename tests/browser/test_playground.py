"""The local playground in a real browser: Debian's Chromium, headless, through Selenium.

The server is the real one, started as `make run` starts it (`python -m bot serve`,
no Slack settings, the examples loaded through the command line) in a folder of its
own. Chromium drives the page as a person would: David (no role) is refused,
Alice confirms the spring sale (`/confirm-send`, Confirm send, OK) and the Deployment
message reaches *finished*; a link of a message in the outbox is clicked and
**Compute stats** shows the click; the weekly digest's occurrence, with a quorum of
2, is approved by Alice and then Bruno and sent; an hour later the KPI digest and its
chart are in #kpi. Every wait is on a condition of the page.

The screenshot README shows is taken here: `GREENLIGHT_SCREENSHOT=docs/playground.png`
writes it there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import ROOT, load_examples, serving

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
WAIT = 45.0

if not (CHROMIUM.exists() and DRIVER.exists()):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium and chromium-driver (see .ci/run)")
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: an optional tool)
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ALICE, BRUNO, DAVID = "U0PGALICE", "U0PGBRUNO", "U0PGDAVID"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`make run`'s server on a free port, the examples loaded, no Slack settings."""
    load_examples(tmp_path)
    with serving(tmp_path) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for Chromium's
        "--disable-dev-shm-usage",
        "--window-size=1440,1000",
        "--lang=en-GB",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.save_screenshot("/tmp/playground-last.png")
        for entry in driver.get_log("browser"):  # the page's errors, if a step failed
            print("browser:", entry.get("level"), entry.get("message"))
        driver.quit()


class Page:
    """The playground as a person uses it."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url
        self.wait = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException])

    def open(self) -> None:
        self.driver.get(f"{self.url}/playground")
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#channels a"))

    def act_as(self, user: str) -> None:
        Select(self.driver.find_element(By.ID, "user")).select_by_value(user)

    def channel(self, name: str) -> None:
        self.wait.until(
            lambda d: d.find_elements(By.XPATH, f"//ul[@id='channels']//a[.='# {name}']")
        )[0].click()

    def type(self, line: str) -> None:
        box = self.driver.find_element(By.ID, "compose")
        box.send_keys(line)
        box.send_keys(Keys.ENTER)

    def message(self, *texts: str) -> WebElement:
        """The latest message of the channel that holds every one of `texts`."""

        def found(driver: WebDriver) -> WebElement | bool:
            for message in reversed(driver.find_elements(By.CSS_SELECTOR, "#messages .msg")):
                shown = message.text
                if all(t in shown for t in texts):
                    return message
            return False

        try:
            element: WebElement = self.wait.until(found)
        except TimeoutException:
            shown = self.driver.find_element(By.ID, "messages").text
            raise AssertionError(f"no message with {texts} in:\n{shown}") from None
        return element

    def home(self, *texts: str) -> WebElement:
        """The app's Home tab, once it shows every one of `texts`."""
        self.driver.find_element(By.ID, "show-home").click()
        home: WebElement = self.wait.until(
            lambda d: (
                (tab := d.find_element(By.ID, "home")) and all(t in tab.text for t in texts) and tab
            )
        )
        return home

    def click(self, message: WebElement, label: str) -> None:
        message.find_element(By.XPATH, f".//button[normalize-space()='{label}']").click()

    def ok(self) -> None:
        """The confirm dialog's OK (Slack sends the action only then)."""
        dialog = self.wait.until(lambda d: d.find_element(By.ID, "confirm"))
        self.wait.until(lambda d: dialog.is_displayed())
        self.driver.find_element(By.ID, "confirm-ok").click()
        self.wait.until(lambda d: not dialog.is_displayed())

    def step(self, step: str) -> None:
        before = self.driver.find_element(By.ID, "clock").text
        self.driver.find_element(By.CSS_SELECTOR, f"button[data-step='{step}']").click()
        self.wait.until(
            lambda d: (
                "due work ran" in d.find_element(By.ID, "status").text
                or (step != "now" and d.find_element(By.ID, "clock").text != before)
            )
        )


def field(message: WebElement, label: str) -> str:
    match = re.search(rf"{re.escape(label)}\n([^\n]+)", message.text)
    assert match, message.text
    return match.group(1)


def test_the_whole_flow_in_the_playground(server: str, browser: WebDriver) -> None:
    page = Page(browser, server)
    page.open()
    assert "on this machine only" in browser.find_element(By.ID, "safety").text
    page.channel("C0123456789")

    # A person with no role is refused, and told what to ask for.
    page.act_as(DAVID)
    page.type("/confirm-send spring-sale")
    page.message("do not allow you", "start-deliveries")

    # Alice: the card, Confirm send, OK; the Deployment message follows to finished.
    page.act_as(ALICE)
    page.type("/confirm-send")  # no ref: the picker of ready deliveries, a static select
    picker = page.message("ready to confirm", "Pick one to see its card")
    Select(picker.find_element(By.CSS_SELECTOR, "select")).select_by_value("spring-sale")
    card = page.message("Spring sale (spring-sale)", "To deliver", "293")
    page.click(card, "Confirm send")
    page.ok()
    page.message("confirmed", "spring-sale", "sending now")
    deployment = page.message("Deployment — Spring sale", "finished")
    assert field(deployment, "Sent") == "293"
    screenshot = os.environ.get("GREENLIGHT_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(str(ROOT / screenshot))

    # A proof to Alice's own address (users.info), marked, and nothing counted.
    page.type("/campaign proof spring-sale")
    page.message("proof", "alice@playground.example")

    # The outbox: a message's HTML in its sandboxed frame; its link is followed.
    browser.find_element(By.ID, "show-outbox").click()
    letters = page.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#letters li"))
    assert letters[0].text.startswith("[Proof] "), letters[0].text  # the newest
    sent = next(li for li in letters if not li.text.startswith("[Proof]"))
    sent.click()
    page.wait.until(lambda d: "List-Unsubscribe" in d.find_element(By.ID, "letter").text)
    frame = page.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#letter iframe"))
    assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    browser.switch_to.frame(frame)
    link = page.wait.until(lambda d: d.find_element(By.LINK_TEXT, "See the sale"))
    assert "/t/c/" in (link.get_attribute("href") or "")
    main = browser.current_window_handle
    link.click()
    browser.switch_to.default_content()
    page.wait.until(lambda d: len(d.window_handles) > 1)
    for tab in browser.window_handles:  # the tracking redirect's tab, closed
        if tab != main:
            browser.switch_to.window(tab)
            # Redirected by the tracking link (to a shop this machine cannot reach).
            page.wait.until(
                lambda d: (
                    "shop.example.com"
                    in d.execute_script(
                        "return location.href + ' ' + document.documentElement.innerHTML"
                    )
                )
            )
            browser.close()
    browser.switch_to.window(main)

    # Compute stats: the open (the frame loaded the pixel) and the click count.
    page.channel("C0123456789")
    deployment = page.message("Deployment — Spring sale", "finished")
    assert field(deployment, "Click-through rate") == "0 %"
    page.click(deployment, "Compute stats")
    page.wait.until(
        lambda d: field(page.message("Deployment — Spring sale"), "Click-through rate") != "0 %"
    )
    assert field(page.message("Deployment — Spring sale"), "Open rate") != "0 %"

    # A recurring delivery with a quorum of 2: prepared, confirmed, its occurrence
    # approved by two people, then sent.
    page.type("/campaign prepare weekly-digest")
    page.message("weekly-digest", "prepared")
    page.type("/confirm-send weekly-digest")
    card = page.message("Weekly digest (weekly-digest)", "recurring")
    page.click(card, "Confirm send")
    page.ok()
    page.message("each occurrence waits for approval")
    page.step("occurrence")
    request = page.message("Approval — Weekly digest")
    page.click(request, "Confirm send")
    page.ok()
    page.message("Approval — Weekly digest", "1 of 2 approvals")
    # Bruno approves from the app's Home tab, which lists what waits for him.
    page.act_as(BRUNO)
    home = page.home("Approval requests waiting", "Weekly digest")
    home.find_element(By.XPATH, ".//button[normalize-space()='Confirm send']").click()
    page.ok()
    page.channel("C0123456789")
    page.message("Approved by", "Sending")
    page.message("Deployment — Weekly digest", "finished")

    # An hour on: the KPI digest and its chart in #kpi.
    page.step("hour")
    page.channel("kpi")
    digest = page.message("KPI digest —", "Weekly digest", "weekly-digest")
    assert "To deliver 293 · Sent 293" in digest.text
    shared = page.message("KPI digest,", "KPIs over time")
    chart = page.wait.until(lambda d: shared.find_element(By.CSS_SELECTOR, "img.file"))
    page.wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", chart) > 100)
