"""The console and the API documentation as an operator sees them: a real headless Chromium
(Debian's chromium and chromium-driver, driven by Selenium) against a 3-node cluster of real
processes.

The browser is told that no host name resolves but the node's (`--host-resolver-rules`), so a
page that reached for a CDN would show a failed request; every resource the page loaded is read
back from the Performance API and must be this node's, answered 200, and the browser's log must
hold no error. Then a node is killed and the console must show it down within a bound.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from tests.tools import require

from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(180)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
require(CHROMIUM and CHROMEDRIVER, "chromium and chromium-driver", module=True)

# A node killed with SIGKILL answers no NodeInfo at once: status marks it down on the next poll.
DOWN_SHOWN_WITHIN_S = 10.0
PAGE_LOAD_S = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("console"), nodes=3, partitions=256, gossip_interval_ms=200,
                     replica_timeout_ms=500)
    c.start()
    yield c
    c.stop()


ADMIN_PASSWORD = "console-admin-secret"


@pytest.fixture(scope="module")
def secured_node(tmp_path_factory):
    """A node of one whose users need a password (admin_password_file: `default` is off)."""
    root = tmp_path_factory.mktemp("console-auth")
    password = root / "admin.password"
    password.write_text(ADMIN_PASSWORD + "\n")
    password.chmod(0o600)
    node = NodeProcess(root / "n1", admin_password_file=str(password)).start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                # Only loopback resolves: a request to any other host fails, and shows.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_LOAD_S)
    yield driver
    driver.quit()


def _resources(driver) -> list[dict]:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))"
        ".map(e => ({name: e.name, status: e.responseStatus, type: e.initiatorType}))")


def _assert_all_loaded_from(driver, origin: str) -> list[dict]:
    """Every request the page made went to `origin` and was answered 200 (or 304); the browser
    logged no error (a failed load, a refused script, a CSP violation)."""
    entries = _resources(driver)
    assert entries, "the Performance API saw no request"
    for e in entries:
        parts = urlsplit(e["name"])
        assert f"{parts.scheme}://{parts.netloc}" == origin, f"a request left the node: {e}"
        assert e["status"] in (200, 304), f"request failed: {e}"
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    return entries


def _rows(driver) -> dict[str, str]:
    """Node -> status as the table shows it, read in one script: the page redraws the table on
    every poll, so elements found in one call may be gone by the next."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#nodes tbody tr')]"
        ".map(r => [r.dataset.node, r.dataset.status]))")


def test_the_console_shows_the_cluster_with_every_file_from_the_node(cluster, browser):
    node = cluster.nodes[0]
    origin = f"http://127.0.0.1:{node.http_port}"
    browser.get(origin + "/")
    wait_until(lambda: _rows(browser) == {"n1": "healthy", "n2": "healthy", "n3": "healthy"}, PAGE_LOAD_S,
               lambda: f"the console shows three healthy nodes (it shows {_rows(browser)})")
    # The ring is drawn: sectors coloured by each of the three owners.
    owners = set(browser.execute_script(
        "return [...document.querySelectorAll('#ring path')].map(p => p.dataset.owner)"))
    assert owners == {"n1", "n2", "n3"}
    assert "3 nodes: 3 healthy, 0 down" in browser.find_element(By.ID, "summary").text
    entries = _assert_all_loaded_from(browser, origin)
    names = {urlsplit(e["name"]).path for e in entries}
    assert {"/", "/console/static/console.js", "/console/static/console.css",
            "/api/v1/console/state"} <= names
    # Hot keys: a key read far more than others through this node shows in its panel, hot.
    r = redis.Redis(port=node.resp_port)
    r.set("console:hot", "v")
    for i in range(600):
        r.get("console:hot" if i % 3 else f"console:cold{i}")
    wait_until(lambda: browser.execute_script(
        "const row = document.querySelector('#hot-keys tbody tr');"
        "return row && row.dataset.key === 'console:hot' && row.lastChild.textContent === 'yes'"),
        PAGE_LOAD_S, "the hot keys panel shows console:hot first, hot")


def test_a_killed_node_is_shown_down(cluster, browser):
    origin = f"http://127.0.0.1:{cluster.nodes[0].http_port}"
    if not browser.current_url.startswith(origin):
        browser.get(origin + "/")
    wait_until(lambda: _rows(browser).get("n3") == "healthy", PAGE_LOAD_S, "the console shows n3 healthy")
    cluster.node("n3").kill()
    killed = time.monotonic()
    wait_until(lambda: _rows(browser).get("n3") == "down", DOWN_SHOWN_WITHIN_S,
               lambda: f"the console shows n3 down after its kill (it shows {_rows(browser)})")
    shown_after_s = time.monotonic() - killed
    assert _rows(browser) == {"n1": "healthy", "n2": "healthy", "n3": "down"}
    assert "1 down" in browser.find_element(By.ID, "summary").text
    print(f"n3 shown down {shown_after_s:.2f} s after SIGKILL")


@pytest.mark.parametrize(("path", "rendered"), [
    ("/docs", ".swagger-ui .opblock"),  # an operation of the API, drawn by Swagger UI
    ("/redoc", "[data-section-id]"),  # a section of the API, drawn by ReDoc
])
def test_the_api_documentation_renders_offline(cluster, browser, path, rendered):
    origin = f"http://127.0.0.1:{cluster.nodes[1].http_port}"
    browser.get(origin + path)
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, rendered), PAGE_LOAD_S,
               f"{path} draws {rendered!r}")
    entries = _assert_all_loaded_from(browser, origin)
    assert "/openapi.json" in {urlsplit(e["name"]).path for e in entries}


def test_with_users_the_page_loads_and_its_figures_need_a_user(secured_node):
    base = f"http://127.0.0.1:{secured_node.http_port}"
    page = httpx.get(base + "/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(base + "/console/static/console.js").status_code == 200
    refused = httpx.get(base + "/api/v1/console/state")
    assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]
    token = httpx.post(base + "/api/v1/auth/token", auth=("admin", ADMIN_PASSWORD), json={}).json()["token"]
    state = httpx.get(base + "/api/v1/console/state", headers={"Authorization": f"Bearer {token}"}).json()
    assert [n["node_id"] for n in state["nodes"]] == ["n1"] and state["local"] is not None
    # A user who may read the cluster's status but not INFO sees the cluster without INFO's figures;
    # one who may not read the status is refused, naming the permission.
    r = redis.Redis(port=secured_node.resp_port, username="admin", password=ADMIN_PASSWORD)
    r.execute_command("ACL", "SETUSER", "viewer", "on", ">viewer-pw", "+ringkv.status")
    r.execute_command("ACL", "SETUSER", "writer", "on", ">writer-pw", "~*", "+set")
    viewer = httpx.get(base + "/api/v1/console/state", auth=("viewer", "viewer-pw"))
    assert viewer.status_code == 200 and viewer.json()["local"] is None and viewer.json()["operations"] is None
    assert viewer.json()["hot_keys"] is None and state["hot_keys"]["node_id"] == "n1"
    writer = httpx.get(base + "/api/v1/console/state", auth=("writer", "writer-pw"))
    assert writer.status_code == 403 and "ringkv.status" in writer.json()["detail"]


@pytest.mark.slow  # a second page load in the browser; the state's authentication is checked above in short mode
def test_with_users_the_console_asks_for_a_password_then_shows_the_node(secured_node, browser):
    origin = f"http://127.0.0.1:{secured_node.http_port}"
    browser.get(origin + "/")
    wait_until(lambda: browser.find_element(By.ID, "login").is_displayed(), PAGE_LOAD_S, "the sign-in form shows")
    browser.find_element(By.ID, "login-user").send_keys("admin")
    browser.find_element(By.ID, "login-password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_until(lambda: _rows(browser) == {"n1": "healthy"}, PAGE_LOAD_S,
               lambda: f"the console shows n1 after sign-in (it shows {_rows(browser)})")
    assert not browser.find_element(By.ID, "login").is_displayed()
    # The password was traded for a token, kept by this tab; the 401 before sign-in is the one
    # failed request, and nothing left the node.
    assert browser.execute_script("return sessionStorage.getItem('ringkv.console.token')").startswith("rkv1.")
    for e in _resources(browser):
        assert e["name"].startswith(origin), e


# ------------------------------------------------------------------ a cluster in the middle of a change

PARTITIONS = 64


class ChangingClusterAdmin:
    """An AdminService as a node reports a join in progress: n4 joining (a quarter of the
    partitions moving to it), n3 down with hints held for it, a repair running, a cleanup done."""

    node_id = "n1"

    async def status(self) -> dict:
        states = {"n1": "healthy", "n2": "healthy", "n3": "down", "n4": "joining"}
        nodes = [{"node_id": n, "address": f"127.0.0.1:{7379 + 10 * i}", "status": st, "role": "member",
                  "keys_count": 1000, "memory_used_mb": 80.0, "reachable": st != "down", "in_ring": n != "n4",
                  "primary_partitions": 16, "replica_partitions": 48, "share": 0.25, "phi": 0.4,
                  "bytes_on_disk": 1 << 20, "rss_bytes": 80 << 20, "uptime_ms": 60_000}
                 for i, (n, st) in enumerate(states.items())]
        nodes[3]["move"] = {"kind": "join", "phase": "moving", "partitions_total": 16, "partitions_done": 4}
        return {"cluster": {"partitions": PARTITIONS, "replicas": 3, "members": 3}, "nodes": nodes,
                "total_keys": 3000, "total_keys_unknown_partitions": 0, "replication_factor": 3}

    def ring_view(self) -> dict:
        return {"partitions": PARTITIONS, "replicas": 3, "nodes": ["n1", "n2", "n3"],
                "owners": [p % 3 for p in range(PARTITIONS)], "pending_nodes": ["n1", "n2", "n3", "n4"],
                "pending_owners": [3 if p % 4 == 0 else p % 3 for p in range(PARTITIONS)],
                "moving": [p for p in range(PARTITIONS) if p % 4 == 0], "hints_pending_for": {"n3": 421}}

    def operations(self, running_only: bool = False) -> list[dict]:
        return [{"id": "n1.3", "kind": "repair", "state": "running", "unit": "partitions", "done": 16,
                 "total": 64, "phase": "comparing", "eta_s": 90.0, "error": None},
                {"id": "n1.2", "kind": "cleanup", "state": "done", "unit": "partitions", "done": 64,
                 "total": 64, "phase": "", "eta_s": None, "error": None}]

    def health(self) -> None:
        return None

    def info(self) -> dict:
        return {"ringkv": {"hints_pending": 421, "ae_failures": 0, "nodes_down": "n3"}}

    def hot_keys(self, limit: int) -> dict:
        return {"node_id": "n1", "sample_every": 8, "half_life_ms": 10_000, "sampled": 900, "hot_count": 1,
                "keys": [{"namespace": "default", "key": "user:\\xff",
                          "key_base64": "dXNlcjr/", "per_s": 360.0, "count": 900, "error": 0,
                          "reads": 880, "writes": 20, "hot": True}][:limit]}


@pytest.fixture(scope="module")
def changing_cluster_origin():
    """The HTTP app over ChangingClusterAdmin, served by uvicorn in a thread of its own."""
    from ringkv.api.http_serving import create_app, start_http

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    handle, (_, port) = asyncio.run_coroutine_threadsafe(
        start_http(create_app(None, ChangingClusterAdmin()), "127.0.0.1", 0), loop).result(30)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(handle.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_the_ring_marks_the_moving_partitions_and_operations_show_progress(changing_cluster_origin, browser):
    browser.get(changing_cluster_origin + "/")
    wait_until(lambda: _rows(browser) == {"n1": "healthy", "n2": "healthy", "n3": "down", "n4": "joining"},
               PAGE_LOAD_S, lambda: f"the console shows the four nodes (it shows {_rows(browser)})")
    marks = browser.execute_script("return [...document.querySelectorAll('#ring path.pending-move')].length")
    assert marks == PARTITIONS // 4  # one mark per moving partition, in its future owner's colour
    hints = browser.execute_script(
        "return document.querySelector('#nodes tr[data-node=n3]').children[7].textContent")
    assert hints == "421"
    ops = browser.find_element(By.ID, "operations").text
    assert "repair n1.3" in ops and "16/64 partitions" in ops and "about 1 min left" in ops
    assert "cleanup n1.2" in ops
    assert "join 4/16" in browser.find_element(By.CSS_SELECTOR, "#nodes tr[data-node=n4]").text
    _assert_all_loaded_from(browser, changing_cluster_origin)
