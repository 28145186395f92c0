"""``/ui`` in a real headless browser (Debian's chromium, driven by selenium) on a real daemon.

The acceptance of the web timeline, as a person at a browser sees it: the filters change the rows
shown, an execution's page shows its before/after diff, an admin pauses and resumes from the
panel (the API then says so) while a read token is refused, and a newly posted alert appears on
an open timeline within 2 s without a reload.  The tests run in this file's order on one daemon
and one browser: the live test, which adds a decision, comes last.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.payloads import db_pool_alert
from tests.ui.browser.conftest import Seeded
from tests.ui.browser.stack import Stack, sign_in

#: Bound on a navigation (a page load, a redirect) in a browser on a loaded CI machine.
NAVIGATION = 10.0
#: The acceptance: a new alert is on the open timeline within this many seconds of its POST.
LIVE = 2.0


# The live stream replaces a row when it (re)sends its decision, which makes a selenium element of the
# old row stale: the timeline is read in one script each time, and its links clicked by a retried lookup.

def shown(driver: Any) -> list[str]:
    """The timeline's rows as their decision ids, top first."""
    ids: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#decisions tr[data-id]'), r => r.dataset.id);")
    return ids


def row_of(driver: Any, decision_id: str) -> dict[str, str]:
    """One row of the timeline: its classes and its text."""
    row: dict[str, str] = driver.execute_script(
        "var r = document.querySelector('#decisions tr[data-id=\"' + CSS.escape(arguments[0]) + '\"]');"
        "return r && {cls: r.className, text: r.innerText, reason: r.querySelector('.reason').innerText};",
        decision_id)
    return row


def click(driver: Any, css: str) -> None:
    WebDriverWait(driver, NAVIGATION, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)


def arrive(driver: Any, fragment: str) -> None:
    """Wait (bounded) until the browser is on a URL containing ``fragment``."""
    WebDriverWait(driver, NAVIGATION).until(lambda d: fragment in d.current_url)


def submit_filter(driver: Any, stack: Stack, **fields: str) -> list[str]:
    """Open the timeline afresh, fill in the filter form as a person would, submit it: the rows shown."""
    driver.get(stack.base + "/ui")
    form = driver.find_element(By.CSS_SELECTOR, "form.filters")
    for name, value in fields.items():
        element = form.find_element(By.NAME, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    arrive(driver, f"{next(iter(fields))}=")
    return shown(driver)


@pytest.fixture(scope="module")
def reader(browser: Any, stack: Stack, seeded: Seeded) -> Any:
    """The browser, signed in with a read token, on the seeded daemon."""
    sign_in(browser, stack.base, stack.read_token)
    return browser


def test_the_timeline_shows_every_decision_newest_first(reader: Any, stack: Stack, seeded: Seeded) -> None:
    reader.get(stack.base + "/ui")
    assert shown(reader) == [seeded.refused["id"], seeded.scaled["id"], seeded.pool["id"]]
    row = row_of(reader, seeded.refused["id"])
    assert "kind-not_allowed" in row["cls"].split()
    assert "Deployment/kube-public/dns" in row["text"] and "allowlist" in row["reason"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"playbook": "scale-up"}, ["scaled"]),
        ({"playbook": "grow-pool"}, ["refused", "pool"]),
        ({"decision": "not_allowed"}, ["refused"]),
        ({"decision": "executed"}, ["scaled", "pool"]),
        ({"namespace": "kube-public"}, ["refused"]),
        ({"namespace": "shop"}, ["scaled", "pool"]),
        ({"namespace": "shop", "decision": "not_allowed"}, []),
    ],
)
def test_filters_change_the_rows_shown(reader: Any, stack: Stack, seeded: Seeded, fields: dict[str, str],
                                       expected: list[str]) -> None:
    ids = [getattr(seeded, name)["id"] for name in expected]
    assert submit_filter(reader, stack, **fields) == ids
    if not ids:
        assert reader.find_element(By.ID, "empty").text == "No decisions match."


def test_the_time_filters_bound_the_rows_shown(reader: Any, stack: Stack, seeded: Seeded) -> None:
    middle = seeded.scaled["at"]  # since is inclusive, until exclusive: the middle decision splits them
    assert submit_filter(reader, stack, since=middle) == [seeded.refused["id"], seeded.scaled["id"]]
    assert submit_filter(reader, stack, until=middle) == [seeded.pool["id"]]
    assert submit_filter(reader, stack, since=seeded.pool["at"], until=seeded.refused["at"]) == [
        seeded.scaled["id"], seeded.pool["id"]]
    reader.find_element(By.LINK_TEXT, "Clear").click()
    WebDriverWait(reader, NAVIGATION).until(lambda d: len(shown(d)) == 3)


def test_an_execution_page_shows_the_before_after_diff(reader: Any, stack: Stack, seeded: Seeded) -> None:
    reader.get(stack.base + "/ui")
    click(reader, f'tr[data-id="{seeded.pool["id"]}"] a[href^="/ui/executions/"]')  # the link to its execution
    arrive(reader, f"/ui/executions/{seeded.pool['execution_id']}")
    assert seeded.pool["execution_id"] in reader.find_element(By.TAG_NAME, "h1").text
    steps = [h.text for h in reader.find_elements(By.CSS_SELECTOR, "section.step h3")]
    assert [s.split(" ok")[0] for s in steps] == ["main 0: resize_pool", "main 1: wait_healthy"]
    figure = reader.find_element(By.CSS_SELECTOR, "section.step figure.diff")
    assert figure.is_displayed()
    removed = [s.text for s in figure.find_elements(By.CSS_SELECTOR, "span.del")]
    added = [s.text for s in figure.find_elements(By.CSS_SELECTOR, "span.add")]
    assert any('"value": "20"' in line for line in removed), removed  # DB_POOL_MAX_SIZE as the cluster had it
    assert any('"value": "30"' in line for line in added), added  # and as the step left it
    assert "set DB_POOL_MAX_SIZE from 20 to 30" in reader.find_element(By.CSS_SELECTOR, "section.step").text


def click_through(driver: Any, button: str, confirm: str, done: str) -> None:
    """The panel's button, then the confirmation page's, as an operator clicks them."""
    driver.find_element(By.LINK_TEXT, button).click()
    arrive(driver, "/ui/guardrails/")
    assert driver.find_element(By.TAG_NAME, "h1").text.endswith("remediation?")
    driver.find_element(By.XPATH, f"//button[text()='{confirm}']").click()
    arrive(driver, f"done={done}")


def test_an_admin_pauses_and_resumes_from_the_panel(browser: Any, stack: Stack, seeded: Seeded) -> None:
    sign_in(browser, stack.base, stack.admin_token)
    browser.get(stack.base + "/ui/guardrails")
    assert browser.find_element(By.CSS_SELECTOR, "p.switch").text == "Running" and not stack.paused()

    click_through(browser, "Pause…", "Yes, pause", "paused")
    assert browser.find_element(By.CSS_SELECTOR, "p.switch.paused").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "p.notice").text == "Remediation paused."
    assert stack.paused()  # the kill switch itself, as the API reads it

    click_through(browser, "Resume…", "Yes, resume", "resumed")
    assert browser.find_element(By.CSS_SELECTOR, "p.switch").text == "Running"
    assert not stack.paused()


def test_a_read_token_may_not_pause(reader: Any, stack: Stack) -> None:
    sign_in(reader, stack.base, stack.read_token)
    reader.get(stack.base + "/ui/guardrails")
    assert reader.find_element(By.CSS_SELECTOR, "p.switch").text == "Running"
    assert not reader.find_elements(By.LINK_TEXT, "Pause…")  # no button
    reader.get(stack.base + "/ui/guardrails/pause")  # the confirmation page, by its address
    assert reader.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert "admin role" in reader.find_element(By.CSS_SELECTOR, "p.error").text
    # the form itself, made up in the page and posted from this origin with this session
    reader.get(stack.base + "/ui/guardrails")
    reader.execute_script(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/ui/guardrails/pause';"
        "var i = document.createElement('input'); i.name = 'csrf'; i.value = 'x'; f.appendChild(i);"
        "document.body.appendChild(f); f.submit();")
    arrive(reader, "/ui/guardrails/pause")
    assert reader.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert not stack.paused()


def test_a_new_alert_appears_on_the_open_timeline_within_2s_without_reload(
    reader: Any, stack: Stack, seeded: Seeded
) -> None:
    sign_in(reader, stack.base, stack.read_token)
    reader.get(stack.base + "/ui")
    before = shown(reader)
    reader.execute_script("document.body.dataset.loadedOnce = 'yes';")  # gone if the page reloads

    stack.post_alerts(db_pool_alert(namespace="staging", deployment="checkout"))

    def new_row(driver: Any) -> dict[str, str] | None:
        # read in one script: the stream may replace a row (same decision, re-rendered) between two reads
        top = driver.execute_script(
            "var r = document.querySelector('#decisions tr[data-id]');"
            "return r && {id: r.dataset.id, cls: r.className, text: r.innerText};")
        return top if top and top["id"] not in before else None

    row = WebDriverWait(reader, LIVE, poll_frequency=0.05).until(new_row)
    assert "Deployment/staging/checkout" in row["text"] and "kind-not_allowed" in row["cls"].split()
    assert "fresh" in row["cls"].split()  # put there by the live stream's script
    assert reader.execute_script("return document.body.dataset.loadedOnce;") == "yes"  # no reload
    assert shown(reader)[1:] == before
    [latest] = stack.decisions(limit="1")
    assert row["id"] == latest["id"]
