"""A real headless Chromium for page tests, driven over the DevTools protocol (websocket-client).

`Chromium(binary, profile_dir)` starts the browser on a free loopback port and attaches to its
one page. `load(url)` navigates and waits for the load event; `evaluate(js)` returns a value;
`key("ArrowRight")` types a key; `drag(...)` and `wheel(...)` move the mouse as a person
would (Input.dispatchMouseEvent); `screenshot()` returns PNG bytes; `errors()` lists console
errors, uncaught exceptions and failed loads seen since start. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--remote-allow-origins=*",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)
#: The DevTools key names a test types, with the Windows virtual-key codes Chromium expects.
KEY_CODES = {"ArrowRight": 39, "ArrowLeft": 37, "Escape": 27, "+": 187, "-": 189}
#: CDP mouse button names and the `buttons` bit each sets while held.
BUTTONS = {"left": 1, "right": 2, "middle": 4}
#: CDP modifier bits.
MODIFIERS = {"alt": 1, "ctrl": 2, "meta": 4, "shift": 8}
WAIT_S = 60  # a bound on every wait, not a measurement: a hung browser fails the test instead of hanging it


class Chromium:
    """One headless browser with one page."""

    def __init__(self, binary: str, profile_dir: Path, width: int = 1280, height: int = 900) -> None:
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        try:
            port = self._devtools_port()
            self.ws = websocket.create_connection(self._page_socket(port), timeout=WAIT_S, suppress_origin=True)
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "DevTools listening on ws://" in line:
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        raise RuntimeError("chromium did not start its DevTools endpoint")

    @staticmethod
    def _page_socket(port: int) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=WAIT_S) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise RuntimeError("chromium has no page to attach to")

    # ------------------------------------------------------------------ protocol

    def _receive(self) -> dict[str, Any]:
        message = json.loads(self.ws.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params or {}}))
        while True:
            message = self._receive()
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_event(self, name: str, after: int) -> dict[str, Any]:
        """The first event `name` among those received after the first `after` events."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for event in self.events[after:]:
                if event["method"] == name:
                    return event
            self._receive()
        raise TimeoutError(f"no {name} event")

    # ------------------------------------------------------------------ page actions

    def load(self, url: str) -> None:
        mark = len(self.events)
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", mark)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        """Evaluate `expression` until it is truthy (e.g. an image that loads lazily); returns it."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"never true: {expression}")

    def key(self, key: str, navigates: bool = False) -> None:
        """Press and release `key` (a character or a name in KEY_CODES); wait for the next page if it navigates."""
        code = KEY_CODES.get(key, ord(key.upper()) if len(key) == 1 else 0)
        text = {"text": key} if len(key) == 1 else {}
        mark = len(self.events)
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": key, "windowsVirtualKeyCode": code, **text})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "windowsVirtualKeyCode": code})
        if navigates:
            self.wait_event("Page.loadEventFired", mark)

    def _mouse(self, kind: str, x: float, y: float, button: str = "none", buttons: int = 0, modifiers: int = 0,
               **extra: Any) -> None:
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": button, "buttons": buttons,
                                               "modifiers": modifiers, "clickCount": 1 if kind != "mouseMoved" else 0,
                                               **extra})

    def drag(self, start: tuple[float, float], end: tuple[float, float], button: str = "left",
             modifiers: tuple[str, ...] = (), steps: int = 4) -> None:
        """Press `button` at `start` (page pixels), move to `end` in `steps` moves, release."""
        bits, held = sum(MODIFIERS[m] for m in modifiers), BUTTONS[button]
        self._mouse("mouseMoved", *start, modifiers=bits)
        self._mouse("mousePressed", *start, button, held, bits)
        for i in range(1, steps + 1):
            point = (start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
            self._mouse("mouseMoved", *point, button, held, bits)
        self._mouse("mouseReleased", *end, button, 0, bits)

    def wheel(self, x: float, y: float, delta_y: float) -> None:
        """One wheel turn at (x, y): negative `delta_y` scrolls up (zooms in, in the viewer)."""
        self._mouse("mouseMoved", x, y)
        self._mouse("mouseWheel", x, y, deltaX=0, deltaY=delta_y)

    def screenshot(self, scale: float = 1.0) -> bytes:
        """PNG of the window, `scale` times its size (a smaller picture for the docs)."""
        params: dict[str, Any] = {"format": "png"}
        if scale != 1.0:
            size = self.evaluate("[window.innerWidth, window.innerHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": scale}
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def errors(self, since: int = 0) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (e.g. a missing file) among the
        events after the first `since`, as text."""
        found = []
        for event in self.events[since:]:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"{entry.get('text')} {entry.get('url', '')}")
        return found

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
