"""Where an LLM key may go, and that it is never shown.

``OPENAI_API_KEY`` is sent to OpenAI's own origin (https://api.openai.com:443) and nowhere else;
any other endpoint gets the key in the environment variable the user names (``--api_key_env
DEEPSEEK_API_KEY``), and a local server without one gets a placeholder. Every key chosen here is
remembered so that ``redact`` can take it out of any message before it is printed or written.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from urllib.parse import urlparse

from ..errors import RemoteGLMError

OPENAI_HOST = "api.openai.com"
LOCAL_HOSTS = {"localhost", "localhost.localdomain", "host.docker.internal"}
PLACEHOLDER_KEY = "not-needed"  # what a local server that wants no key gets
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[^\s\"',;)}\]]+")


def redact(text: str) -> str:
    """``text`` without any key this process has chosen and without ``Bearer <anything>``."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, "***")
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


def _remember(key: str) -> str:
    if key and key != PLACEHOLDER_KEY:
        with _secrets_lock:
            _secrets.add(key)
    return key


def is_local_host(host: str) -> bool:
    """Loopback, private-network and single-label hosts (a vLLM box on the LAN, a compose service)."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOCAL_HOSTS or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # "gpu-box", "ollama": a name only a local resolver knows
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in: a key belongs to one origin, so another
    port or an http downgrade of the same host is somewhere else."""
    u = urlparse(url)
    scheme = u.scheme.lower()
    try:
        port = u.port
    except ValueError:  # not a port number: matches no real origin
        port = -1
    return scheme, (u.hostname or "").lower().rstrip("."), port or {"http": 80, "https": 443}.get(scheme, 0)


def is_openai_host(base_url: str) -> bool:
    return origin(base_url) == ("https", OPENAI_HOST, 443)


def api_key_for(base_url: str, api_key_env: str | None = None) -> str:
    """The key to send to ``base_url``; raises RemoteGLMError (one line) when there is none to send.

    * ``api_key_env`` given: that environment variable, for any endpoint (it must be set);
    * https://api.openai.com: ``OPENAI_API_KEY``;
    * a local endpoint (loopback, private network): a placeholder - such servers want no key
      unless started with one (then name its variable with --api_key_env);
    * any other host: an error naming --api_key_env; ``OPENAI_API_KEY`` is never sent there.
    """
    u = urlparse(base_url)
    host = u.hostname or ""
    if u.scheme not in ("http", "https") or not host:
        raise RemoteGLMError(f"--base_url must look like https://host/v1 or http://127.0.0.1:8000/v1 (got {base_url!r})")
    if api_key_env:
        if not _ENV_NAME.fullmatch(api_key_env):  # likely the key itself: never echo it
            raise RemoteGLMError("--api_key_env takes the NAME of an environment variable holding the key "
                                 "(e.g. --api_key_env DEEPSEEK_API_KEY), not the key itself")
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise RemoteGLMError(f"${api_key_env} (named by --api_key_env) is not set or empty; "
                                 f"export {api_key_env}=... with the key for {host}")
        return _remember(key)
    if host.rstrip(".") == OPENAI_HOST and u.scheme != "https":
        raise RemoteGLMError(f"use https://{OPENAI_HOST}/v1: OPENAI_API_KEY is never sent over plain http")
    if is_openai_host(base_url):
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise RemoteGLMError(f"OPENAI_API_KEY is not set for {base_url}; export OPENAI_API_KEY=... "
                                 "(or name another variable with --api_key_env NAME)")
        return _remember(key)
    if is_local_host(host):
        return PLACEHOLDER_KEY
    raise RemoteGLMError(
        f"{host} is not OpenAI's host, so OPENAI_API_KEY is not sent there: put its key in an environment "
        f"variable and name it with --api_key_env (e.g. --api_key_env DEEPSEEK_API_KEY)"
    )
