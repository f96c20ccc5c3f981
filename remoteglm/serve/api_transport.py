"""The API's transport: uvicorn's h11 protocol with deadlines for the headers and the body, a cap
on body bytes drained after an early reply, the header-size limit on complete heads too, the
in-flight request cap, idle connections kept to a number (oldest closed first), and JSON refusals
(400/408/431/503) instead of plain text (``GuardedH11Protocol``); the uvicorn server on a socket
bound before it starts, with the graceful shutdown (``APIServer``); ``make_server`` puts them
together for any ASGI app. The transport knows nothing of the app: the body limit, the grace
period and what to do when shutting down are ``make_server``'s arguments."""

from __future__ import annotations

import asyncio
import http
import json
import math
import signal
import socket
from dataclasses import dataclass
from typing import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.api_log import client_address, log_access, request_line
from remoteglm.serve.api_errors import APIError, error_response

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_MAX_IDLE = 256  # connections without a request being answered (see IdleConnections)
DEFAULT_TIMEOUT_HEADER = 10.0
DEFAULT_TIMEOUT_BODY = 60.0
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0
BACKLOG = 2048  # pending connections the kernel queues (the stdlib server's was 5)
MAX_HEADER_BYTES = 16 * 1024  # request line + headers (h11's max incomplete event size)
MIN_DRAIN_BYTES = 64 * 2**20  # body bytes still read and dropped after an early error reply (see drain_cap)


def drain_cap(limit: int) -> int:
    """Body bytes still read (and dropped) after an early error reply, so the client reads that
    reply instead of a connection reset; past it the connection is closed."""
    return max(4 * limit, MIN_DRAIN_BYTES)


@dataclass(frozen=True)
class ServerLimits:
    timeout_header: float = DEFAULT_TIMEOUT_HEADER
    timeout_body: float = DEFAULT_TIMEOUT_BODY
    drain_bytes: int = MIN_DRAIN_BYTES
    # (path, seconds, flag): a body sent to that path gets its own deadline (a large upload)
    body_timeouts: tuple[tuple[str, float, str], ...] = ()

    def body_deadline(self, path: str | None) -> tuple[float, str]:
        """(seconds, the flag that sets them) for the body of a request to ``path``."""
        for where, seconds, flag in self.body_timeouts:
            if path == where:
                return seconds, flag
        return self.timeout_body, "--timeout_body"


class _Connection(h11.Connection):
    """h11's connection, remembering the parse error it raised (for the JSON reply) and holding
    a complete request head to ``max_head`` bytes too: h11's own limit only applies while the
    head is incomplete, so a larger head that arrived in one piece got through."""

    last_error: h11.RemoteProtocolError | None = None

    def __init__(self, role, max_head: int):
        super().__init__(role, max_head)
        self.max_head = max_head

    def next_event(self):
        try:
            pending = len(self.trailing_data[0]) if self.their_state is h11.IDLE else 0  # a head starts here
            event = super().next_event()
            if isinstance(event, h11.Request):
                size = pending - len(self.trailing_data[0])
                if size > self.max_head:
                    raise h11.RemoteProtocolError(f"request line and headers of {size} bytes, over the {self.max_head} "
                                                  "byte limit", error_status_hint=431)
            return event
        except h11.RemoteProtocolError as e:
            self.last_error = e
            raise


class IdleConnections:
    """One server's connections that have no request being answered: just opened, still sending
    a request head, waiting between requests (keep-alive), or draining a refused body. They do
    not count towards --max_connections (a request head must have arrived for that), so they are
    held to ``cap`` instead: a connection that goes over it closes the one idle the longest. A
    client that sends its request right away is thus always read, however many sockets others
    leave open."""

    def __init__(self, cap: int):
        self.cap = cap
        self._since: dict[GuardedH11Protocol, None] = {}  # insertion order: idle since

    def __len__(self) -> int:
        return len(self._since)

    def idle(self, conn: GuardedH11Protocol) -> None:
        if conn in self._since:
            return
        self._since[conn] = None
        while len(self._since) > self.cap:
            oldest = next(iter(self._since))
            del self._since[oldest]
            oldest.evict()

    def busy(self, conn: GuardedH11Protocol) -> None:
        self._since.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus what it lacks: a deadline for the request line and headers
    (from the connection's first byte, or its opening), one for the body, a cap on body bytes
    read after an early reply, and JSON instead of plain text for malformed requests (400/431,
    closed), timeouts (408, closed) and the in-flight limit (503). --max_connections counts the
    requests being answered (uvicorn's tasks), not open sockets; sockets without one are held to
    a number by ``idle``. ``limits`` and ``idle``: set per server by ``make_server``."""

    limits = ServerLimits()
    idle: IdleConnections | None = None

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(h11.SERVER, config.h11_max_incomplete_event_size or MAX_HEADER_BYTES)
        self.real_app = self.app
        self.max_connections = self.limit_concurrency or 0
        self.limit_concurrency = None  # checked below, answered in JSON (uvicorn's own 503 is plain text)
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._bytes = 0  # of the request being received
        self._drained = 0
        self._body_deadline = (self.limits.timeout_body, "--timeout_body")

    # deadlines
    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        if seconds and seconds > 0:
            self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expired(self) -> None:
        phase = self._phase
        self._timer, self._phase = None, None
        if self.transport.is_closing():
            return
        if phase == "headers" and self._bytes:
            self._refuse(APIError(408, f"the request line and headers did not arrive within {self.limits.timeout_header:g} s "
                                       "(--timeout_header)", code="request_timeout"), "(request headers too slow)")
        elif phase == "body" and self.cycle is not None and not self.cycle.response_started:
            seconds, flag = self._body_deadline
            self._refuse(APIError(408, f"the request body did not arrive within {seconds:g} s ({flag})",
                                  code="request_timeout"), "(request body too slow)")
            self.cycle.disconnected = True  # the app's reply, if any, goes nowhere
            self.cycle.message_event.set()
        self.transport.close()

    def _refuse(self, err: APIError, what: str) -> None:
        """Write ``err`` as a complete JSON response and log it; the caller closes the connection."""
        body = json.dumps(err.body(), ensure_ascii=False).encode("utf-8")
        try:
            phrase = http.HTTPStatus(err.status).phrase
        except ValueError:
            phrase = ""
        head = [f"HTTP/1.1 {err.status} {phrase}", "content-type: application/json", f"content-length: {len(body)}",
                "connection: close", *(f"{k}: {v}" for k, v in (err.headers or {}).items())]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        log_access(client_address(self.client), what, err.status)

    # idle or busy
    def _track(self) -> None:
        if self.idle is None:
            return
        if self.transport.is_closing():
            self.idle.busy(self)  # on its way out: neither
        elif self.cycle is not None and not self.cycle.response_complete:
            self.idle.busy(self)
        else:
            self.idle.idle(self)

    def evict(self) -> None:
        """Closed to make room for a newer connection (``IdleConnections``)."""
        self._disarm()
        self._unset_keepalive_if_required()
        self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._bytes = 0
        self._arm("headers", self.limits.timeout_header)
        self._track()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self.idle is not None:
            self.idle.busy(self)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        self._track()

    def data_received(self, data: bytes) -> None:
        state = self.conn.their_state
        if state is h11.IDLE:  # (part of) a new request
            if self._phase != "headers":
                self._bytes = 0
                self._arm("headers", self.limits.timeout_header)
            self._bytes += len(data)
            full = 0 < self.max_connections <= len(self.tasks)  # requests being answered
            self.app = self._too_many if full else self.real_app
        elif state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
            self._drained += len(data)  # uvicorn reads and drops the rest of a body after the reply
            if self._drained > self.limits.drain_bytes:
                self._disarm()
                self.transport.close()
                self._track()
                return
        super().data_received(data)
        self._track()
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._drained = 0
                self._body_deadline = self.limits.body_deadline((self.scope or {}).get("path"))
                self._arm("body", self._body_deadline[0])
        elif state is h11.IDLE:
            if self._phase != "headers":
                self._bytes = 0
                self._arm("headers", self.limits.timeout_header)
        else:
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        err = self.conn.last_error
        status = getattr(err, "error_status_hint", 400) or 400
        detail = (str(err) if err is not None else msg)[:200]
        self._disarm()
        self._refuse(APIError(status, f"invalid HTTP request: {detail}", code="invalid_http_request"), "(invalid HTTP request)")
        self.transport.close()

    async def _too_many(self, scope, receive, send) -> None:
        err = APIError(503, f"too many requests at once: this server answers {self.max_connections} at a time "
                            "(--max_connections); retry in a moment", type_="server_error", code="too_many_connections", headers={"Retry-After": "1"})
        await error_response(err)(scope, receive, send)
        log_access(client_address(scope), request_line(scope), 503)


class APIServer(uvicorn.Server):
    """uvicorn's server on a socket bound (and listening) before it starts, so the URL is known
    at once (port 0 works). On SIGTERM / Ctrl-C it shuts down gracefully: ``on_shutdown`` runs
    first (the app stops starting work), then uvicorn waits for the answers in flight; ``run``
    returns instead of re-raising the signal; a second Ctrl-C stops waiting."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, on_shutdown: Callable[[], None] | None = None):
        super().__init__(config)
        self.sock, self.on_shutdown = sock, on_shutdown

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def run(self, sockets=None) -> None:
        super().run(sockets=[self.sock])

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def shutdown(self, sockets=None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets=sockets)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    sock = None
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        raise RemoteGLMError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port") from None


def make_server(app, host: str = "127.0.0.1", port: int = 8000, *, timeout_header: float = DEFAULT_TIMEOUT_HEADER,
                timeout_body: float = DEFAULT_TIMEOUT_BODY, timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE,
                max_connections: int = DEFAULT_MAX_CONNECTIONS, max_idle: int = DEFAULT_MAX_IDLE,
                backlog: int = BACKLOG, max_request_bytes: int | None = None, shutdown_grace: float = 0.0,
                on_shutdown: Callable[[], None] | None = None,
                body_timeouts: tuple[tuple[str, float, str], ...] = ()) -> APIServer:
    """Bind ``host:port`` (0: any free port) and return the uvicorn server for the ASGI ``app``
    with these transport limits (``max_connections``: requests answered at once; ``max_idle``:
    connections kept open without one; ``max_request_bytes``: the app's body limit, which sets
    how much of a refused body is still drained; ``body_timeouts``: ``(path, seconds, flag)``, a
    body deadline of its own for requests to ``path``). On shutdown ``on_shutdown()`` runs, then the
    answers in flight get ``shutdown_grace`` seconds (+5 for uvicorn's own wait). ``server.url``
    is its base URL; ``server.run()`` serves until SIGTERM / Ctrl-C (or ``server.should_exit = True``)."""
    limits = ServerLimits(timeout_header, timeout_body, drain_cap(max_request_bytes) if max_request_bytes else MIN_DRAIN_BYTES,
                          tuple(body_timeouts))
    protocol = type("RemoteGLMProtocol", (GuardedH11Protocol,),
                    {"limits": limits, "idle": IdleConnections(max(1, max_idle))})
    config = uvicorn.Config(
        app, http=protocol, ws="none", lifespan="off", log_config=None, access_log=False, proxy_headers=False,
        server_header=False, limit_concurrency=max_connections or None, backlog=backlog,
        timeout_keep_alive=timeout_keep_alive, timeout_graceful_shutdown=math.ceil(shutdown_grace + 5),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES)
    return APIServer(config, _bind(host, port, backlog), on_shutdown)
