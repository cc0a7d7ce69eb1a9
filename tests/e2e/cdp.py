"""A headless Chromium driven through the DevTools protocol (CDP), for tests of the web UIs.

Only what the tests need: open a page, read it, click, type and press keys through the real input
pipeline (``Input.*``: the page sees trusted events, as from a user), and take a screenshot.
Chromium runs with ``--remote-debugging-port=0`` (it picks a free loopback port) and a fresh
profile; its DevTools websocket is read from ``<profile>/DevToolsActivePort``, and the protocol
spoken with the ``websockets`` package that Prefect already depends on. Every wait polls with a
deadline: the machines that run the suite are slow and busy.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


class CDPError(RuntimeError):
    pass


class Chromium:
    """``with Chromium(flags, profile) as browser: page = browser.new_page()``."""

    def __init__(self, flags: list[str], profile: Path, timeout: float = 60.0, binary: str = CHROMIUM):
        self.flags, self.profile, self.timeout, self.binary = list(flags), Path(profile), timeout, binary
        self.process: subprocess.Popen | None = None
        self.ws = None
        self._ids = itertools.count(1)
        self.events: list[dict] = []

    # ---- the browser --------------------------------------------------------------------
    def __enter__(self) -> "Chromium":
        from websockets.sync.client import connect

        self.profile.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.profile.parent / f"{self.profile.name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            # its own session, so the browser and its helpers are stopped together, by group id
            self.process = subprocess.Popen(
                [self.binary, *self.flags, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                 f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )
        try:
            self.ws = connect(self._websocket_url(), max_size=None, open_timeout=self.timeout,
                              close_timeout=5, proxy=None)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _websocket_url(self) -> str:
        """The browser's DevTools endpoint: ``DevToolsActivePort`` holds the port and the path;
        stderr's ``DevTools listening on ws://...`` line says the same."""
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if active.exists():
                lines = active.read_text().split()
                if len(lines) >= 2 and lines[0].isdigit():
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            for line in self.stderr().splitlines():
                if "DevTools listening on ws://" in line:
                    return line.split("DevTools listening on ", 1)[1].strip()
            if self.process is not None and self.process.poll() is not None:
                raise CDPError(f"chromium exited with {self.process.returncode}: {self.stderr()[-2000:]}")
            time.sleep(0.2)
        raise CDPError(f"chromium announced no DevTools endpoint within {self.timeout:.0f}s: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.send("Browser.close", timeout=10)
            except Exception:  # noqa: BLE001 - the process is stopped below anyway
                pass
            self.ws.close()
            self.ws = None
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this Popen started
                self.process.wait(timeout=10)
            self.process = None

    # ---- the protocol -------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """One command; events read while waiting for its answer are kept in ``events``."""
        assert self.ws is not None, "the browser is not running"
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer within {timeout or self.timeout:.0f}s")
            try:
                reply = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                continue
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def new_page(self) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network"):
            page.send(f"{domain}.enable")
        return page


class Page:
    """One tab, through its flattened CDP session."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"{expression[:80]!r} threw: "
                           f"{details.get('exception', {}).get('description') or details.get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, what: str | None = None,
                 interval: float = 0.5) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        timeout = timeout or self.browser.timeout
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CDPError:
                value = None  # a navigation may destroy the context between two polls
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"waited {timeout:.0f}s for {what or expression}; the page shows: "
                             f"{(self.text() or '')[:1500]!r}")

    def mark(self) -> int:
        """A point in the event stream: ``wait_for_response`` looks only at what comes after it."""
        return len(self.browser.events)

    def wait_for_response(self, url_part: str, after: int, timeout: float | None = None) -> dict:
        """The first HTTP response (``Network.responseReceived``) of this tab, after ``after``,
        whose URL contains ``url_part``: its ``response`` object (``url``, ``status``...)."""
        timeout = timeout or self.browser.timeout
        deadline = time.monotonic() + timeout
        while True:
            for event in self.browser.events[after:]:
                if (event.get("sessionId") == self.session and event["method"] == "Network.responseReceived"
                        and url_part in event["params"]["response"]["url"]):
                    return event["params"]["response"]
            if time.monotonic() > deadline:
                raise AssertionError(f"no response from {url_part} within {timeout:.0f}s")
            self.evaluate("0")  # reads the events that arrived meanwhile
            time.sleep(0.2)

    def url(self) -> str:
        return self.evaluate("location.href")

    def text(self) -> str:
        try:
            return self.evaluate("document.body ? document.body.innerText : ''") or ""
        except CDPError:
            return ""

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML") or ""

    def center(self, selector: str) -> tuple[float, float]:
        box = self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e) return null; e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect();
                return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""",
            what=f"a visible {selector}")
        return box[0], box[1]

    def click(self, selector: str) -> None:
        """A real left click at the element's center: moved, pressed and released."""
        self.click_at(*self.center(selector))

    def click_at(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def type_into(self, selector: str, text: str) -> None:
        """Click the field, select what it holds, and type ``text`` over it (``Input.insertText``:
        the page gets the input events of typing, as from an IME)."""
        self.click(selector)
        self.wait_for(f"document.activeElement === document.querySelector({json.dumps(selector)})",
                      what=f"{selector} to have the focus")
        self.key("a", modifiers=2, commands=["selectAll"])  # Ctrl+A
        self.send("Input.insertText", {"text": text})

    def key(self, key: str, modifiers: int = 0, commands: list[str] | None = None) -> None:
        codes = {"Enter": ("Enter", 13, "\r"), "a": ("KeyA", 65, "a")}
        code, vk, char = codes[key]
        down: dict[str, Any] = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk,
                                "nativeVirtualKeyCode": vk, "modifiers": modifiers}
        if not modifiers:
            down["text"] = char
        if commands:
            down["commands"] = commands
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code,
                                             "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk,
                                             "modifiers": modifiers})

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
