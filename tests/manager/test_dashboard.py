"""The dashboard in real headless Chromium: VM table, load plots, drain with confirmation."""

from __future__ import annotations

import os
import shutil

import pytest

from vmagent.manager.testing import heartbeat, new_vm

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="pip install selenium for the dashboard test"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium with a fresh profile; nothing downloaded."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options
    )
    yield driver
    driver.quit()


def test_dashboard_shows_vms_plots_load_and_drains(start, browser, tmp_path):
    """Registered VMs appear; load plots render; Drain (confirmed) reaches the VM's next heartbeat answer."""
    manager = start("sqlite", tls=False)
    vms = [
        new_vm(manager, cores=4, image="el9-dash", running_pod="pod-dash", ce="cloud-a")
        for _ in range(3)
    ]
    target = vms[1]
    for seq, load in enumerate([0.5, 1.5, 3.0, 2.0], start=1):
        target["client"].heartbeat(
            target["vm_id"], heartbeat(target["instance_id"], seq, load=[load, 1, 1])
        )
    wait = WebDriverWait(browser, 20)

    browser.get(f"{manager.url}/dashboard/#token={manager.admin_token}")
    for vm in vms:
        wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-vm-id='{vm['vm_id']}']"))
        )
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-vm-id='{target['vm_id']}']")
    assert (
        "running" in row.text
        and "el9-dash" in row.text
        and "cloud-a" in row.text
        and "2.00" in row.text
    )
    assert "#token" not in browser.current_url
    fleet_line = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#fleet-load path.line"))
    )
    assert fleet_line.get_attribute("d").startswith("M")

    row.click()
    vm_line = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#vm-load path.line")))
    assert int(vm_line.get_attribute("data-points")) == 4

    row.find_element(By.CSS_SELECTOR, "button[data-action='drain']").click()
    alert = wait.until(ec.alert_is_present())
    assert target["vm_id"] in alert.text
    alert.accept()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "Queued drain"))
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    shutil.copy(
        tmp_path / "dashboard.png", os.environ.get("VMAGENT_SCREENSHOT", str(tmp_path / "copy.png"))
    )

    answer = target["client"].heartbeat(target["vm_id"], heartbeat(target["instance_id"], 5))
    assert [i["action"] for i in answer["instructions"]] == ["drain"]
    assert manager.client().vm(target["vm_id"])["state"] == "draining"


def test_dismissed_confirmation_queues_nothing(start, browser):
    """Cancelling the Halt confirmation leaves the VM without instructions."""
    manager = start("sqlite", tls=False)
    vm = new_vm(manager)
    browser.get(f"{manager.url}/dashboard/#token={manager.admin_token}")
    wait = WebDriverWait(browser, 20)
    row = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-vm-id='{vm['vm_id']}']"))
    )
    row.find_element(By.CSS_SELECTOR, "button[data-action='halt']").click()
    wait.until(ec.alert_is_present()).dismiss()
    assert (
        vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))["instructions"] == []
    )
