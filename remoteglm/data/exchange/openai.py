"""OpenAI-style chat samples (a JSON list or JSON Lines of ``{"messages": [...]}``, as OpenAI's
vision fine-tuning files and the chat API write them), read into records:

    {"messages": [{"role": "user", "content": [{"type": "text", "text": "问题"},
                                               {"type": "image_url", "image_url": {"url": "file:///data/a.png"}}]},
                  {"role": "assistant", "content": "回答"}]}

An image part is ``{"type": "image_url", "image_url": {"url": URL}}`` (OpenAI; ``"image_url": URL``
too) or ``{"type": "image", "image": PATH}`` (the transformers / Qwen message form; ``url`` or
``path`` keys too). A URL is a local path, ``file://`` or a ``data:image/...;base64,`` URL, whose
bytes are stored under the output's folder by their content's hash; web URLs are refused (download
the images first). The one image goes in the first question; text parts are joined as the chat
templates join them, and the image is put before the question (as training renders it).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from remoteglm.data.exchange.common import Sample, meta_of, pair_turns
from remoteglm.errors import RemoteGLMError

_DATA_URL = re.compile(r"data:image/([a-zA-Z0-9.+-]+);base64,(.*)", re.S)
_SUFFIX = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp",
           "tiff": ".tif"}


def samples(path, rows: list[dict], drop_system: bool = False) -> list[Sample]:
    out = []
    for i, r in enumerate(rows):
        where = f"{path}: item {i}"
        msgs = r.get("messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            raise RemoteGLMError(f"{where}: no 'messages' list of {{role, content}} objects")
        turns, images = [], []
        for k, m in enumerate(msgs):
            role = m.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                raise RemoteGLMError(f"{where}: unknown role {role!r} (records hold user and assistant turns)")
            text, found = _content(m.get("content"), where)
            if found and (role != "user" or any(t[0] == "user" for t in turns)):
                raise RemoteGLMError(f"{where}: an image in a {role} turn after the first question; a record's "
                                     "one image is in its first question")
            images += found
            turns.append((role, text))
        if any(t[0] in ("system", "developer") for t in turns) and not drop_system:
            raise RemoteGLMError(f"{where}: has a system prompt, which records do not keep; pass --drop_system "
                                 "to leave it out")
        pairs = pair_turns([t for t in turns if t[0] in ("user", "assistant")], where)
        if len(images) != 1:
            raise RemoteGLMError(f"{where}: {len(images)} images; a record has one image (we train one image per sample)")
        image, suffix = _image(images[0], where)
        out.append(Sample(where, image, pairs, meta_of(r, where), suffix=suffix))
    return out


def _content(content: Any, where: str) -> tuple[str, list]:
    """(the text, the image references) of a message's content."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RemoteGLMError(f"{where}: a message's content is a {type(content).__name__}, not text or a list of parts")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            images.append(url.get("url") if isinstance(url, dict) else url)
        elif kind == "image":
            images.append(next((part[k] for k in ("image", "url", "path") if part.get(k)), None))
        else:
            raise RemoteGLMError(f"{where}: a content part of type {kind!r}; records take text and one image")
    return "".join(texts), images


def _image(url: Any, where: str) -> tuple[str | bytes, str]:
    """(a local path or the image's bytes, the file suffix for bytes)."""
    if not isinstance(url, str) or not url:
        raise RemoteGLMError(f"{where}: an image part without a URL or path")
    m = _DATA_URL.fullmatch(url.strip())
    if m:
        try:
            data = base64.b64decode(m.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise RemoteGLMError(f"{where}: the image's data URL is not valid base64") from None
        return data, _SUFFIX.get(m.group(1).lower(), "." + m.group(1).lower())
    if url.startswith("data:"):
        raise RemoteGLMError(f"{where}: a data URL that is not data:image/...;base64,...")
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise RemoteGLMError(f"{where}: the image is a web URL ({url[:60]}); download the images and point the "
                             "samples at the files")
    if parsed.scheme == "file":
        return str(Path(unquote(parsed.path))), ""
    return url, ""
