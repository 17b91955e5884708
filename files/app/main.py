"""fastapi-edge sample application.

Runs behind nginx (TLS, HTTP/2, caching) as one or more uvicorn processes,
one per port on 127.0.0.1 (systemd template unit fastapi-edge-app@PORT).

Works with Debian 12's FastAPI 0.92 / Starlette 0.26 / uvicorn 0.17 and with
current FastAPI releases: only long-stable APIs are used (no lifespan or
on_event hooks, no python-multipart dependency, pure-ASGI middleware).

Environment:
  APP_VERSION          reported by /healthz and /api/version (default "dev")
  APP_PORT             reported by /healthz (set by run-app.sh / the unit)
  STATIC_DIR           directory mounted at /static (default: ./static beside
                       this file; when unset and missing, /static is skipped);
                       its index.html also frames the / page (one shared head)
  FASTAPI_EDGE_STATS   "1" enables the connection-counting middleware and
                       GET/DELETE /_stats
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import weakref
from html import escape
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional, Set, Tuple
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request, Response, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect

APP_VERSION = os.environ.get("APP_VERSION") or "dev"
MAX_SLOW_MS = 10_000
MAX_BYTES = 10 * 1024 * 1024
TOKEN_TTL_SECONDS = 3600

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _app_port() -> Optional[int]:
    raw = os.environ.get("APP_PORT", "")
    return int(raw) if raw.isdigit() else None


def _stats_enabled() -> bool:
    return os.environ.get("FASTAPI_EDGE_STATS", "") == "1"


app = FastAPI(title="fastapi-edge", version=APP_VERSION)


# --------------------------------------------------------------------------
# Connection statistics (FASTAPI_EDGE_STATS=1 only)
# --------------------------------------------------------------------------


class ConnectionStats:
    """Counts TCP connections and requests seen.

    A connection is one transport object: each is counted the first time a
    request arrives on it, and remembered only weakly, so a new connection is
    never mistaken for an old one even when the kernel gives it the same
    (host, port) as one that closed (loopback ports are reused quickly).
    Requests whose transport cannot be reached fall back to distinct
    (host, port) peers.
    """

    def __init__(self) -> None:
        self._seen: "weakref.WeakSet[object]" = weakref.WeakSet()
        self.transports = 0
        self.peers: Set[Tuple[str, int]] = set()
        self.requests = 0

    def reset(self) -> None:
        self._seen = weakref.WeakSet()
        self.transports = 0
        self.peers.clear()
        self.requests = 0

    def note(self, transport: Optional[object], peer: Optional[Tuple[str, int]]) -> None:
        self.requests += 1
        if transport is not None:
            try:
                if transport not in self._seen:
                    self._seen.add(transport)
                    self.transports += 1
                return
            except TypeError:  # not weakly referenceable: count by peer
                pass
        if peer is not None:
            self.peers.add(peer)

    def snapshot(self) -> Dict[str, int]:
        return {"connections": self.transports + len(self.peers), "requests": self.requests}


STATS = ConnectionStats()


def _transport(receive: Receive) -> Optional[Any]:
    """The transport of the TCP connection that carries this request.

    The protocol object that owns `receive` (uvicorn's per-request cycle or
    websocket protocol) holds it.
    """
    owner = getattr(receive, "__self__", None)
    return getattr(owner, "transport", None)


def _tcp_peer(scope: Scope, transport: Optional[Any]) -> Optional[Tuple[str, int]]:
    """The real TCP peer of this request.

    uvicorn's --proxy-headers rewrites scope["client"] to (X-Forwarded-For, 0)
    for trusted proxies, which would hide the proxy's source port. The
    transport's peername is the true (host, port) of the TCP connection.
    Fall back to scope["client"].
    """
    if transport is not None:
        try:
            peer = transport.get_extra_info("peername")
        except Exception:  # pragma: no cover - defensive
            peer = None
        if isinstance(peer, (tuple, list)) and len(peer) >= 2:
            return (str(peer[0]), int(peer[1]))
    client = scope.get("client")
    if client:
        return (str(client[0]), int(client[1]))
    return None


class ConnectionStatsMiddleware:
    """Pure ASGI middleware (works on every Starlette version)."""

    def __init__(self, app: ASGIApp, stats: ConnectionStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") in ("http", "websocket") and scope.get("path") != "/_stats":
            transport = _transport(receive)
            self.stats.note(transport, _tcp_peer(scope, transport))
        await self.app(scope, receive, send)


if _stats_enabled():
    app.add_middleware(ConnectionStatsMiddleware, stats=STATS)

    @app.get("/_stats")
    async def get_stats() -> Dict[str, int]:
        return STATS.snapshot()

    @app.delete("/_stats")
    async def reset_stats() -> Dict[str, int]:
        STATS.reset()
        return STATS.snapshot()


# --------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------


# The home page's <main>; the page around it (head, stylesheet) is the static
# index page's, so the two pages share one <head>.
_HOME_MAIN = """<main>
    <h1>fastapi-edge is serving</h1>
    <p>This page comes from the FastAPI app (version <strong>{version}</strong>), through nginx.</p>
    <p>You reached it over <strong>{scheme}</strong> from <strong>{client}</strong>, as the app sees it.</p>
    <ul>
      <li><a href="/static/index.html">a static page, served by nginx from disk</a></li>
      <li><a href="/api/hello">/api/hello</a> and <a href="/api/whoami">/api/whoami</a></li>
      <li><a href="/api/version">/api/version</a>, <a href="/healthz">/healthz</a></li>
    </ul>
  </main>"""


def _static_dir() -> Optional[Path]:
    """STATIC_DIR, or ./static beside this file; None when unset and missing."""
    configured = os.environ.get("STATIC_DIR")
    directory = Path(configured) if configured else Path(__file__).resolve().parent / "static"
    if not directory.is_dir():
        if configured:
            raise RuntimeError(f"STATIC_DIR={configured} is not a directory")
        return None
    return directory


_STATIC_DIR = _static_dir()


def _page_frame() -> Tuple[str, str]:
    """The static index page before its <main> and after its </main> ("", "" without one)."""
    index = _STATIC_DIR / "index.html" if _STATIC_DIR else None
    if index is None or not index.is_file():
        return ("", "")
    head, opened, rest = index.read_text(encoding="utf-8").partition("<main>")
    _, closed, tail = rest.partition("</main>")
    return (head, tail) if opened and closed else ("", "")


_HEAD, _TAIL = _page_frame()


@app.get("/", include_in_schema=False)
async def home(request: Request) -> HTMLResponse:
    # uvicorn 0.17 (Debian 12) leaves the host None when the forwarded address is itself a
    # trusted proxy address (127.0.0.1 in loopback tests): say so rather than fail with a 500.
    client = (request.client.host if request.client else None) or "unknown"
    main = _HOME_MAIN.format(version=escape(APP_VERSION), scheme=escape(request.url.scheme), client=escape(client))
    return HTMLResponse(_HEAD + main + _TAIL)


@app.get("/healthz")
async def healthz() -> Dict[str, Any]:
    return {"status": "ok", "version": APP_VERSION, "port": _app_port()}


@app.get("/api/version")
async def version() -> Dict[str, str]:
    return {"version": APP_VERSION}


@app.get("/api/hello")
async def hello(name: str = Query("world", max_length=100)) -> Dict[str, Any]:
    return {"message": f"hello, {name}", "version": APP_VERSION, "time": time.time()}


@app.get("/api/whoami")
async def whoami(request: Request) -> Dict[str, Any]:
    headers = request.headers
    server = request.scope.get("server")
    return {
        "client": request.client.host if request.client else None,
        # The address this process listens on (host, port): which app host and process answered.
        "server": f"{server[0]}:{server[1]}" if server and server[1] is not None else None,
        "scheme": request.url.scheme,
        "host": headers.get("host"),
        "forwarded": {
            "x-forwarded-for": headers.get("x-forwarded-for"),
            "x-forwarded-proto": headers.get("x-forwarded-proto"),
            "x-real-ip": headers.get("x-real-ip"),
        },
    }


@app.post("/auth/token")
async def token(request: Request) -> Response:
    """Dummy OAuth2-style token endpoint (form or JSON body)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    username: Optional[str] = None
    try:
        if "application/json" in content_type and body:
            data = json.loads(body)
            if isinstance(data, dict) and isinstance(data.get("username"), str):
                username = data["username"]
        elif body:
            values = parse_qs(body.decode("utf-8", "replace")).get("username")
            username = values[0] if values else None
    except ValueError:
        return JSONResponse({"detail": "malformed request body"}, status_code=400)
    return JSONResponse(
        {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "bearer",
            "expires_in": TOKEN_TTL_SECONDS,
            "username": username,
        },
        headers={"Cache-Control": "no-store"},
    )


@app.get("/api/slow")
async def slow(ms: int = Query(100, ge=0, le=MAX_SLOW_MS)) -> Dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.get("/api/bytes")
async def payload(n: int = Query(1024, ge=0, le=MAX_BYTES)) -> Response:
    return Response(content=b"x" * n, media_type="application/octet-stream")


@app.websocket("/ws/echo")
async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message.get("type") == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


# --------------------------------------------------------------------------
# Static files (direct-uvicorn benchmarks; nginx normally serves them)
# --------------------------------------------------------------------------


if _STATIC_DIR is not None:
    app.mount("/static", StaticFiles(directory=str(_STATIC_DIR)), name="static")
