"""The observer's live page in headless Chromium, against the real suite.

Starts orders, billing, shipping and the observer from the release binaries (free ports, a
temporary data directory, the broker name prefix `browser-test.`), opens the page, places orders
and checks the map counts them and times each step (p50/p99 on each arrow, no label overlapping
another) and the last hour's charts fill; then freezes shipping (SIGSTOP) and checks that the orders placed
meanwhile turn stuck on the page and in `GET /sagas?state=stuck` within the declared deadline,
thaws it (SIGCONT) and checks they clear, and opens an order's timeline by clicking it. Screenshots
go to target/artifacts/ (observer.png while orders are stuck, observer-timeline.png at the end);
with --update-docs the first is also copied to docs/observer.png for docs/observability.md.

Usage: python3 tests/browser/test_observer.py --bin-dir target/release [--update-docs]
Needs Playwright for Python and a Chromium (CHROMIUM, default /usr/bin/chromium); no browser
download: Playwright drives the system's Chromium.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright, expect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = ["orders", "billing", "shipping", "observer"]
STEP_DEADLINE_MS = 2000
# How long after the deadline the page may take to show a stuck order: the sweep (250 ms), the
# feed and the browser.
SLACK_MS = 3000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def order(country, unit_price=1500):
    return {
        "customer_id": "browser-test",
        "currency": "EUR",
        "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price_cents": unit_price}],
        "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Vienna",
                             "postal_code": "1010", "country": country},
    }


class Suite:
    def __init__(self, bin_dir, workdir):
        self.ports = {name: free_port() for name in SERVICES}
        self.processes = {}
        for name in SERVICES:
            env = dict(os.environ)
            env.update({
                "CHOREO_HTTP_ADDR": "127.0.0.1:%d" % self.ports[name],
                "CHOREO_DATA_DIR": workdir,
                "CHOREO_PREFIX": "browser-test.",
                "CHOREO_OBSERVER_STEP_DEADLINE_MS": str(STEP_DEADLINE_MS),
            })
            log = open(os.path.join(workdir, name + ".log"), "w")
            self.processes[name] = subprocess.Popen(
                [os.path.join(bin_dir, name)], env=env, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL)
        for name in SERVICES:
            wait_for(name + " ready", lambda n=name: http("GET", self.url(n, "/readyz"))[0] == 200, 60)

    def url(self, name, path):
        return "http://127.0.0.1:%d%s" % (self.ports[name], path)

    def place(self, body):
        status, placed = http("POST", self.url("orders", "/orders"), body)
        assert status == 201, status
        return placed["id"]

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def assert_no_overlap(page, selector):
    """No two of the elements `selector` finds overlap on the screen."""
    boxes = page.locator(selector).evaluate_all(
        "nodes => nodes.map(n => { const r = n.getBoundingClientRect();"
        " return [n.textContent, r.left, r.top, r.right, r.bottom]; })")
    assert len(boxes) > 3, boxes
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
            assert apart, "labels overlap: %r and %r" % (a, b)


def stuck_ids(suite):
    status, body = http("GET", suite.url("observer", "/sagas?state=stuck&limit=1000"))
    assert status == 200, status
    return {s["order_id"] for s in body["sagas"]}


def run(bin_dir, update_docs):
    artifacts = os.path.join(ROOT, "target", "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="choreo-browser-")
    suite = Suite(bin_dir, workdir)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(suite.url("observer", "/"))
            expect(page.locator("#live-status")).to_have_text("live", timeout=15000)

            # The map is drawn from the declared flow: three lanes, an arrow group per event type.
            expect(page.locator("g.lane")).to_have_count(3)
            expect(page.locator("g.arrow")).to_have_count(8)
            print("map: 3 lanes, 8 event types")

            # Three orders along the three paths: the arrows count them as they pass.
            happy = suite.place(order("AT"))
            suite.place(order("DE", unit_price=150000))
            suite.place(order("AQ"))
            expect(page.locator('tspan.count[data-type="order.placed"]')).to_contain_text("3 /", timeout=15000)
            expect(page.locator('tspan.count[data-type="payment.refunded"]')).to_contain_text("1 /", timeout=15000)
            expect(page.locator("#count-completed")).to_have_text("1", timeout=15000)
            expect(page.locator("#count-cancelled")).to_have_text("2", timeout=15000)
            expect(page.locator("#count-failed")).to_have_text("0")
            print("three orders counted on the arrows; 1 completed, 2 cancelled (by the flow), none failed")

            # Each arrow after the start shows its time since its cause; the charts show the hour.
            for event_type in ["payment.captured", "payment.declined", "shipment.dispatched",
                               "order.completed", "payment.refunded"]:
                expect(page.locator('tspan.latency[data-type="%s"]' % event_type)).to_contain_text(
                    re.compile(r"p50 \d+ ms · p99 \d+ ms"), timeout=15000)
            expect(page.locator('tspan.latency[data-type="order.placed"]')).to_have_text("start of the saga")
            expect(page.locator("#orders-chart rect.bar")).to_have_count(60)
            expect(page.locator("#latency-chart rect.p99")).to_have_count(60)
            expect(page.locator("#orders-chart rect.bar.now")).to_have_attribute("data-value", "3")
            expect(page.locator("#end-to-end")).to_contain_text(re.compile(r"p99 \d+ ms over 3 sagas"))
            assert_no_overlap(page, "#map text")
            assert_no_overlap(page, "#map text.label, #map g.arrow circle")
            print("per-step p50/p99 on the arrows, the hour's charts, and no label overlaps another")

            # Shipping frozen: orders paid meanwhile wait for it, and turn stuck past the deadline.
            suite.processes["shipping"].send_signal(signal.SIGSTOP)
            placed_at = time.monotonic()
            frozen = {suite.place(order("AT")), suite.place(order("FR"))}
            for order_id in frozen:
                expect(page.locator('tr.state-stuck[data-order="%s"]' % order_id)).to_have_count(
                    1, timeout=STEP_DEADLINE_MS + SLACK_MS + 5000)
            seen_stuck_ms = (time.monotonic() - placed_at) * 1000
            expect(page.locator("#count-stuck")).to_have_text("2")
            expect(page.locator('g.lane[data-lane="shipping"]')).to_have_class("lane waited-on")
            assert frozen <= stuck_ids(suite), stuck_ids(suite)
            assert seen_stuck_ms < STEP_DEADLINE_MS + SLACK_MS, seen_stuck_ms
            print("stuck on the page and in GET /sagas?state=stuck %.0f ms after placing "
                  "(deadline %d ms)" % (seen_stuck_ms, STEP_DEADLINE_MS))

            stuck_one = sorted(frozen)[0]
            page.locator('tr.saga[data-order="%s"]' % stuck_one).click()
            expect(page.locator("#timeline .overdue").first).to_contain_text("shipping", timeout=5000)
            shot = os.path.join(artifacts, "observer.png")
            page.screenshot(path=shot, full_page=True)
            print("screenshot:", shot)
            if update_docs:
                shutil.copyfile(shot, os.path.join(ROOT, "docs", "observer.png"))
                print("copied to docs/observer.png")

            # Shipping back: the stuck orders move on and clear.
            suite.processes["shipping"].send_signal(signal.SIGCONT)
            for order_id in frozen:
                expect(page.locator('tr.saga[data-order="%s"]' % order_id)).to_have_attribute(
                    "data-state", "completed", timeout=60000)
            expect(page.locator("#count-stuck")).to_have_text("0")
            assert not (frozen & stuck_ids(suite))
            print("cleared once shipping was back")

            # An order's timeline, with the time between steps.
            page.locator('tr.saga[data-order="%s"]' % happy).click()
            expect(page.locator("#timeline li.step")).to_have_count(4, timeout=5000)
            expect(page.locator("#timeline li.step").nth(1)).to_contain_text("ms")
            expect(page.locator("#timeline li.step").first).to_contain_text("UTC")
            expect(page.locator("#timeline")).to_contain_text("order.completed")
            print("timeline of", happy, "shown with the time between steps, in UTC")

            # Search by order id: the list keeps the matching order; Enter opens its timeline.
            page.locator("#timeline").evaluate("box => box.innerHTML = ''")
            page.locator("#search").fill(happy)
            expect(page.locator("tr.saga")).to_have_count(1)
            expect(page.locator("#shown-note")).to_have_text("1 of 1 shown")
            page.locator("#search").press("Enter")
            expect(page.locator("#timeline li.step")).to_have_count(4, timeout=5000)
            page.screenshot(path=os.path.join(artifacts, "observer-timeline.png"), full_page=True)
            print("search by order id: one row, and its timeline on Enter")
            browser.close()
    except Exception:
        for name in SERVICES:
            print("--- last lines of", name, "log ---", file=sys.stderr)
            with open(os.path.join(workdir, name + ".log")) as log:
                print("".join(log.readlines()[-10:]), file=sys.stderr)
        raise
    finally:
        suite.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    parser.add_argument("--update-docs", action="store_true")
    arguments = parser.parse_args()
    run(arguments.bin_dir, arguments.update_docs)
    print("observer browser test: ok")
