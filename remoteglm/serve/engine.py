"""The model engine behind every front end: the CLI (``cli.py``), the web demo (``web.py``), the
OpenAI-compatible API (``api.py``) and evaluation (``remoteglm.eval``).

    engine = VisualGLMEngine(model, tokenizer, name="visualglm-6b", defaults=CHAT_DEFAULTS)
    for r in engine.stream("tile.png", "描述这张图片。"):     # growing Reply objects
        print(display_text(r.text, final=r.finish_reason is not None))
    engine.reply(None, "你好").text                           # text only: the official 问：…\n答： prompt
    engine.batch(images, queries, max_new_tokens=64)          # evaluation: greedy, batched

``Engine`` is the family-neutral part: locking (``turns.FairLock``: first come first served), the worker thread, the image-embeddings cache and
the request settings. A model family subclasses it and implements its abstract hooks
(``weights_label``, ``speaker``, ``_encode_images``, ``_generate_rows``, ``batch_key``, ``_batch``,
``prompt_tokens``, ``context_length``, ``image_fit``): ``visualglm_engine.VisualGLMEngine`` for
VisualGLM, ``hf_engine.HFEngine`` for the transformers families. Front ends get one through
``remoteglm.serve.loading.load_engine(path, ...)`` and use only this interface (stable; the API
server relies on it):

- ``Engine(model, tokenizer, *, name, quant="", defaults=None, max_new_tokens=None, cache_images=8,
  generator=None)`` -- ``defaults``: the GenerationConfig values a request starts from
  (``CHAT_DEFAULTS`` when None; every defaults table carries ``max_new_tokens`` 512);
  ``max_new_tokens``: a server-side cap no request can exceed (None: none beyond the defaults);
  ``generator`` (the CLI's ``--seed``): the torch.Generator used for sampling.
- ``stream(image, query, history=None, *, system=None, **gen) -> Iterator[Reply]``, ``reply(...) -> Reply``: image
  is a path, bytes, PIL image, pixel tensor or None; ``gen``: GenerationConfig fields. Generations
  run one at a time (``lock``) in a worker thread; abandoning the iterator stops the worker at its
  next token. ``Reply.text`` is post-processed like the official chat (``process_response``);
  while streaming each text is a prefix of the next and of the final one.
- ``check_image(image)``: RemoteGLMError unless ``image`` decodes; ``load_image(image)``: decoded
  once, at the size the family uses, for ``stream`` (a ``LoadedImage``); ``config(**gen)``: the
  GenerationConfig a request would get (RemoteGLMError on bad values).
- ``embeddings(image)`` (the cached image encoding) and ``batch(images, queries, histories=None, *,
  batch_size=8, **gen) -> list[str]`` (evaluation's batched greedy answers).
- ``Reply(text, prompt_tokens, completion_tokens, finish_reason=None)``.
- ``prompt_tokens(query, history=None, english=False, image=None, system=None)`` (the API's context
  checks; ``image``: the request's image, None for text only) and ``context_length``.
- ``stream_rows(rows) -> Iterator[(row, Reply | RemoteGLMError)]`` (several requests, ``Row``
  objects, generated together: one forward pass per token for all; ``stream`` is one row of it)
  and ``batch_key(image, cfg)`` (which requests may share a batch).
- ``speaker`` (what titles and the CLI call the model) and ``weights_label`` (the start-up line).
- ``boxes(text, image) -> (boxes, failures)``: the boxes of an answer about ``image`` (its source
  or ``LoadedImage``) in the original image's pixels, read with ``box_codec`` (``serve.grounding``).

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
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.generation import Reply
from remoteglm.serve.grounding import answer_boxes
from remoteglm.serve.sampling import CHAT_DEFAULTS, GenerationConfig
from remoteglm.serve.turns import FairLock

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
    original: tuple[int, int] | None = None  # the source's own (upright) size: answers' boxes are in its pixels


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


class Engine(ABC):
    """One model shared by many users: generations run one at a time in a worker thread, image
    embeddings are cached (a client that resends the same image each turn pays for it once). The
    family-neutral part; a model family subclasses it and implements the abstract hooks.
    ``box_codec``: the family's box text at the resolution served (its ``load_engine`` sets it;
    None: answers have no boxes)."""

    box_codec = None

    def __init__(self, model, tokenizer, *, name: str = "model", quant: str = "", defaults: dict | None = None,
                 max_new_tokens: int | None = None, cache_images: int = 8, generator=None):
        self.model, self.tokenizer = model, tokenizer
        self.name, self.quant = name, quant
        self.defaults = dict(defaults or CHAT_DEFAULTS)
        self.max_new_tokens = max_new_tokens
        self.generator = generator
        self.lock = FairLock()  # first come first served: a long job's batches and chat requests take turns
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
        """The encoded image (what ``_encode_images`` makes: VisualGLM's embeddings [1, 32, hidden];
        None for None), from the cache when the same bytes or the same unchanged file were seen
        recently. Call under ``lock`` when other threads may generate."""
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

    # ---- what a model family implements (VisualGLMEngine in visualglm_engine.py, HFEngine in hf_engine.py) ----
    @property
    @abstractmethod
    def weights_label(self) -> str:
        """What the start-up line calls the weights whose quantisation ``quant`` describes."""

    @property
    @abstractmethod
    def speaker(self) -> str:
        """What the front ends call the model (titles, the CLI's answer prefix)."""

    @abstractmethod
    def _encode_images(self, images: list) -> list:
        """Each of ``images`` (path, bytes, PIL image, pixel tensor; or a RemoteGLMError, passed on)
        encoded for ``_generate_rows`` and ``_batch``, in the same order; a RemoteGLMError in the
        place of one that cannot be read or that this family does not take. What is returned is
        what ``embeddings`` caches."""

    @abstractmethod
    def _generate_rows(self, encoded: list, rows: Sequence["Row"]) -> Iterator[tuple[int, "Reply | RemoteGLMError"]]:
        """One batch, called under ``lock`` with the rows left after their images were encoded
        (``encoded``: each row's ``embeddings``, None for none): ``(row index, Reply)`` as answers
        grow, as ``stream_rows`` documents (each row's ``cfg``, ``system``, ``cancelled``,
        ``partial`` honoured; texts post-processed; a failure of the batch itself raised)."""

    @abstractmethod
    def batch_key(self, image, cfg: GenerationConfig) -> tuple:
        """Requests with equal keys may share a batch (``stream_rows``); requests that differ only
        in ``max_new_tokens`` must be able to."""

    @abstractmethod
    def _batch(self, images, queries, histories, batch_size: int, cfg: GenerationConfig) -> list[str]:
        """``batch``'s answers, final texts post-processed like ``stream``'s; called under ``lock``."""

    @abstractmethod
    def prompt_tokens(self, query: str, history=None, english: bool = False, image=None, system: str | None = None) -> int:
        """How many tokens the prompt for ``query`` (about ``image``, if not None; after ``system``)
        takes: for the API's context checks."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Prompt + answer tokens the model takes."""

    @abstractmethod
    def image_fit(self, width: int, height: int) -> tuple[int, int]:
        """The size this family resizes a ``width`` x ``height`` image to (``load_image`` decodes
        to it)."""

    def load_image(self, image):
        """``image`` (a path or bytes) decoded once, reduced while decoding to what this family
        uses (``image_fit``), and checked: RemoteGLMError with the reason if it is not usable.
        The ``LoadedImage`` goes to ``stream`` like its source and keeps the source's place in
        the embeddings cache (a source encoded there already is not decoded again). Anything else
        (None, a PIL image, a pixel tensor) comes back as it is."""
        from remoteglm.model.image import image_size, load_image

        if not isinstance(image, (str, Path, bytes, bytearray)):
            return image
        src = bytes(image) if isinstance(image, bytearray) else image
        try:
            key = self._key(src)
        except OSError:  # (a missing file: load_image says so)
            key = None
        size = self._sizes.get(key)
        if size is not None and key in self._cache:  # these bytes, or this unchanged file, decoded and encoded before
            return LoadedImage(None, key, size, src, image_size(src))
        pixels = load_image(src, fit=self.image_fit)
        try:
            return LoadedImage(pixels, self._key(src), pixels.size, original=image_size(src))
        except OSError as e:
            raise RemoteGLMError(f"cannot read image {image}: {e.strerror or e}") from None

    def boxes(self, text: str, image) -> tuple[list, int]:
        """(the boxes of answer ``text`` about ``image``, in the original image's pixels; how many
        could not be read), through ``box_codec``: ([], 0) without a codec or an image."""
        from remoteglm.model.image import image_size

        if isinstance(image, LoadedImage):
            return answer_boxes(self.box_codec, text, image.original or image.size, image.size)
        if isinstance(image, (str, Path, bytes, bytearray)):
            return answer_boxes(self.box_codec, text, image_size(image))
        if hasattr(image, "getexif"):  # a PIL image, used as it is
            return answer_boxes(self.box_codec, text, image.size)
        return [], 0  # no image, or pixel tensors (no original to measure boxes in)

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
