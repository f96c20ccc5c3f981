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
- ``stream(image, query, history=None, *, system=None, **gen) -> Iterator[Reply]``, ``reply(...) -> Reply``: image
  is a path, bytes, PIL image, pixel tensor or None; ``gen``: GenerationConfig fields. Generations
  run one at a time (``lock``) in a worker thread; abandoning the iterator stops the worker at its
  next token. ``Reply.text`` is post-processed like the official chat (``process_response``);
  while streaming each text is a prefix of the next and of the final one.
- ``check_image(image)``: RemoteGLMError unless ``image`` decodes; ``load_image(image)``: decoded
  once, at the size the family uses, for ``stream`` (a ``LoadedImage``); ``config(**gen)``: the
  GenerationConfig a request would get (RemoteGLMError on bad values).
- Added: ``embeddings(image)`` (the cached image embeddings) and ``batch(images, queries,
  histories=None, *, batch_size=8, **gen) -> list[str]`` (evaluation's batched greedy answers).
- ``Reply(text, prompt_tokens, completion_tokens, finish_reason=None)``.
- Added for the second engine: ``prompt_tokens(query, history=None, english=False, image=None, system=None)``
  (the API's context checks; ``image``: the request's image, None for text only) and ``context_length``. A model family implements ``_encode_images``,
  ``_generate_rows`` and ``_batch``; ``hf_engine.HFEngine`` does so for the transformers families.
- Added for the API's batches: ``stream_rows(rows) -> Iterator[(row, Reply | RemoteGLMError)]``
  (several requests, ``Row`` objects, generated together: one forward pass per token for all;
  ``stream`` is one row of it) and ``batch_key(image, cfg)`` (which requests may share a batch).
  Front ends get either through ``remoteglm.serve.loading.load_engine(path, ...)``.

Text helpers for front ends: ``strip_control(text)`` and ``display_text(text, final=True)`` (what
a terminal or page shows: control characters removed, an empty final answer as ``EMPTY_ANSWER``).
The official punctuation rule (``process_response``, ``process_partial_response``) lives in
``remoteglm.model.prompt``; the engine applies it already.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections import OrderedDict
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from remoteglm.errors import RemoteGLMError
from remoteglm.model.prompt import encode_prompt
from remoteglm.serve.generation import Reply
from remoteglm.serve.sampling import CHAT_DEFAULTS, GenerationConfig

__all__ = ["EMPTY_ANSWER", "Engine", "LoadedImage", "Row", "display_text", "strip_control"]

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


@dataclass(frozen=True)
class LoadedImage:
    """An image read once (``Engine.load_image``): the PIL image at the size its family uses, its
    size, and the embeddings-cache key of its source (None: not cached). ``image`` is None when
    that source's encoding was cached already (nothing decoded); ``source`` then stays at hand in
    case the cache drops it before it is needed."""

    image: Any
    key: tuple | None
    size: tuple[int, int]
    source: Any = None


@dataclass
class Row:
    """One request of a batch (``Engine.stream_rows``): ``cfg`` from ``Engine.config``;
    ``cancelled``: asked before each token (None: never); ``partial``: replies while the answer
    grows (False: only the final one)."""

    image: Any
    query: str
    history: list = field(default_factory=list)
    cfg: GenerationConfig = field(default_factory=GenerationConfig)
    system: str | None = None
    cancelled: Callable[[], bool] | None = None
    partial: bool = True


class Engine:
    """One model shared by many users: generations run one at a time in a worker thread, image
    embeddings are cached (a client that resends the same image each turn pays for it once)."""

    weights_label = "ChatGLM weights"
    speaker = "VisualGLM"  # what the front ends call the model (titles, the CLI's answer prefix)

    def __init__(self, model, tokenizer, *, name: str = "visualglm-6b", quant: str = "", defaults: dict | None = None,
                 max_new_tokens: int | None = None, cache_images: int = 8, generator=None):
        self.model, self.tokenizer = model, tokenizer
        self.name, self.quant = name, quant
        self.defaults = dict(defaults or CHAT_DEFAULTS)
        self.max_new_tokens = max_new_tokens
        self.generator = generator
        self.lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()
        self._sizes: dict = {}  # the loaded size of cached images (load_image needs no decode for them)
        self._cache_size = cache_images
        GenerationConfig.make(self.defaults)  # bad defaults fail here, not on the first request

    # image embeddings, cached by content (bytes) or by file identity (path, mtime, size)
    @staticmethod
    def _key(image) -> tuple | None:
        if isinstance(image, LoadedImage):
            return image.key
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
        (out,) = self.embeddings_of([image])
        if isinstance(out, RemoteGLMError):
            raise out
        return out

    def embeddings_of(self, images: Sequence) -> list:
        """``embeddings`` of several images (None stays None): the cached ones from the cache, the
        others encoded together (``_encode_images``); a RemoteGLMError in the place of an image
        that cannot be read. Call under ``lock`` when other threads may generate."""
        out: list = [None] * len(images)
        need: dict = {}  # a source's cache key (or its place, when it has none) -> its places
        for k, image in enumerate(images):
            if image is None:
                continue
            try:
                key = self._key(image)
            except OSError as e:
                out[k] = RemoteGLMError(f"cannot read image {image}: {e.strerror or e}")
                continue
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                out[k] = self._cache[key]
                continue
            need.setdefault(key if key is not None else ("place", k), []).append(k)
        if not need:
            return out
        sources = [images[places[0]] for places in need.values()]
        encoded = self._encode_images([self._pixels(i) for i in sources])
        for (key, places), image, emb in zip(need.items(), sources, encoded):
            for k in places:
                out[k] = emb
            if key[0] != "place" and not isinstance(emb, RemoteGLMError):
                self._cache[key] = emb
                if isinstance(image, LoadedImage):
                    self._sizes[key] = image.size
        while len(self._cache) > self._cache_size:
            self._sizes.pop(self._cache.popitem(last=False)[0], None)
        return out

    def _pixels(self, image):
        """What ``_encode_images`` takes for ``image``: a LoadedImage's pixels (decoded again from
        its source if the cache dropped it since), bytes for a bytearray, else the image itself;
        a RemoteGLMError if it cannot be read."""
        try:
            if isinstance(image, LoadedImage):
                return image.image if image.image is not None else self.load_image(image.source).image
        except RemoteGLMError as e:
            return e
        return bytes(image) if isinstance(image, bytearray) else image

    # ---- what a model family implements (VisualGLM here; the transformers families in hf_engine.py) ----
    @staticmethod
    def _place_system(system: str | None, query: str, history: list) -> tuple[str, list]:
        """(query, history) with a system text where the family takes it. VisualGLM has no system
        role: the text goes before the first question (of the history, else of the query)."""
        if not system:
            return query, history
        if history:
            return query, [(f"{system}\n{history[0][0]}", history[0][1]), *history[1:]]
        return f"{system}\n{query}", history

    def _encode_images(self, images: list) -> list:
        """Each image (path, bytes, PIL image, pixel tensor; or a RemoteGLMError, passed on)
        encoded, in one pass of the image encoder for all; a RemoteGLMError in the place of one
        that cannot be read."""
        import torch

        from remoteglm.model.image import preprocess_image

        side = int(self.model.config.vit.image_size)
        out, pixels = list(images), []
        for k, image in enumerate(images):
            if isinstance(image, RemoteGLMError):
                continue
            try:
                pixels.append((k, image.reshape(3, *image.shape[-2:]) if isinstance(image, torch.Tensor)
                               else preprocess_image(image, side)))
            except RemoteGLMError as e:
                out[k] = e
        if pixels:
            with torch.no_grad():
                embeds = self.model.encode_image(torch.stack([p for _, p in pixels]))
            for (k, _), emb in zip(pixels, embeds.split(1)):
                out[k] = emb
        return out

    def _generate_rows(self, encoded: list, rows: Sequence["Row"]) -> Iterator[tuple[int, "Reply | RemoteGLMError"]]:
        """One batch: ``(row, Reply)`` as answers grow (see ``stream_rows``); ``encoded``: each
        row's ``embeddings``."""
        from remoteglm.serve.generation import stream_responses

        placed = [self._place_system(r.system, r.query, list(r.history or [])) for r in rows]
        return stream_responses(self.model, self.tokenizer, [q for q, _ in placed], [h for _, h in placed],
                                [r.cfg for r in rows], image_embeds=encoded, generator=self.generator,
                                cancelled=[r.cancelled for r in rows], partial=[r.partial for r in rows])

    def batch_key(self, image, cfg: GenerationConfig) -> tuple:
        """Requests with equal keys may share a batch (``stream_rows``): the same settings but for
        ``max_new_tokens``; VisualGLM also needs an image in every row or in none."""
        return (image is not None, *astuple(replace(cfg, max_new_tokens=None)))

    def _batch(self, images, queries, histories, batch_size: int, cfg: GenerationConfig) -> list[str]:
        from remoteglm.serve.generation import generate_batch

        return generate_batch(self.model, self.tokenizer, images, queries, histories, batch_size=batch_size,
                              generator=self.generator, config=cfg)

    def prompt_tokens(self, query: str, history=None, english: bool = False, image=None, system: str | None = None) -> int:
        """How many tokens the prompt for ``query`` (about ``image``, if not None; after ``system``)
        takes: for the API's context checks."""
        query, history = self._place_system(system, query, list(history or []))
        slots = self.model.image_length if image is not None and image is not False else None
        return len(encode_prompt(self.tokenizer, query, history, english=english, image_length=slots).ids)

    @property
    def context_length(self) -> int:
        """Prompt + answer tokens the model takes."""
        return int(getattr(self.model.config, "max_sequence_length", 2048))

    def image_fit(self, width: int, height: int) -> tuple[int, int]:
        """The size this family resizes a ``width`` x ``height`` image to (VisualGLM: its ViT's
        square, 224 x 224)."""
        side = int(self.model.config.vit.image_size)
        return side, side

    def load_image(self, image):
        """``image`` (a path or bytes) decoded once, reduced while decoding to what this family
        uses (``image_fit``), and checked: RemoteGLMError with the reason if it is not usable.
        The ``LoadedImage`` goes to ``stream`` like its source and keeps the source's place in
        the embeddings cache (a source encoded there already is not decoded again). Anything else
        (None, a PIL image, a pixel tensor) comes back as it is."""
        from remoteglm.model.image import load_image

        if not isinstance(image, (str, Path, bytes, bytearray)):
            return image
        src = bytes(image) if isinstance(image, bytearray) else image
        try:
            key = self._key(src)
        except OSError:  # (a missing file: load_image says so)
            key = None
        size = self._sizes.get(key)
        if size is not None and key in self._cache:  # these bytes, or this unchanged file, decoded and encoded before
            return LoadedImage(None, key, size, src)
        pixels = load_image(src, fit=self.image_fit)
        try:
            return LoadedImage(pixels, self._key(src), pixels.size)
        except OSError as e:
            raise RemoteGLMError(f"cannot read image {image}: {e.strerror or e}") from None

    def check_image(self, image) -> None:
        """``load_image`` without keeping the result: RemoteGLMError with the reason if ``image``
        is not usable."""
        self.load_image(image)

    def config(self, **gen) -> GenerationConfig:
        """The settings a request with ``gen`` gets: the engine's defaults, then ``gen``, then the
        server's ``max_new_tokens`` cap."""
        if self.max_new_tokens is not None:
            asked = gen.get("max_new_tokens")
            gen["max_new_tokens"] = min(asked, self.max_new_tokens) if asked else self.max_new_tokens
        return GenerationConfig.make(self.defaults, **gen)

    def stream_rows(self, rows: Sequence["Row"]) -> Iterator[tuple[int, "Reply | RemoteGLMError"]]:
        """Answers for several requests generated as one batch (one forward pass per token for
        all; their ``batch_key`` must agree). Yields ``(row, Reply)`` each time a row's answer
        grows (``Row.partial``), its last reply with ``finish_reason``; ``(row, RemoteGLMError)`` for a row whose own
        input fails (its image, its prompt's length), while the others go on. A row whose
        ``cancelled()`` answers True ends without a final reply and leaves the computation. Runs
        in the caller's thread under ``lock``; a failure of the batch itself (out of memory)
        is raised."""
        with self.lock:
            wanted = [i for i, r in enumerate(rows) if not (r.cancelled is not None and r.cancelled())]
            encoded, live = [], []
            for i, emb in zip(wanted, self.embeddings_of([rows[i].image for i in wanted])):
                if isinstance(emb, RemoteGLMError):
                    yield i, emb
                    continue
                encoded.append(emb)
                live.append(i)
            if live:
                for j, reply in self._generate_rows(encoded, [rows[i] for i in live]):
                    yield live[j], reply

    def stream(self, image, query: str, history: Sequence[tuple[str, str]] | None = None, *, system: str | None = None,
               **gen) -> Iterator[Reply]:
        """Yield growing replies for ``query`` about ``image`` (path, bytes, PIL, pixel tensor or
        None); the last one carries ``finish_reason``. ``system``: a system prompt (placed as the
        family takes it); ``gen``: GenerationConfig fields."""
        cfg = self.config(**gen)  # bad options fail here, in the caller's thread
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        row = Row(image, query, list(history or []), cfg, system, stop.is_set)

        def work() -> None:
            try:
                for _, r in self.stream_rows([row]):
                    if isinstance(r, BaseException):
                        raise r
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
