"""The API server's logs: ``remoteglm.api`` (errors) and ``remoteglm.api.access`` (one line per
request), timestamped, with control characters a client sent written as escapes. Shared by the application
(``api_guard``, ``api_queue``) and the transport (``api_transport``)."""

from __future__ import annotations

import logging
from datetime import datetime

log = logging.getLogger("remoteglm.api")
access_log = logging.getLogger("remoteglm.api.access")


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable (ESC, CR and the other C0/C1 controls,
    bidirectional marks, other invisible format characters) written as a ``\\xNN`` / ``\\uNNNN``
    escape: a log line shows what a client sent instead of letting it move the cursor, clear the
    screen or fake another line. ``keep``: characters left as they are."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or c in keep:
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


class EscapingFormatter(logging.Formatter):
    """Log records with control characters escaped (newlines kept: tracebacks stay readable),
    by default each after its time in ISO 8601, local with the UTC offset, to the millisecond."""

    def __init__(self, fmt: str = "%(asctime)s %(message)s"):
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record), keep="\n")


def request_line(scope) -> str:
    """The request as the access log shows it: the path decoded (readable, 中文 included), which
    is why every log line goes through ``escape_controls``."""
    target = scope.get("path") or "-"
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("utf-8", "backslashreplace")
    return f"{scope.get('method', '-')} {target} HTTP/{scope.get('http_version', '1.1')}"


def client_address(scope_or_addr) -> str:
    """"host:port" of an ASGI scope's client (or of an address pair); "-" when unknown."""
    addr = scope_or_addr.get("client") if isinstance(scope_or_addr, dict) else scope_or_addr
    return f"{addr[0]}:{addr[1]}" if addr else "-"


def log_access(client: str, request_line: str, status: int, seconds: float | None = None) -> None:
    took = f" {seconds:.3f}s" if seconds is not None else ""
    access_log.info("%s", escape_controls(f'{client} "{request_line}" {status}{took}'))
