"""The model engine behind every front end: the CLI (``cli.py``), the web demo (``web.py``), the
OpenAI-compatible API (``api.py``) and evaluation (``remoteglm.eval``).

    engine = Engine(model, tokenizer, name="visualglm-6b", defaults=CHAT_DEFAULTS)
    for r in engine.stream("tile.png", "描述这张图片。"):     # growing Reply objects
        print(display_text(r.text, final=r.finish_reason is not None))
    engine.reply(None, "你好").text                           # text only: the official 问：…\\n答： prompt
    engine.batch(images, queries, max_new_tokens=64)          # evaluation: greedy, batched

Interface (stable; the API server relies on it):

- ``Engine(model, tokenizer, *, name="visualglm-6b", quant="", defaults=None, max_new_tokens=None,
  cache_images=8, generator=None)`` -- ``defaults``: the GenerationConfig values a request starts
  from (``CHAT_DEFAULTS`` when None; every defaults table carries ``max_new_tokens`` 512);
  ``max_new_tokens``: a server-side cap no request can exceed (None: none beyond the defaults);
  ``generator`` (added for the CLI's ``--seed``): the torch.Generator used for sampling.
- ``stream(image, query, history=None, **gen) -> Iterator[Reply]``, ``reply(...) -> Reply``: image
  is a path, bytes, PIL image, pixel tensor or None; ``gen``: GenerationConfig fields. Generations
  run one at a time (``lock``) in a worker thread; abandoning the iterator stops the worker at its
  next token. ``Reply.text`` is post-processed like the official chat (``process_response``);
  while streaming each text is a prefix of the next and of the final one.
- ``check_image(image)``: RemoteGLMError unless ``image`` decodes; ``config(**gen)``: the
  GenerationConfig a request would get (RemoteGLMError on bad values).
- Added: ``embeddings(image)`` (the cached image embeddings) and ``batch(images, queries,
  histories=None, *, batch_size=8, **gen) -> list[str]`` (evaluation's batched greedy answers).
- ``Reply(text, prompt_tokens, completion_tokens, finish_reason=None)``.
- Added for the second engine: ``prompt_tokens(query, history=None, english=False, image=None)``
  (the API's context checks; ``image``: the request's image, None for text only) and ``context_length``. A model family implements ``_encode_image``,
  ``_generate`` and ``_batch``; ``vlm_engine.VLMEngine`` does so for GLM-4.1V / Qwen2.5-VL.
  Front ends get either through ``remoteglm.serve.loading.load_engine(path, ...)``.

Text helpers for front ends (also importable from here): ``process_response(text)`` and
``process_partial_response(text)`` (the official punctuation rule; the engine applies them
already), ``strip_control(text)`` and ``display_text(text, final=True)`` (what a terminal or page
shows: control characters removed, an empty final answer as ``EMPTY_ANSWER``).
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

from remoteglm.errors import RemoteGLMError
from remoteglm.model.prompt import process_partial_response, process_response  # noqa: F401 - re-exported
from remoteglm.serve.generation import CHAT_DEFAULTS, GenerationConfig, Reply  # noqa: F401 - Reply re-exported

__all__ = ["EMPTY_ANSWER", "Engine", "Reply", "display_text", "process_partial_response", "process_response",
           "strip_control"]

EMPTY_ANSWER = "（空回答） (empty answer)"
# C0 and C1 control characters except \t and \n (\r, \x0b, \x04, ESC...: they move the cursor,
# clear the screen or start escape sequences in a terminal), and the bidirectional embedding,
# override and isolate marks, which reorder how the following text is displayed.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def strip_control(text: str) -> str:
    """``text`` without control characters (tab and newline kept)."""
    return _CONTROL.sub("", text)


def display_text(text: str, final: bool = True) -> str:
    """An answer as a terminal or web page should show it: control characters removed, stripped;
    a final answer with nothing left is ``EMPTY_ANSWER``. Partial texts (``final=False``) of one
    stream stay prefixes of each other and of the final text, as the engine's are."""
    shown = strip_control(text).strip()
    return shown if shown or not final else EMPTY_ANSWER


class Engine:
    """One model shared by many users: generations run one at a time in a worker thread, image
    embeddings are cached (a client that resends the same image each turn pays for it once)."""

    def __init__(self, model, tokenizer, *, name: str = "visualglm-6b", quant: str = "", defaults: dict | None = None,
                 max_new_tokens: int | None = None, cache_images: int = 8, generator=None):
        self.model, self.tokenizer = model, tokenizer
        self.name, self.quant = name, quant
        self.defaults = dict(defaults or CHAT_DEFAULTS)
        self.max_new_tokens = max_new_tokens
        self.generator = generator
        self.lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_images
        GenerationConfig.make(self.defaults)  # bad defaults fail here, not on the first request

    # image embeddings, cached by content (bytes) or by file identity (path, mtime, size)
    @staticmethod
    def _key(image) -> tuple | None:
        if isinstance(image, (bytes, bytearray)):
            return ("bytes", hashlib.sha256(image).hexdigest())
        if isinstance(image, (str, Path)):
            p = Path(image)
            st = p.stat()
            return ("path", str(p.resolve()), st.st_mtime_ns, st.st_size)
        return None  # a PIL image or a pixel tensor: encoded each time

    def embeddings(self, image):
        """The encoded image (VisualGLM: embeddings [1, 32, hidden]; None for None), from the cache
        when the same bytes or the same unchanged file were seen recently. Call under ``lock``
        when other threads may generate."""
        if image is None:
            return None
        try:
            key = self._key(image)
        except OSError as e:
            raise RemoteGLMError(f"cannot read image {image}: {e.strerror or e}") from None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        emb = self._encode_image(bytes(image) if isinstance(image, bytearray) else image)
        if key is not None:
            self._cache[key] = emb
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return emb

    # ---- what a model family implements (VisualGLM here; transformers VLMs in vlm_engine.py) ----
    def _encode_image(self, image):
        from remoteglm.serve.generation import image_embeddings

        return image_embeddings(self.model, image)

    def _generate(self, encoded, query: str, history: list, cfg: GenerationConfig, cancelled) -> Iterator[Reply]:
        from remoteglm.serve.generation import stream_response

        return stream_response(self.model, self.tokenizer, query, history, cfg, image_embeds=encoded,
                               generator=self.generator, cancelled=cancelled)

    def _batch(self, images, queries, histories, batch_size: int, cfg: GenerationConfig) -> list[str]:
        from remoteglm.serve.generation import generate_batch

        return generate_batch(self.model, self.tokenizer, images, queries, histories, batch_size=batch_size,
                              generator=self.generator, config=cfg)

    def prompt_tokens(self, query: str, history=None, english: bool = False, image=None) -> int:
        """How many tokens the prompt for ``query`` (about ``image``, if not None) takes: for the
        API's context checks."""
        from remoteglm.serve.generation import encode_prompt

        slots = self.model.image_length if image is not None and image is not False else None
        return len(encode_prompt(self.tokenizer, query, history, english, slots)[0])

    @property
    def context_length(self) -> int:
        """Prompt + answer tokens the model takes."""
        return int(getattr(self.model.config, "max_sequence_length", 2048))

    def check_image(self, image) -> None:
        """Decode ``image`` fully (no model): RemoteGLMError with the reason if it is not usable."""
        from remoteglm.model.image import load_image

        if image is None or not isinstance(image, (str, Path, bytes, bytearray)):
            return  # nothing to read (text only), or already decoded (PIL image, pixel tensor)
        load_image(bytes(image) if isinstance(image, bytearray) else image)

    def config(self, **gen) -> GenerationConfig:
        """The settings a request with ``gen`` gets: the engine's defaults, then ``gen``, then the
        server's ``max_new_tokens`` cap."""
        if self.max_new_tokens is not None:
            asked = gen.get("max_new_tokens")
            gen["max_new_tokens"] = min(asked, self.max_new_tokens) if asked else self.max_new_tokens
        return GenerationConfig.make(self.defaults, **gen)

    def stream(self, image, query: str, history: Sequence[tuple[str, str]] | None = None, **gen) -> Iterator[Reply]:
        """Yield growing replies for ``query`` about ``image`` (path, bytes, PIL, pixel tensor or
        None); the last one carries ``finish_reason``. ``gen``: GenerationConfig fields."""
        cfg = self.config(**gen)  # bad options fail here, in the caller's thread
        history = list(history or [])
        out: queue.Queue = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                with self.lock:
                    if stop.is_set():
                        return
                    emb = self.embeddings(image)
                    for r in self._generate(emb, query, history, cfg, stop.is_set):
                        out.put(r)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                out.put(e)
            finally:
                out.put(None)

        worker = threading.Thread(target=work, name="remoteglm-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def reply(self, image, query: str, history=None, **gen) -> Reply:
        """The final reply of ``stream``."""
        last = Reply("", 0, 0, "stop")
        for last in self.stream(image, query, history, **gen):
            pass
        return last

    def batch(self, images: Sequence, queries: Sequence[str], histories: Sequence | None = None, *,
              batch_size: int = 8, **gen) -> list[str]:
        """Answers for many (image, query) pairs, ``batch_size`` at a time (greedy unless
        ``do_sample=True``), post-processed like ``stream``'s. Runs in the caller's thread, under
        the lock."""
        gen.setdefault("do_sample", False)
        cfg = self.config(**gen)
        with self.lock:
            return self._batch(images, queries, histories, batch_size, cfg)
