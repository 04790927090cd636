"""A tiny Chrome DevTools Protocol client: headless Debian Chromium, one page, JS and
screenshots. Enough to drive a web UI from a test without a driver binary.

`ensure_chromium` is how the suite gets its browser (this client's tests and the
dashboard's Playwright tests in tests/ui alike): Debian's `chromium` package, never a
browser build of its own. `python -m tests.loadtests.browser` (`make browser`, run by
`make test`) installs it before the suite starts, or exits non-zero saying why not."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from boundq.core.pgembed import free_port

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


def ensure_chromium() -> str | None:
    """The chromium binary; installs Debian's package as root when it is missing.
    None (with the reason in CHROMIUM_SKIP_REASON) where it cannot be had."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        os.environ["CHROMIUM_SKIP_REASON"] = "chromium missing; installing it needs root + apt-get"
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900,
                              check=False)
        if done.returncode != 0:
            os.environ["CHROMIUM_SKIP_REASON"] = f"apt-get failed: {done.stderr[-300:]}"
            return None
    return shutil.which("chromium")


class Page:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def goto(self, url: str, timeout: float = 20) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout)

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {expression}")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@contextlib.contextmanager
def chromium(binary: str) -> Iterator[Page]:
    port = free_port()
    profile = tempfile.mkdtemp(prefix="boundq-chromium-")
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}",
                             f"--remote-debugging-port={port}", "--remote-allow-origins=*",
                             "about:blank"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        targets: list[dict[str, Any]] = []
        while not targets:
            with (contextlib.suppress(OSError),
                  urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                         timeout=2) as resp):
                targets = [t for t in json.load(resp) if t.get("type") == "page"]
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            page = Page(ws)
            page.send("Page.enable")
            page.send("Runtime.enable")
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    found = ensure_chromium()
    if found is None:
        sys.exit(f"boundq: no Chromium for the browser tests: "
                 f"{os.environ.get('CHROMIUM_SKIP_REASON', 'it cannot be installed')}")
