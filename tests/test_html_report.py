"""The HTML report (--report --format html, --html) in a real browser: headless Chromium driven over
the DevTools protocol (CDP) with the small websocket client below (stdlib only: the RFC 6455
handshake and framing, text frames).

The batch behind most tests runs once per module with the stand-in: tasks that succeed, fail,
time out, are retried (so attempts > tasks), print the secret, and have hostile names; one more
record, written directly, is named `<script>alert(1)</script>` with quotes (a file name cannot
hold the slash) and its trajectory holds a script and the secret unmasked.

Chromium: `chromium` (or `chromium-browser`) on PATH, or CHROMIUM=/path. Without one the browser
tests skip and name `bash .ci/install-chromium.sh`; with RUN_BATCH_TESTS_REQUIRE=chromium they
fail instead (for CI, after that script ran).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV_SECRET, SECRET, Workspace, make_workspace, read_jsonl, required

import run_batch as rb

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INSTALL_HINT = "install it with `bash .ci/install-chromium.sh` (Debian's chromium, apt-get)"
SCRIPT_NAME = "<script>alert(1)</script>\"quoted\" 'single'"  # only as a record: no file can be named so
IMG_NAME = "<img src=x onerror=alert(1)> \"q\" 'a'"  # a real prompt file
SCRIPT_OUTPUT = "</script><script>alert(3)</script>"


# ------------------------------------------------------------------------------------------------
# A minimal websocket client (RFC 6455: client handshake, masked text frames out; text,
# continuation, ping and close frames in) and a CDP page on top of it.
# ------------------------------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "ws" and parts.hostname and parts.port, url
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"websocket handshake with {url}: connection closed")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake with {url}: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError(f"websocket handshake with {url}: bad Sec-WebSocket-Accept")

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("websocket: nothing received in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            except TimeoutError:
                raise TimeoutError("websocket: nothing received in time") from None
            if not chunk:
                raise ConnectionError("websocket: connection closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self, timeout: float = 30.0) -> str:
        """The next whole text message (fragments joined; pings answered)."""
        deadline = time.monotonic() + timeout
        message = b""
        while True:
            b0, b1 = self._read(2, deadline)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2, deadline), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8, deadline), "big")
            mask = self._read(4, deadline) if b1 & 0x80 else b""
            payload = self._read(n, deadline)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket: closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload  # 0x1 text, 0x0 continuation
            if fin:
                return message.decode()

    def close(self) -> None:
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class CDPError(Exception):
    pass


class Page:
    """One browser tab over CDP: calls, the events seen so far, a few helpers."""

    def __init__(self, url: str) -> None:
        self.ws = WebSocket(url)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        return self.next_id

    def _handle(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            return  # the answer to a call nobody waits for (handleJavaScriptDialog)
        self.events.append(message)
        if message["method"] == "Page.javascriptDialogOpening":  # never leave the page blocked
            self._send("Page.handleJavaScriptDialog", {"accept": True})

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        wanted = self._send(method, params)
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(max(deadline - time.monotonic(), 0.001)))
            if message.get("id") == wanted:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._handle(message)

    def pump(self, seconds: float) -> None:
        """Take in the events that arrive during seconds."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._handle(json.loads(self.ws.recv(left)))
            except TimeoutError:
                return

    def wait_for(self, method: str, since: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[since:]:
                if event["method"] == method:
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout}s")
            try:
                self._handle(json.loads(self.ws.recv(left)))
            except TimeoutError:
                pass

    def named(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["method"] == method]

    def open(self, url: str) -> None:
        """Load url with everything observed from its first request on."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        since = len(self.events)
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigate {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired", since)
        self.pump(0.3)  # late console messages, requests the script might make

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the element."""
        box = self.js(
            f"(() => {{const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2, r.width, r.height]})()"
        )
        assert box[2] > 0 and box[3] > 0, f"{selector} is not visible: {box}"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        self.pump(0.05)

    def close(self) -> None:
        self.ws.close()


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"] if os.access(os.environ["CHROMIUM"], os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


class Browser:
    """Headless Chromium with its DevTools endpoint on a free port (read from DevToolsActivePort in
    its own profile folder), in its own session so that stop() ends it and its helpers. Also used
    by benchmarks/report_bench.py."""

    def __init__(self, chromium: str, profile: Path) -> None:
        self.log_path = profile.parent / f"{profile.name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                code = self.process.poll()
                raise RuntimeError(f"{chromium} did not start its DevTools endpoint (exit {code}):\n{tail}")
            time.sleep(0.05)
        self.port = int(active.read_text().split()[0])

    def page(self) -> Page:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as answer:
            target = json.load(answer)
        return Page(target["webSocketDebuggerUrl"])

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(10)
                return
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = find_chromium()
    if chromium is None:
        message = f"no Chromium found (chromium on PATH or CHROMIUM=...): {INSTALL_HINT}"
        if required("chromium"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        started = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield started
    started.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = browser.page()
    yield tab
    tab.close()


# ------------------------------------------------------------------------------------------------
# The batch: a workspace like conftest's `ws`, made once for the module
# ------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    ws: Workspace
    report: Path
    records: list[dict[str, Any]]  # every attempt, every results file

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        return {r["task_name"]: r for r in sorted(self.records, key=lambda r: r["finished_at"])}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    ws = make_workspace(tmp_path_factory.mktemp("html"))
    ws.prompt("alpha", "Fold me open.\nRUN: echo out-$((6*7))\n")
    ws.prompt("beta", "Crash once, then succeed.\nSTANDIN: crash-times 1\n")
    ws.prompt("gamma", "STANDIN: max-iterations\n")
    ws.prompt("slowpoke", "STANDIN: tick 60\n")
    ws.prompt("leaky", f"STANDIN: print-secret\nRUN: echo {SECRET} {ENV_SECRET}\n")
    ws.prompt(IMG_NAME, f"RUN: echo '{SCRIPT_OUTPUT}'\n")
    done = ws.run(
        "--retries", "1", "--retry-backoff", "0", "--max-workers", "3", "--timeout", "4", "--grace-period", "5"
    )
    assert ws.results.exists(), done.stdout + done.stderr
    # One more record, written as another results file would be: a name no file can have (a
    # slash), and a trajectory with a script in it and the secret unmasked on disk.
    alpha = next(r for r in read_jsonl(ws.results) if r["task_name"] == "alpha")
    trajectory = ws.output / "trajectories" / "script-task.json"
    trajectory.write_text(
        json.dumps(
            [
                {
                    "id": 0,
                    "source": "user",
                    "action": "message",
                    "message": f"{SCRIPT_NAME} uses {SECRET}",
                    "args": {"content": "hi"},
                },
                {
                    "id": 1,
                    "source": "agent",
                    "action": "run",
                    "message": "run it",
                    "args": {"command": f"echo '{SCRIPT_OUTPUT}' {SECRET}"},
                },
                {
                    "id": 2,
                    "source": "environment",
                    "observation": "run",
                    "content": f"{SCRIPT_OUTPUT} {SECRET}",
                    "extras": {},
                    "message": "",
                },
            ]
        )
    )
    extra = {
        **alpha,
        "task_name": SCRIPT_NAME,
        "run_id": "handmade",
        "trajectory_path": str(trajectory),
        "error": f'it said "{SCRIPT_NAME}"',
        "status": "failed",
        "stdout_log": None,
        "stderr_log": None,
    }
    (ws.output / "extra.jsonl").write_text(json.dumps(extra) + "\n")
    done = ws.run("--report", "--format", "html")
    report = ws.output / "report.html"
    assert done.returncode == 1 and f"Report: {report}" in done.stdout, done.stdout + done.stderr
    records = read_jsonl(ws.results) + read_jsonl(ws.output / "extra.jsonl")
    return Batch(ws, report, records)


def visible_rows(page: Page) -> list[tuple[str, str]]:
    return [
        tuple(row)
        for row in page.js(
            "[...document.querySelectorAll('#tasks tbody tr')].filter(r => r.getClientRects().length > 0)"
            ".map(r => [r.cells[0].textContent, r.dataset.status])"
        )
    ]


# ------------------------------------------------------------------------------------------------
# In the browser
# ------------------------------------------------------------------------------------------------


def test_page_loads_without_errors_or_requests(batch: Batch, page: Page) -> None:
    url = batch.report.as_uri()
    page.open(url)
    assert page.js("document.readyState") == "complete"
    assert page.js("document.querySelectorAll('#tasks tbody tr').length") == len(batch.latest)
    exceptions = [e["params"]["exceptionDetails"] for e in page.named("Runtime.exceptionThrown")]
    errors = [e["params"]["entry"] for e in page.named("Log.entryAdded") if e["params"]["entry"]["level"] == "error"]
    console = [
        e["params"] for e in page.named("Runtime.consoleAPICalled") if e["params"]["type"] in ("error", "assert")
    ]
    requests = [e["params"]["request"]["url"] for e in page.named("Network.requestWillBeSent")]
    assert exceptions == [] and errors == [] and console == []
    assert requests == [url]  # the page itself, nothing else


def test_timeline_has_one_bar_per_attempt(batch: Batch, page: Page) -> None:
    assert len(batch.records) > len(batch.latest)  # retries: more attempts than tasks
    page.open(batch.report.as_uri())
    bars = page.js("[...document.querySelectorAll('svg.timeline rect.bar')].map(b => b.dataset.status)")
    assert sorted(bars) == sorted(r["status"] for r in batch.records)
    assert page.js("document.querySelectorAll('svg.timeline rect.bar title').length") == len(batch.records)


def test_filtering_by_status_hides_the_other_rows(batch: Batch, page: Page) -> None:
    page.open(batch.report.as_uri())
    statuses = {r["status"] for r in batch.latest.values()}
    assert {"success", "failed", "timeout"} <= statuses, statuses
    assert len(visible_rows(page)) == len(batch.latest)
    page.js("document.querySelector('.filters input[value=\"success\"]').click()")
    shown = visible_rows(page)
    assert shown and all(status != "success" for _, status in shown)
    assert len(shown) == sum(r["status"] != "success" for r in batch.latest.values())
    page.js("document.querySelector('.filters input[value=\"failed\"]').click()")
    assert {status for _, status in visible_rows(page)} == statuses - {"success", "failed"}
    for status in ("success", "failed"):
        page.js(f"document.querySelector('.filters input[value=\"{status}\"]').click()")
    assert len(visible_rows(page)) == len(batch.latest)


def test_a_trajectory_folds_open_with_its_command_and_output(batch: Batch, page: Page) -> None:
    page.open(batch.report.as_uri())
    index = page.js(
        "[...document.querySelectorAll('details.traj')].findIndex(d => "
        "d.querySelector('summary').textContent.startsWith('alpha '))"
    )
    assert index >= 0
    selector = f"details.traj:nth-of-type({index + 1})"
    assert page.js(f"document.querySelectorAll('details.traj')[{index}] === document.querySelector('{selector}')")
    steps = f"document.querySelector('{selector} ol.steps')"
    assert page.js(f"document.querySelector('{selector}').open") is False
    assert page.js(f"{steps}.checkVisibility()") is False  # folded: not shown
    page.click(f"{selector} > summary")
    assert page.js(f"document.querySelector('{selector}').open") is True
    assert page.js(f"{steps}.checkVisibility()") is True
    assert page.js(f"{steps}.getBoundingClientRect().height") > 0
    text = page.js(f"document.querySelector('{selector}').innerText")
    assert "echo out-$((6*7))" in text  # the RUN command, as written
    assert "out-42" in text.replace("out-$((6*7))", "")  # and what it printed


def test_sorting_a_column(batch: Batch, page: Page) -> None:
    page.open(batch.report.as_uri())
    heads = page.js("[...document.querySelectorAll('#tasks th')].map(th => th.textContent)")
    secs = heads.index("secs") + 1
    values = f"[...document.querySelectorAll('#tasks tbody tr')].map(r => parseFloat(r.cells[{secs - 1}].dataset.v))"
    before = page.js(values)
    page.click(f"#tasks th:nth-child({secs})")
    ascending = page.js(values)
    assert ascending == sorted(before)
    page.click(f"#tasks th:nth-child({secs})")
    assert page.js(values) == sorted(before, reverse=True)
    assert before != sorted(before, reverse=True)  # the order did change
    page.click("#tasks th:nth-child(1)")
    names = page.js("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.cells[0].textContent)")
    assert sorted(names) == sorted(batch.latest)
    assert page.js(f"(n => n.every((x, i) => i === 0 || n[i - 1].localeCompare(x) <= 0))({json.dumps(names)})")


def test_hostile_task_names_are_text_not_code(batch: Batch, page: Page) -> None:
    page.open(batch.report.as_uri())
    page.js("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.pump(0.3)
    assert page.named("Page.javascriptDialogOpening") == []
    assert page.named("Runtime.exceptionThrown") == []
    assert page.js("document.scripts.length") == 1  # the report's own
    assert page.js("document.querySelectorAll('img').length") == 0
    names = page.js("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.cells[0].textContent)")
    assert SCRIPT_NAME in names and IMG_NAME in names
    summaries = page.js("[...document.querySelectorAll('details.traj > summary')].map(s => s.textContent)")
    assert f"{SCRIPT_NAME} · failed" in summaries
    body = page.js("document.body.innerText")
    assert SCRIPT_OUTPUT in body  # the output of the echo, shown as text
    assert f'it said "{SCRIPT_NAME}"' in body  # the reason, quotes and all
    assert page.js("document.title").startswith("run_batch report: ")
    # The check can see a dialog: one opened on purpose is noticed (and dismissed).
    page.js("alert('probe')")
    assert [e["params"]["message"] for e in page.named("Page.javascriptDialogOpening")] == ["probe"]


def test_links_resolve_when_the_folder_is_copied(batch: Batch, page: Page, tmp_path: Path) -> None:
    hrefs = re.findall(r'href="([^"]*)"', batch.report.read_text())
    assert hrefs, "the report links no file"
    for href in hrefs:
        assert not href.startswith(("/", "file:")) and "://" not in href, href
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(batch.ws.output, copy)
    moved = batch.ws.output.with_name("batch_output.moved")
    batch.ws.output.rename(moved)  # nothing left at the old place to reach by accident
    try:
        page.open((copy / "report.html").as_uri())
        targets = page.js("[...document.querySelectorAll('#tasks a')].map(a => [a.textContent, a.href])")
    finally:
        moved.rename(batch.ws.output)
    assert {label for label, _ in targets} >= {"stdout", "stderr", "trajectory"}
    # the names here are plain (see test_links_with_awkward_task_names for the others)
    plain = [(label, url) for label, url in targets if "alpha" in url or "beta" in url or "gamma" in url]
    assert len(plain) >= 9
    for _label, url in plain:
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        assert path.is_relative_to(copy) and path.is_file(), url


def test_links_with_awkward_task_names(ws: Workspace, page: Page) -> None:
    """A task name is a file name: spaces, `#`, `?`, `%` and quotes must not break its links."""
    names = ["with space", "hash #1", "query ?x=1", "percent 100%25", "quote \"q\" 'a'"]
    for name in names:
        ws.prompt(name)
    assert ws.run("--max-workers", "3", "--html").returncode == 0
    page.open((ws.output / "report.html").as_uri())
    targets = page.js("[...document.querySelectorAll('#tasks a')].map(a => [a.textContent, a.href])")
    assert len(targets) == 3 * len(names)
    broken = []
    for label, url in targets:
        parts = urllib.parse.urlsplit(url)
        path = Path(urllib.parse.unquote(parts.path))
        if parts.query or parts.fragment or not path.is_file():
            broken.append(f"{label}: {url}")
    assert broken == [], "links that do not reach their file:\n" + "\n".join(broken)


# ------------------------------------------------------------------------------------------------
# Without a browser: the file itself
# ------------------------------------------------------------------------------------------------


def test_secrets_are_masked(batch: Batch) -> None:
    on_disk = (batch.ws.output / "trajectories" / "script-task.json").read_text()
    assert SECRET in on_disk  # the handmade trajectory holds it unmasked: the page must mask it
    page = batch.report.read_text()
    assert SECRET not in page and ENV_SECRET not in page
    assert "echo **** ****" in page  # leaky's command, masked, not dropped


def test_html_on_a_run_writes_report_html_atomically(ws: Workspace) -> None:
    ws.prompt("one", "RUN: echo one\n")
    done = ws.run("--html")
    report = ws.output / "report.html"
    assert done.returncode == 0 and f"Report: {report}" in done.stdout, done.stdout + done.stderr
    text = report.read_text()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert list(ws.output.glob(".report-*")) == []
    # Written by rename, never in place: a reader holding the old file keeps it whole.
    old = ws.root / "old-report.html"
    os.link(report, old)
    done = ws.run("--report", "--format", "html")
    assert done.returncode == 0, done.stdout + done.stderr
    assert old.read_text() == text
    assert report.stat().st_ino != old.stat().st_ino
    assert list(ws.output.glob(".report-*")) == []


def test_report_format_html_output_file(ws: Workspace) -> None:
    ws.prompt("one", "RUN: echo one\n")
    assert ws.run().returncode == 0
    assert not (ws.output / "report.html").exists()  # no --html, no page
    target = ws.root / "pages" / "mine.html"
    target.parent.mkdir()
    done = ws.run("--report", "--format", "html", "--output", str(target))
    assert done.returncode == 0 and f"Report: {target}" in done.stdout, done.stdout + done.stderr
    assert target.read_text().startswith("<!doctype html>")
    assert not (ws.output / "report.html").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine.html"]
    # its links are relative to where it is
    for href in re.findall(r'href="([^"]*)"', target.read_text()):
        assert not href.startswith("/") and (target.parent / urllib.parse.unquote(href)).is_file(), href


def test_a_report_made_in_a_copied_folder_shows_and_links_the_copy(ws: Workspace, tmp_path: Path) -> None:
    """Results rsynced from a cluster: the records name the files where they were written, the
    report made in the copy shows the copy's trajectories and workspaces, and links to them."""
    ws.prompt("one", "RUN: echo from-the-agent-$((6*7))\n")
    assert ws.run("--workspace-per-task").returncode == 0
    copy = tmp_path / "laptop" / "results"
    shutil.copytree(ws.output, copy, symlinks=True)
    moved = ws.output.with_name("batch_output.gone")
    ws.output.rename(moved)  # nothing left where the records say
    try:
        done = ws.run("--report", "--format", "html", "--output-dir", str(copy))
        table = ws.run("--report", "--output-dir", str(copy))
        as_json = json.loads(ws.run("--report", "--format", "json", "--output-dir", str(copy)).stdout)
    finally:
        moved.rename(ws.output)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (copy / "report.html").read_text()
    assert "from-the-agent-42" in page  # the trajectory, rendered from the copy
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert len(hrefs) == 4, hrefs  # stdout, stderr, trajectory, workspace
    for href in hrefs:
        assert (copy / urllib.parse.unquote(href)).exists() and ".." not in href, href
    assert "Workspaces: 1 task" in table.stdout, table.stdout
    [row] = as_json["tasks"]
    assert Path(row["trajectory_path"]).is_relative_to(copy)
    assert str(ws.output) not in json.dumps(as_json["tasks"][0]["workspace"])
    # the results file itself is never rewritten
    assert str(ws.output) in (copy / "batch_results.jsonl").read_text()


def test_the_page_stays_bounded(ws: Workspace) -> None:
    ws.prompt("huge-trajectory", "STANDIN: big-trajectory-mb 60\n")
    write = "import sys; sys.stdout.write('Q' * (1 << 20))"
    ws.prompt("huge-output", f"RUN: {shlex.quote(sys.executable)} -c {shlex.quote(write)}\n")
    done = ws.run("--max-workers", "2", "--html", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    trajectory = ws.output / "trajectories" / "huge-trajectory.json"
    assert trajectory.stat().st_size > 60 << 20 > rb.HTML_TRAJECTORY_FILE_CAP
    output = json.loads((ws.output / "trajectories" / "huge-output.json").read_text())
    assert max(len(e.get("content") or "") for e in output) >= 1 << 20  # one event, 1 MiB
    page = (ws.output / "report.html").read_text()
    assert len(page.encode()) < 256 << 10, len(page)
    assert "too big to read whole" in page and "steps not shown here" in page  # its two ends only
    longest = max(len(run) for run in re.findall(r"Q{100,}", page))
    assert longest == rb.HTML_OUTPUT_CAP  # clipped at the cap, and the cap is there
    assert f"({rb.HTML_OUTPUT_CAP} characters, cut)" in page
