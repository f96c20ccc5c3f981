"""The OpenAI wire format of the API: errors in OpenAI's one JSON shape (``APIError`` and the
app's error handler), the pydantic request and response bodies (the OpenAPI description), and
the parsing of a chat request into what the engine needs (``parse_chat_request``,
``resolve_image``)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Sequence, Union
from urllib.parse import unquote, urlparse

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from remoteglm.serve.engine import strip_control

ROUTES_HINT = "this server has GET /v1/models and POST /v1/chat/completions (docs: GET /docs)"


# ---- errors: one shape for all ---------------------------------------------------------------------
class APIError(StarletteHTTPException):
    """An HTTP error in OpenAI's JSON shape. A Starlette HTTPException, so FastAPI passes it on
    unchanged (from a route or from reading the body) to the app's one error handler."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ClientGone(APIError):
    """The client disconnected: its generation was stopped. Nobody reads the reply; the access
    log shows 499 (nginx's "client closed request")."""

    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection", code="client_closed_request")


def internal_error(exc: BaseException) -> APIError:
    """500 for an exception nobody expected (a CUDA out-of-memory, a bug). The same request
    would fail the same way, so clients are told not to retry it."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return APIError(500, f"internal error: {type(exc).__name__}{': ' + first if first else ''} "
                         "(the server's log has the details); retrying the same request is unlikely to help",
                    type_="server_error", code="internal_error", headers={"x-should-retry": "false"})


def shutting_down(cut: bool = False) -> APIError:
    what = "this answer was cut short" if cut else "no new answers are started"
    return APIError(503, f"the server is shutting down: {what}; retry once it is back", type_="server_error",
                    code="server_shutting_down", headers={"Retry-After": "5"})


def _input_path(body, loc: Sequence, missing: bool) -> list:
    """The part of pydantic's error location that names places in the input (union member tags
    such as ``str`` or ``list[...]`` dropped); a missing field's own name is kept."""
    node, out = body, []
    for i, key in enumerate(loc):
        if isinstance(node, dict) and isinstance(key, str) and key in node:
            out.append(key)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            out.append(key)
            node = node[key]
        elif missing and i == len(loc) - 1 and isinstance(key, str):
            out.append(key)
    return out


def _param_name(path: list) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else k) for i, k in enumerate(path))


def validation_error(errors: Sequence[dict], body, *, in_body: bool = False) -> APIError:
    """400 for a request that does not fit the schema, naming the most specific place (``param``,
    e.g. ``messages[0].content[1].image_url``) and what is wrong there."""
    best: tuple[list, dict] | None = None
    for e in errors:
        loc = list(e.get("loc", ()))
        if in_body and loc[:1] == ["body"]:
            loc = loc[1:]
        path = _input_path(body, loc, e.get("type") == "missing")
        if best is None or len(path) > len(best[0]):
            best = (path, e)
    if best is None:
        return APIError(400, "the request is not valid", code="invalid_request")
    path, e = best
    kind = e.get("type")
    if kind == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')})",
                        code="invalid_json")
    if not path and kind in ("missing", "model_attributes_type", "dict_type", "model_type"):
        return APIError(400, "the request body must be a JSON object (an OpenAI chat request)", code="invalid_request")
    param = _param_name(path)
    msg = e.get("msg", "invalid value")
    return APIError(400, f"{param}: {msg}" if param else msg, param=param or None, code="invalid_value")


def as_api_error(exc: BaseException, method: str = "", path: str = "") -> APIError:
    """Any exception as the error the client gets."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors(), exc.body, in_body=True)
    if isinstance(exc, StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return APIError(404, f"no route {method} {path}; {ROUTES_HINT}", code="unknown_url", headers=headers)
        if exc.status_code == 405:
            return APIError(405, f"{method} is not allowed on {path} (allowed: {headers.get('Allow', 'none')}); {ROUTES_HINT}",
                            code="method_not_allowed", headers=headers)
        return APIError(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error",
                        headers=headers)
    return internal_error(exc)


def error_response(err: APIError) -> JSONResponse:
    headers = dict(err.headers or {})
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The app's one error handler (routing's 404/405, validation, APIError, and any other
    exception, which uvicorn then logs with its traceback)."""
    return error_response(as_api_error(exc, request.method, request.url.path))


# ---- request and response bodies -------------------------------------------------------------------
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(min_length=1, description="data:image/png;base64,... or a local path under an --allow-path directory")
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: Union[ImageURL, str]


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Its other fields are refused (400 naming the field) unless they
    change nothing in an answer (``user``, ``metadata``, ...) or are at their "off" value
    (``tools: []``, ``logprobs: false``, ``frequency_penalty: 0``, ...): see ``unsupported``."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "model": "visualglm-6b", "max_tokens": 256, "stream": False,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "描述这张图片。"},
                                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]}]})
    model: str = Field(description="the served model's id (GET /v1/models) or one of its aliases")
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy")
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, description="VisualGLM extra")
    repetition_penalty: float | None = Field(None, ge=0.01, le=10, description="VisualGLM extra")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128, description="choices, generated together (at most --max-batch)")
    stop: Union[str, list[str], None] = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


ERROR_RESPONSES = {s: {"model": ErrorResponse} for s in (400, 401, 404, 429, 500, 503)}


# ---- requests -------------------------------------------------------------------------------------
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
        raise APIError(400, "bad image: this server reads no local files (start it with --allow-path DIR); send a base64 data URL",
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


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def _answer(text: str) -> str:
    """An answer as the API returns it: the engine's (post-processed like the official chat's)
    without control characters. Removing characters keeps each streamed text a prefix of the next."""
    return strip_control(text)
