"""A real headless Chromium (Debian's ``chromium``, no browser download) driven over the
Chrome DevTools Protocol with aiohttp's WebSocket client: just what the staff page tests
need — navigate, evaluate in the page, wait for loads, answer the HTTP Basic sign-in
dialog like a user would, take screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One Chromium tab. ``credentials`` is what the user types into the sign-in dialog
    (None: they cancel it)."""

    def __init__(self, profile: Path, width: int = 768, height: int = 1024) -> None:
        self.profile = profile
        self.width, self.height = width, height
        self.credentials: tuple[str, str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded: asyncio.Event = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Browser:
        assert CHROMIUM, "Debian's chromium is not installed"
        self.profile.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def _read(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            message = json.loads(frame.data)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            method, params = message.get("method"), message.get("params", {})
            if method == "Page.loadEventFired":
                self._loaded.set()
            elif method == "Fetch.requestPaused":
                self._spawn("Fetch.continueRequest", requestId=params["requestId"])
            elif method == "Fetch.authRequired":
                if self.credentials is None:
                    answer = {"response": "CancelAuth"}
                else:
                    user, password = self.credentials
                    answer = {
                        "response": "ProvideCredentials",
                        "username": user,
                        "password": password,
                    }
                self._spawn(
                    "Fetch.continueWithAuth",
                    requestId=params["requestId"],
                    authChallengeResponse=answer,
                )

    def _spawn(self, method: str, **params: Any) -> None:
        task = asyncio.create_task(self._quiet(method, **params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet(self, method: str, **params: Any) -> None:
        with contextlib.suppress(Exception):
            await self.send(method, **params)

    @contextlib.asynccontextmanager
    async def navigation(self, timeout: float = 30) -> AsyncIterator[None]:
        """Wait, at the end of the block, for the page load the block started."""
        self._loaded.clear()
        yield
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def goto(self, url: str) -> None:
        async with self.navigation():
            await self.send("Page.navigate", url=url)

    async def js(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """Click what ``selector`` finds and wait for the page it loads."""
        async with self.navigation():
            found = await self.js(
                f"(() => {{ const e = document.querySelector("
                f"{json.dumps(selector)}); if (!e) return false; "
                f"e.click(); return true; }})()"
            )
            assert found, f"nothing matches {selector}"

    async def text(self, selector: str = "body") -> str:
        return str(
            await self.js(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")
        )

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))  # noqa: ASYNC240 - small file
        return path
