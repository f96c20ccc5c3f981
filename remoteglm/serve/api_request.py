"""A chat request, parsed and checked into what the engine needs (``parse_chat_request``): the
question, the history, the system text, one image (``resolve_image``: a data URL's bytes or an
allowed local path), the sampling settings, stop strings and ``n``; an OpenAI field this server
does not do is refused by name (``unsupported``)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from remoteglm.serve.api_errors import APIError, validation_error
from remoteglm.serve.openai_schema import ChatCompletionRequest, ImageURL, TextPart


@dataclass
class ChatRequest:
    image: bytes | str | None
    query: str
    history: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    gen: dict
    stop: list[str]
    max_tokens_param: str = "max_tokens"
    system: str | None = None  # system / developer messages, joined
    n: int = 1  # choices


def _text_of(content, role: str, index: int) -> tuple[str, list]:
    """(text, image URLs) of a message's content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        if role != "user":
            raise APIError(400, f"messages[{index}]: images are only accepted in user messages", param=f"messages[{index}].content[{j}]")
        url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
        if not url:
            raise APIError(400, f"messages[{index}].content[{j}].image_url.url is missing", param=f"messages[{index}].content[{j}]")
        images.append(url)
    return "\n".join(texts), images


def resolve_image(url: str, allowed: Sequence[Path], max_bytes: int) -> bytes | str:
    """A data URL -> its bytes; a local path (plain or file://) under an allowed dir -> the path."""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise APIError(400, "bad image: a data URL must look like data:image/png;base64,<data>", param="image_url")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "bad image: the data URL is not valid base64", param="image_url") from None
        if not raw:
            raise APIError(400, "bad image: the data URL is empty", param="image_url")
        return raw
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise APIError(400, "bad image: remote image URLs are not fetched; send the image as a base64 data URL", param="image_url")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise APIError(400, f"bad image: file URL with host {parsed.netloc!r}", param="image_url")
        path = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # ("c:" would be a Windows drive)
        raise APIError(400, f"bad image: unsupported URL scheme {parsed.scheme!r}; use a data URL or a local path", param="image_url")
    else:
        path = url
    if not allowed:
        raise APIError(400, "bad image: this server reads no local files (start it with --allow_path DIR); send a base64 data URL",
                       param="image_url")
    p = Path(path).expanduser()
    if not p.is_absolute():
        raise APIError(400, f"bad image: local image paths must be absolute: {path}", param="image_url")
    real = p.resolve()  # symlinks and .. resolved before the check
    if not any(real.is_relative_to(d) for d in allowed):
        raise APIError(403, f"image path {path} is outside the directories this server may read", type_="permission_error",
                       param="image_url")
    if not real.is_file():
        raise APIError(400, f"bad image: no such file: {path}", param="image_url")
    if real.stat().st_size > max_bytes:
        raise APIError(413, f"image {path} is larger than the {max_bytes / 2**20:g} MB limit", code="request_too_large")
    return str(real)


# OpenAI fields that change nothing in an answer, accepted as they are; and fields accepted only
# at their "off" value (what a client library may send by default). Anything else is refused.
_NO_EFFECT = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "prompt_cache_retention",
              "safety_identifier", "parallel_tool_calls", "name"}
_OFF = {"tools": ([],), "functions": ([],), "tool_choice": ("none", "auto"), "function_call": ("none", "auto"),
        "logprobs": (False,), "top_logprobs": (0,), "frequency_penalty": (0,), "presence_penalty": (0,),
        "logit_bias": ({},), "response_format": ({"type": "text"},), "modalities": (["text"],), "tool_calls": ([],),
        **dict.fromkeys(("seed", "reasoning_effort", "verbosity", "audio", "prediction", "web_search_options", "refusal"), ())}


def unsupported(body: ChatCompletionRequest) -> None:
    """APIError 400 naming the first field of ``body`` (or of one of its messages) that asks for
    something this server does not do."""
    places = [("", body.model_extra)] + [(f"messages[{i}].", m.model_extra) for i, m in enumerate(body.messages)]
    for prefix, extra in places:
        for name, value in (extra or {}).items():
            if name in _NO_EFFECT or value is None or value in _OFF.get(name, [object()]):
                continue
            what = (f"{name} {json.dumps(value, ensure_ascii=False)[:80]} is not supported by this server"
                    if name in _OFF else f"unknown field {name!r}: not a chat-completion field this server takes")
            raise APIError(400, f"{prefix}{what} (remove it)", param=prefix + name, code="unsupported_parameter")


def parse_chat_request(body, allowed: Sequence[Path], max_bytes: int) -> ChatRequest:
    """An OpenAI chat request (a ``ChatCompletionRequest`` or its JSON object) -> what the engine
    needs; APIError (400/403/413) on bad input."""
    if not isinstance(body, ChatCompletionRequest):
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object (an OpenAI chat request)", code="invalid_request")
        try:
            body = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise validation_error(e.errors(), body) from None
    unsupported(body)
    system: list[str] = []
    turns: list[list] = []  # [role, text]
    image_url = None
    for i, m in enumerate(body.messages):
        text, images = _text_of(m.content, m.role, i)
        if images:
            image_url = images[-1]  # one image per conversation: the latest wins
        if m.role in ("system", "developer"):
            system.append(text)
        elif turns and turns[-1][0] == m.role:  # two user (or assistant) messages in a row: one turn
            turns[-1][1] = f"{turns[-1][1]}\n{text}"
        else:
            turns.append([m.role, text])
    if not turns or turns[-1][0] != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    if turns[0][0] == "assistant":
        turns.insert(0, ["user", ""])
    query = turns[-1][1]
    history = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns) - 1, 2)]
    sys_text = "\n".join(s for s in system if s) or None  # the engine places it as its family takes it
    if not query.strip():
        raise APIError(400, "the last user message has no text", param="messages")
    gen: dict = {}
    if body.temperature is not None:
        gen["temperature"] = float(body.temperature)  # 0 -> greedy (GenerationConfig.make)
    if body.top_p is not None:
        if body.top_p == 0:
            gen["do_sample"] = False
        else:
            gen["top_p"] = float(body.top_p)
    if body.top_k is not None:
        gen["top_k"] = body.top_k
    if body.repetition_penalty is not None:
        gen["repetition_penalty"] = float(body.repetition_penalty)
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    mt = body.max_completion_tokens or body.max_tokens
    if mt is not None:
        gen["max_new_tokens"] = mt
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if not all(stop) or len(stop) > 4:
        raise APIError(400, "stop must be a string or a list of up to 4 non-empty strings", param="stop")
    image = resolve_image(image_url, allowed, max_bytes) if image_url else None
    opts = body.stream_options
    return ChatRequest(image, query, history, body.stream, bool(opts and opts.include_usage), gen, stop, param, sys_text,
                       body.n or 1)
