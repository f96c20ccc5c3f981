"""What the web demo adds around gradio: a private upload folder swept by age (``UploadDir``),
failed logins throttled per client (``LoginThrottle``), uploads and outputs readable only by the
login that sent or received them (``FileScope``), the last two as one ASGI middleware inside
gradio's app (``WebGuard``). Gradio 6.31 has none of these: its ``delete_cache`` leaves the
0-byte temp file ``gr.File`` makes per upload and every content-hash folder, and deletes the
example copies it needs; ``/login`` answers as fast as it is asked; ``/file=`` serves any
upload to any logged-in user."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

from starlette.requests import cookie_parser

EMPTY_DIR_GRACE_S = 10.0  # gradio makes a content-hash folder just before it moves the file in
FREE_FAILURES = 5  # wrong passwords a client may send before it has to wait
MAX_LOCK_S = 300  # the longest wait: a right password is never locked out for longer
FORGET_S = 3600.0  # a client's failures are forgotten this long after its last one
TOO_MANY = "登录失败次数过多，请 {s} 秒后再试 / Too many failed logins: try again in {s} s"
LOGIN_PATHS = ("/login", "/login/")


class UploadDir:
    """A folder of its own under ``base`` (mode 0700) for gradio's uploads and outputs of this
    process; files older than ``ttl_s`` (by ctime, as gradio counts) are deleted, ``keep``
    excepted, and emptied folders after a short grace; ``remove`` deletes it all."""

    def __init__(self, base: Path, ttl_s: float):
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="remoteglm-web-", dir=base))
        self.ttl_s = ttl_s
        self.keep: set[str] = set()
        self.tracked: list[set[str]] = []  # gradio's own lists of its files, kept in step
        self.after_sweep = None  # called after each sweep (FileScope.forget_missing)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for folder, dirs, files in os.walk(self.path, topdown=False):
            emptied = False
            for name in files:
                path = os.path.join(folder, name)
                if path in self.keep:
                    continue
                try:
                    if now - os.lstat(path).st_ctime > self.ttl_s:
                        os.remove(path)
                        emptied = True
                        for s in self.tracked:
                            s.discard(path)
                except FileNotFoundError:
                    pass
            if folder != str(self.path):
                try:  # a folder found empty may be one gradio has just made: it gets a grace period
                    if not os.listdir(folder) and (emptied or now - os.lstat(folder).st_mtime > EMPTY_DIR_GRACE_S):
                        os.rmdir(folder)
                except OSError:  # gone, or just filled
                    pass

    def start(self) -> None:
        interval = max(1.0, min(self.ttl_s / 2, 60.0))

        def run():
            while not self._stop.wait(interval):
                self.sweep()
                if self.after_sweep is not None:
                    self.after_sweep()

        self._thread = threading.Thread(target=run, name="upload-sweeper", daemon=True)
        self._thread.start()

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        shutil.rmtree(self.path, ignore_errors=True)


class LoginThrottle:
    """Failed logins per client address: the first FREE_FAILURES are free, each later one
    doubles the wait before the next attempt is checked (2, 4, 8 s ... up to MAX_LOCK_S). An
    attempt counts as failed from the moment it starts (so a burst in parallel is held back
    too); a success clears the client's count."""

    def __init__(self, free: int = FREE_FAILURES, max_lock: float = MAX_LOCK_S):
        self.free, self.max_lock = free, max_lock
        self._clients: dict[str, list[float]] = {}  # address -> [failures, locked until, last failure]

    def wait(self, client: str, now: float | None = None) -> int:
        """Seconds ``client`` must still wait (0: its attempt is checked)."""
        now = time.monotonic() if now is None else now
        entry = self._clients.get(client)
        return math.ceil(entry[1] - now) if entry and entry[1] > now else 0

    def attempt(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._clients) > 4096:  # many addresses: drop the long quiet ones
            self._clients = {c: e for c, e in self._clients.items() if now - e[2] < FORGET_S}
        entry = self._clients.setdefault(client, [0, 0.0, now])
        if now - entry[2] > FORGET_S:
            entry[0] = 0
        entry[0] += 1
        entry[2] = now
        if entry[0] > self.free:
            entry[1] = now + min(2 ** (entry[0] - self.free), self.max_lock)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def not_a_failure(self, client: str) -> None:
        """The attempt was not a wrong password (a malformed form): it does not count."""
        entry = self._clients.get(client)
        if entry:
            entry[0] = max(0, entry[0] - 1)


class FileScope:
    """Which login may fetch each file in the upload folder: every file lies in a folder named
    after its content's hash, and a folder belongs to each login that was handed a path in it
    (the upload's reply, a result streamed back). ``public`` folders (the example copies) are
    everyone's; a folder no login was handed is no one's."""

    def __init__(self, root: Path, public: Iterable[str] = ()):
        roots = {str(root), os.path.realpath(root)}
        self.roots = [Path(r) for r in roots]
        self._mention = re.compile(b"(?:" + b"|".join(re.escape(r.encode()) for r in roots) + rb")/([^/\"\\]+)/")
        self.public = {f for f in (self.folder(p) for p in public) if f}
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def folder(self, path: str) -> str | None:
        """The content-hash folder ``path`` lies in, or None when it is not in the upload folder."""
        real = Path(os.path.realpath(path))
        for root in self.roots:
            try:
                rel = real.relative_to(os.path.realpath(root))
            except ValueError:
                continue
            return rel.parts[0] if len(rel.parts) > 1 else ""
        return None

    def grant(self, text: bytes, token: str) -> None:
        """``token``'s login was sent ``text``: every upload folder it names becomes readable to it."""
        found = {m.decode("utf-8", "replace") for m in self._mention.findall(text)}
        if found:
            with self._lock:
                for f in found:
                    self._owners.setdefault(f, set()).add(token)

    def foreign(self, text: bytes, token: str) -> str | None:
        """An upload folder ``text`` names that ``token``'s login may not read, if any (a request
        naming another login's upload as an input would get it processed and shown)."""
        for m in set(self._mention.findall(text)):
            folder = m.decode("utf-8", "replace")
            if folder not in self.public:
                with self._lock:
                    if token not in self._owners.get(folder, ()):
                        return folder
        return None

    def allowed(self, path: str, token: str) -> bool:
        folder = self.folder(path)
        if folder is None or folder in self.public:
            return True  # not an upload (gradio's own checks apply) or an example
        with self._lock:
            return token in self._owners.get(folder, ())

    def forget_missing(self) -> None:
        with self._lock:
            self._owners = {f: t for f, t in self._owners.items() if any((r / f).exists() for r in self.roots)}


async def _json(send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *headers]})
    await send({"type": "http.response.body", "body": raw})


class WebGuard:
    """ASGI middleware inside gradio's FastAPI app (``launch(app_kwargs={"middleware": ...})``):
    throttles POST /login with ``throttle``; with ``files``, refuses /file= requests for
    uploads the caller's login was not handed and JSON requests (event inputs) that name them,
    and records what each login is handed in JSON and event-stream replies. The login is
    gradio's token cookie, checked against its tokens."""

    def __init__(self, app, throttle: LoginThrottle, files: FileScope | None = None):
        self.app, self.throttle, self.files = app, throttle, files

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path in LOGIN_PATHS:
            await self._login(scope, receive, send)
            return
        if self.files is None:
            await self.app(scope, receive, send)
            return
        token = _token(scope)
        if token is None:  # not logged in: gradio refuses what needs a login
            await self.app(scope, receive, send)
            return
        if "/file=" in path and method in ("GET", "HEAD"):
            target = path.split("/file=", 1)[1]
            if not self.files.allowed(target, token):
                await _json(send, 403, {"detail": f"File not allowed: {target}."})
                return
        if method == "POST" and _header(scope, b"content-type").startswith(b"application/json"):
            body, receive = await _buffered(receive)  # event inputs: small JSON, files are referred to by path
            if body is None:
                return
            folder = self.files.foreign(body, token)
            if folder is not None:
                await _json(send, 403, {"detail": f"File not allowed: {folder}."})
                return
        files, scan = self.files, False
        tail = b""

        async def send_scanned(message) -> None:
            nonlocal scan, tail
            if message["type"] == "http.response.start":
                kind = _header(message, b"content-type")
                scan = kind.startswith((b"application/json", b"text/event-stream"))
            elif scan and message["type"] == "http.response.body":
                chunk = tail + message.get("body", b"")
                files.grant(chunk, token)
                tail = chunk[-4096:]  # a path cut between two chunks is found in the next
            await send(message)

        await self.app(scope, receive, send_scanned)

    async def _login(self, scope, receive, send) -> None:
        client = scope["client"][0] if scope.get("client") else "-"
        wait = self.throttle.wait(client)
        if wait:
            await _json(send, 400, {"detail": TOO_MANY.format(s=wait)}, [(b"retry-after", str(wait).encode())])
            return
        self.throttle.attempt(client)
        status = 0

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if status == 200:
                self.throttle.succeeded(client)
            elif status != 400:  # 400 is a wrong user or password; anything else is not
                self.throttle.not_a_failure(client)


def _header(scope_or_message, name: bytes) -> bytes:
    return next((v for k, v in scope_or_message.get("headers", []) if k.lower() == name), b"").lower()


async def _buffered(receive):
    """(the whole request body, a receive that hands it over again), or (None, _) when the
    client went away before it was sent."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, receive
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


def _token(scope) -> str | None:
    """The caller's gradio login token, if it is a live one."""
    app = scope.get("app")
    cookie_id, tokens = getattr(app, "cookie_id", None), getattr(app, "tokens", None)
    if cookie_id is None or tokens is None:
        return None
    raw = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie"), "")
    cookies = cookie_parser(raw) if raw else {}
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return token if token in tokens else None
