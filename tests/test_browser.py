"""The live view and the report in a real browser: `python -m analysis dashboard RUN` on the Optuna
database of a real smoke run, loaded in headless Chromium (Debian's `chromium`), its trials checked
through the dashboard's JSON API and on the page, and a screenshot that is not blank; then the run's
report.html, with every figure loaded and no error on the console. Chromium is driven over the
DevTools protocol (a websocket, written here with the standard library). Skipped with the reason where
Chromium or optuna-dashboard cannot be had (`.ci/run` installs Chromium; the test extra has the
dashboard)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


class Page:
    """One tab of a headless Chromium, over the DevTools protocol: `call(method, **params)`; the console
    errors, uncaught exceptions and failed loads it saw are in `errors`."""

    def __init__(self, exe: str, profile: Path):
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
            + ["--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        t0 = time.time()
        port = None
        while port is None:
            line = self.proc.stderr.readline()
            assert line or self.proc.poll() is None, "chromium ended before it listened"
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
            assert time.time() - t0 < 60, "chromium did not start within 60 s"
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        ws = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        path = ws.split(f"127.0.0.1:{port}", 1)[1]
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id, self.errors = 0, []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else None
        if head is None:
            head = struct.pack("!BBH", 0x81, 0xFE, n) if n < 65536 else struct.pack("!BBQ", 0x81, 0xFF, n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "chromium closed the connection"
            buf += chunk
        return buf

    def _receive(self) -> dict:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            n = struct.unpack("!H", self._exact(2))[0] if n == 126 else n
            n = struct.unpack("!Q", self._exact(8))[0] if n == 127 else n
            message += self._exact(n)
            if b0 & 0x80:  # the last fragment
                return json.loads(message)

    def _event(self, m: dict) -> None:
        method, params = m.get("method"), m.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            m = self._receive()
            if m.get("id") == self.next_id:
                assert "error" not in m, m["error"]
                return m.get("result", {})
            self._event(m)

    def evaluate(self, expression: str):
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in got, got
        return got["result"].get("value")

    def goto(self, url: str, until: str = "document.readyState === 'complete'", timeout: float = 60) -> None:
        self.errors.clear()
        self.call("Page.navigate", url=url)
        t0 = time.time()
        while not self.evaluate(f"(() => {{ try {{ return !!({until}); }} catch (e) {{ return false; }} }})()"):
            assert time.time() - t0 < timeout, f"{url}: not ({until}) within {timeout} s"
            time.sleep(0.25)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.proc.kill()
            self.proc.wait(timeout=30)


def not_blank(png: bytes) -> tuple[int, float]:
    """The screenshot's count of distinct colours and the spread of its grey levels."""
    from PIL import Image, ImageStat

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = len(img.getcolors(maxcolors=1 << 24) or [])
    return colours, ImageStat.Stat(img.convert("L")).stddev[0]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium here (apt-get install chromium; .ci/run installs it)")
    p = Page(exe, tmp_path_factory.mktemp("profile"))
    yield p
    p.close()


@pytest.fixture(scope="module")
def dashboard(optimizer_smoke):
    pytest.importorskip("optuna_dashboard", reason='optuna-dashboard is not installed (pip install -e ".[dashboard]")')
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis", "dashboard", str(optimizer_smoke)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    yield m.group(0)
    proc.terminate()
    proc.wait(timeout=30)


def api(url: str):
    return json.loads(urllib.request.urlopen(url, timeout=60).read())


@pytest.mark.slow
def test_the_dashboard_shows_every_trial_with_its_values_on_the_run_database(
    optimizer_smoke, dashboard, page, tmp_path
):
    import optuna

    db = f"sqlite:///{optimizer_smoke}/optuna.db"
    studies = api(f"{dashboard}api/studies")["study_summaries"]
    names = {s["study_name"]: s["study_id"] for s in studies}
    assert set(names) == {s.study_name for s in optuna.get_all_study_summaries(db)}
    assert "optimizer_comparison/smoke optimizer=adam" in names and any("[confirm]" in n for n in names)
    for name, sid in names.items():
        want = optuna.load_study(study_name=name, storage=db).trials
        got = api(f"{dashboard}api/studies/{sid}?after=0")["trials"]
        assert [t["number"] for t in got] == [t.number for t in want]
        for g, w in zip(got, want):
            assert g["state"].upper() == w.state.name
            assert g.get("values", [None])[0] == pytest.approx(w.value) if w.value is not None else True
            assert {iv["step"]: iv["value"] for iv in g["intermediate_values"]} == pytest.approx(w.intermediate_values)
            assert {p["name"] for p in g["params"]} == {"optimizer", "lr"}
    # the page: the list of studies, then one study's history, drawn
    page.goto(dashboard, until="document.body.innerText.includes('optimizer=adam')")
    sid = names["optimizer_comparison/smoke optimizer=adam"]
    page.goto(f"{dashboard}dashboard/studies/{sid}", until="document.querySelectorAll('.js-plotly-plot').length > 0")
    time.sleep(2)  # the plots finish drawing
    png = page.screenshot()
    (tmp_path / "dashboard.png").write_bytes(png)
    colours, spread = not_blank(png)
    assert colours > 50 and spread > 5, (colours, spread)
    assert "optimizer=adam" in page.evaluate("document.body.innerText")


@pytest.mark.slow
def test_the_report_loads_every_figure_in_the_browser_without_console_errors(optimizer_smoke, page):
    report = optimizer_smoke / "report.html"
    page.goto(report.as_uri())
    images = page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    figures = sorted(p.stem for p in (optimizer_smoke / "figures").glob("*.png"))
    assert sorted(alt for alt, *_ in images) == figures and "importance" in figures
    broken = [alt for alt, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, broken
    assert not page.errors, page.errors
