"""The operator console in a real headless Chromium, against a real ``saga api`` and a
real ``saga coordinator`` (subprocesses on 127.0.0.1, real Kafka, a SQLite store with
sagas in every status).

Screenshots of every page are written to ``tests/artifacts/console/`` (paths printed).
Chromium is Debian's (``/usr/bin/chromium``); it is installed with apt-get when missing
and the tests run as root, like ``deploy/local/infra.py`` does for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _console_seed import seed
from _participant_helpers import send_dead_letters
from _processes import ROOT, stop
from _test_topics import new_prefix

from saga.chaos import free_port
from saga.deadletter import dead_letter_record
from saga.ids import short_id
from saga.kafka import TopicSpec, ensure_topics
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
OPERATOR_TOKEN = "op-" + uuid.uuid4().hex
VIEWER_TOKEN = "view-" + uuid.uuid4().hex
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
            check=True,
            env=env,
            capture_output=True,
        )
    if not CHROMIUM.exists():
        msg = "Chromium is not installed: apt-get install -y chromium (or deploy/tasks setup)"
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@dataclass
class Server:
    base: str
    ids: dict[str, Any]
    url: str
    topics: Topics
    logs: Path


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Server]:
    _ensure_chromium()
    work = tmp_path_factory.mktemp("console")
    url = f"sqlite+aiosqlite:///{work / 'console.db'}"
    topics = Topics(prefix=new_prefix())

    async def prepare() -> dict[str, Any]:
        await ensure_topics(
            kafka_bootstrap, [TopicSpec(name=topics.dlq, partitions=1, replication_factor=1)]
        )
        engine = create_engine(url)
        try:
            await upgrade(engine)
            ids = await seed(SqlStore(engine), topics)
        finally:
            await engine.dispose()
        poison = dead_letter_record(
            topics.replies, 0, 41, b"k", b"{not json", "not JSON: Expecting property name",
            "coordinator:saga.coordinator",
        )  # fmt: skip
        await send_dead_letters(kafka_bootstrap, topics.dlq, [poison])
        return ids

    ids = asyncio.run(prepare())
    port = free_port()
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": url,
        "SAGA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_API_TOKENS": f"{OPERATOR_TOKEN}:operator:otto,{VIEWER_TOKEN}:viewer:vera",
        "SAGA_DEFINITIONS": "_api_helpers:DEFINITIONS",
        "SAGA_PARTITIONS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)]),
    }
    saga = str(Path(sys.executable).parent / "saga")
    api_log, coord_log = work / "api.log", work / "coordinator.log"
    with api_log.open("wb") as a_out, coord_log.open("wb") as c_out:
        api = subprocess.Popen(
            [saga, "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=a_out,
            stderr=subprocess.STDOUT,
        )
        coordinator = subprocess.Popen(
            [saga, "coordinator"], env=env, stdout=c_out, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/healthz", api, api_log)
        yield Server(base=base, ids=ids, url=url, topics=topics, logs=work)
    finally:
        stop(api, 20)
        stop(coordinator, 20)


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@pytest.fixture
def signed_in(browser: Any, server: Server) -> Any:
    contexts: list[Any] = []

    def open_as(token: str) -> Any:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(context)
        page = context.new_page()
        outside: list[str] = []
        page.on(
            "request",
            lambda r: (
                outside.append(r.url)
                if not r.url.startswith(server.base) and not r.url.startswith("data:")
                else None
            ),
        )
        page.outside = outside  # type: ignore[attr-defined]
        page.goto(f"{server.base}/ui/sagas")
        assert "/ui/sign-in" in page.url
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.base}/ui/sagas")
        return page

    yield open_as
    for context in contexts:
        context.close()


def _session_cookie(page: Any) -> dict[str, Any]:
    [cookie] = [c for c in page.context.cookies() if c["name"] == "saga_console"]
    return dict(cookie)


def test_sign_in_list_and_filter(signed_in: Any, server: Server) -> None:
    page = signed_in(OPERATOR_TOKEN)
    cookie = _session_cookie(page)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert OPERATOR_TOKEN not in cookie["value"]
    assert OPERATOR_TOKEN not in page.url

    rows = page.locator("table.sagas tbody tr[data-saga]")
    assert rows.count() == len(server.ids)
    shown = {r.inner_text().split()[0] for r in rows.all()}
    assert shown == {short_id(s) for s in server.ids.values()}, "short ids differ"
    assert page.locator(".counts a[data-status=stuck] b").inner_text() == "2"
    _shot(page, "sagas")

    page.select_option("select[name=status]", "stuck")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**status=stuck**")
    statuses = {r.get_attribute("data-status") for r in rows.all()}
    assert statuses == {"stuck"}
    assert rows.count() == 2

    page.goto(f"{server.base}/ui/sagas")
    page.fill("input[name=key]", "order_id=order-completed")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**key=**")
    assert [r.get_attribute("data-saga") for r in rows.all()] == [server.ids["completed"]]

    page.goto(f"{server.base}/ui/sagas?type=approval&version=1")
    assert [r.get_attribute("data-saga") for r in rows.all()] == [server.ids["waiting"]]

    page.goto(f"{server.base}/ui/sagas")
    page.fill("input[name=q]", short_id(server.ids["aborted"]))
    page.click("#filters button[type=submit]")
    page.wait_for_url(f"**/ui/sagas/{server.ids['aborted']}")
    assert page.locator(".status-text").get_attribute("data-status") == "aborted"
    assert page.outside == []  # type: ignore[attr-defined]


def test_a_compensated_saga_shows_its_graph_and_timeline(signed_in: Any, server: Server) -> None:
    page = signed_in(VIEWER_TOKEN)
    page.goto(f"{server.base}/ui/sagas/{server.ids['compensated']}")
    node = page.locator("svg.graph g.node")
    progress = {n.get_attribute("data-step"): n.get_attribute("data-progress") for n in node.all()}
    assert progress == {"reserve": "compensated", "charge": "failed", "confirm": "pending"}
    timeline = page.locator("ol.timeline").inner_text()
    for words in (
        "Saga started",
        "Sent the command of “reserve”",
        "Step “charge” failed: payment.declined — card declined",
        "Status running → compensating (step failed)",
        "Undid “reserve”",
        "Status compensating → compensated (compensations done)",
    ):
        assert words in timeline, words
    assert page.locator("[data-audit=intact]").is_visible()
    steps = page.locator("table.steps").inner_text()
    assert "payment.declined" in steps
    assert "compensation attempt 1" in steps
    assert "trace id" in page.locator("dl.facts").inner_text()
    page.locator("summary", has_text="Context").click()
    assert "order-compensated" in page.locator("details[open] pre").first.inner_text()
    _shot(page, "saga-compensated")
    page.goto(f"{server.base}/ui/definitions")
    assert page.locator("tr[data-definition='booking/1']").is_visible()
    _shot(page, "definitions")
    page.goto(f"{server.base}/ui/definitions/booking/1")
    assert page.locator("svg.graph g.node").count() == 3
    _shot(page, "definition")
    page.goto(f"{server.base}/ui/overview")
    assert page.locator("svg.chart").is_visible()
    # The seeded coordinator's breakers: payments open, inventory closed.
    assert page.locator(
        "table.breakers tr[data-participant='payments'][data-state='open']"
    ).is_visible()
    assert page.locator("table.breakers td.breaker.closed").count() == 1
    _shot(page, "overview")
    page.goto(f"{server.base}/ui/dead-letters")
    assert page.locator("tr[data-ref='0:0']").is_visible()
    assert "not JSON" in page.locator("table.dlq").inner_text()
    _shot(page, "dead-letters")
    page.click("tr[data-ref='0:0'] a")
    assert "{not json" in page.locator("pre").first.inner_text()
    assert page.locator("form.verb").count() == 0, "a viewer gets no replay/discard forms"
    _shot(page, "dead-letter")


def test_an_operator_resolves_a_stuck_saga(signed_in: Any, server: Server) -> None:
    page = signed_in(OPERATOR_TOKEN)
    saga_id = server.ids["stuck"]
    page.goto(f"{server.base}/ui/attention")
    row = page.locator(f"tr[data-saga='{saga_id}']")
    assert "stuck on reserve (compensation)" in row.inner_text()
    offered = {a.get_attribute("data-action") for a in row.locator("a[data-action]").all()}
    assert {"retry-compensation", "skip-compensation", "mark-compensated", "abort"} <= offered
    _shot(page, "attention")

    row.locator("a[data-action=mark-compensated]").click()
    dry = page.locator("#dry-run")
    assert dry.get_attribute("data-outcome") == "applied"
    assert dry.locator("[data-after]").get_attribute("data-after") == "compensated"
    assert "Marked compensated by an operator" in dry.inner_text()
    _shot(page, "action-dry-run")
    page.fill("textarea[name=reason]", "released the stock by hand (ticket 4711)")
    page.click("form.verb button[type=submit]")
    page.wait_for_url(f"**/ui/sagas/{saga_id}?sent=*")
    assert page.locator(".notice").is_visible()
    # The coordinator applies it; the page refreshes itself (htmx) until it is final.
    page.wait_for_selector(".status-text[data-status=compensated]", timeout=45_000)
    page.wait_for_selector("li[data-kind='saga.marked_compensated']", timeout=10_000)
    timeline = page.locator("ol.timeline").inner_text()
    assert "Operator asked to mark compensated" in timeline
    assert "by otto" in timeline
    assert "released the stock by hand (ticket 4711)" in timeline
    assert page.locator("[data-audit=intact]").is_visible()
    assert page.locator("a[data-action]").count() == 0, "a compensated saga has no verbs"
    _shot(page, "saga-resolved")


def test_a_viewer_sees_no_verbs_and_a_forged_post_is_refused(
    signed_in: Any, server: Server
) -> None:
    page = signed_in(VIEWER_TOKEN)
    saga_id = server.ids["stuck2"]
    page.goto(f"{server.base}/ui/attention")
    assert page.locator(f"tr[data-saga='{saga_id}']").is_visible()
    assert page.locator("a[data-action]").count() == 0
    page.goto(f"{server.base}/ui/sagas/{saga_id}")
    assert page.locator("a[data-action]").count() == 0
    assert "An operator can" in page.locator(".actions").inner_text()
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    forged = page.request.post(
        f"{server.base}/ui/sagas/{saga_id}/actions/abort",
        form={"csrf": csrf or "", "reason": "I am only a viewer"},
    )
    assert forged.status == 403
    assert "viewer" in forged.text()
    assert page.request.get(f"{server.base}/ui/sagas/{saga_id}/actions/abort").status == 403
    page.goto(f"{server.base}/ui/sagas/{saga_id}")
    assert page.locator(".status-text").get_attribute("data-status") == "stuck"


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><form id=f method=post action='" + self.target + "'>"
            "<input name=reason value='cross-site'><input name=csrf value='guess'></form>"
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_cross_site_and_tokenless_posts_are_refused(signed_in: Any, server: Server) -> None:
    page = signed_in(OPERATOR_TOKEN)
    saga_id = server.ids["stuck2"]
    target = f"{server.base}/ui/sagas/{saga_id}/actions/abort"

    # Same browser, same session, but the form lacks the CSRF token or carries a wrong one.
    assert page.request.post(target, form={"reason": "no token"}).status == 403
    assert page.request.post(target, form={"reason": "bad", "csrf": "0" * 40}).status == 403

    # A page on another site (localhost is not 127.0.0.1) posts a form to the console:
    # SameSite=Strict keeps the cookie home, and the guessed CSRF token is wrong anyway.
    _Attacker.target = target
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        with page.expect_response(target) as answer:
            page.goto(f"http://localhost:{attacker.server_address[1]}/")
        assert answer.value.status in (401, 403)
        assert answer.value.request.header_value("cookie") is None
    finally:
        attacker.shutdown()
        attacker.server_close()
    page.goto(f"{server.base}/ui/sagas/{saga_id}")
    assert page.locator(".status-text").get_attribute("data-status") == "stuck"
    timeline = page.locator("ol.timeline").inner_text()
    assert "cross-site" not in timeline
    assert "no token" not in timeline
