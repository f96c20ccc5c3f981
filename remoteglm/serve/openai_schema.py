"""The OpenAI wire format of the API as pydantic models: the chat request and its message parts,
the response bodies and the error body (they make the OpenAPI description at /docs)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(min_length=1, description="data:image/png;base64,... or a local path under an --allow_path directory")
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
    n: int | None = Field(None, ge=1, le=128, description="choices, generated together (at most --max_batch)")
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


class AnswerBox(BaseModel):
    bbox: list[float] = Field(description="x1, y1, x2, y2: pixels of the original image (top left, bottom right)")
    label: str | None = Field(None, description="what the answer names in front of the box")


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    boxes: list[AnswerBox] | None = Field(None, description="the answer's boxes in the image's original pixels, read with "
                                          "the model family's box format; only when the request has an image (streamed: "
                                          "in the delta of each choice's finish chunk)")


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
