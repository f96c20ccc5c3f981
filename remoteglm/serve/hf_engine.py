"""The ``Engine`` for transformers VLMs (GLM-4.1V, Qwen2.5-VL): the base's interface, locking and
image cache, with the folder's own chat template and ``model.generate`` underneath. Front ends get
one through ``remoteglm.serve.loading.load_engine``.
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import astuple, replace
from typing import Iterator, Sequence

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.prompt import process_partial_response, process_response
from remoteglm.model.hf_folder import Processor, chat_messages
from remoteglm.serve.engine import Engine, LoadedImage
from remoteglm.serve.generation import Reply
from remoteglm.serve.sampling import GenerationConfig

_THINK = re.compile(r"<think>.*?</think>", re.S)
_TAGS = re.compile(r"</?answer>")


def visible_answer(raw: str, final: bool) -> str:
    """What a reasoning model's raw output shows: the ``<think>`` part dropped (an unclosed one
    shows nothing yet), ``<answer>`` tags removed, then the toolkit's punctuation rule."""
    text = _THINK.sub("", raw)
    if "<think>" in text:
        text = text[: text.index("<think>")]
    text = _TAGS.sub("", text)
    if not final:
        text = text.rstrip("\ufffd")  # a character whose bytes are still arriving
        k = text.rfind("<")  # a tag still arriving
        if k >= 0 and ">" not in text[k:] and len(text) - k < 9:
            text = text[:k]
    return process_response(text) if final else process_partial_response(text)


class _Streamer:
    """``generate``'s streamer: calls ``push`` with each step's new token of every row."""

    def __init__(self, push):
        self.push, self.first = push, True

    def put(self, value):
        if self.first:  # generate passes the prompt first
            self.first = False
            return
        self.push(value.reshape(-1).tolist())

    def end(self):
        pass


class HFEngine(Engine):
    weights_label = "language-model weights"

    def __init__(self, model, processor: Processor, **kw):
        super().__init__(model, processor.tokenizer, **kw)
        self.processor = processor
        tok = processor.tokenizer
        keep = {tok.convert_tokens_to_ids(t) for t in ("<think>", "</think>", "<answer>", "</answer>")}
        self._hidden = (set(tok.all_special_ids) | set(processor.stop_ids)
                        | {i for i, t in tok.added_tokens_decoder.items() if t.special}) - keep
        # the front ends' defaults carry VisualGLM's 2048-token context: this model has its own
        self.defaults["max_length"] = self.context_length

    @property
    def speaker(self) -> str:
        return self.processor.family.label

    def image_fit(self, width: int, height: int) -> tuple[int, int]:
        """At most the area the processor keeps of an image (its max_pixels; GLM-4.1V counts an
        image as 2 frames of it), same shape; the processor itself rounds the sides."""
        area = self.processor.pixel_range()[1] / self.processor.family.frames_in_budget
        s = min(1.0, (area / max(1, width * height)) ** 0.5)
        return max(1, round(width * s)), max(1, round(height * s))

    def load_image(self, image):
        """As ``Engine.load_image``, and the image's shape must suit these models (not a strip over 200:1)."""
        from remoteglm.model.hf_folder import check_aspect

        loaded = super().load_image(image)
        if isinstance(loaded, LoadedImage):
            check_aspect(*loaded.size)
        return loaded

    # images: the processor's pixel rows and grid (cached like VisualGLM's embeddings)
    def _encode_images(self, images: list) -> list:
        """Each image through the processor on its own (its rows and grid are cached per image)."""
        out = []
        for image in images:
            try:
                out.append(image if isinstance(image, RemoteGLMError) else self._encode_image(image))
            except RemoteGLMError as e:
                out.append(e)
        return out

    def _encode_image(self, image):
        from remoteglm.model.image import load_image

        if isinstance(image, torch.Tensor):
            raise RemoteGLMError("this model takes images as files, bytes or PIL images, not pixel tensors")
        return self.processor.images([load_image(image, fit=self.image_fit)])

    def _inputs(self, encoded_list: Sequence, queries: Sequence[str], histories: Sequence,
                systems: Sequence | None = None) -> tuple[dict, list[int]]:
        """Left-padded batch inputs for generate; returns (inputs, prompt lengths)."""
        p = self.processor
        rows, pix, grids = [], [], []
        for enc, q, h, sy in zip(encoded_list, queries, histories, systems or [None] * len(queries)):
            text = p.render(chat_messages(q, list(h or []), enc is not None, system=sy), add_generation_prompt=True)
            rows.append(p.encode(text, enc["image_grid_thw"] if enc is not None else None))
            if enc is not None:
                pix.append(enc["pixel_values"])
                grids.append(enc["image_grid_thw"])
        n = max(len(r) for r in rows)
        pad = p.tokenizer.pad_token_id if p.tokenizer.pad_token_id is not None else p.stop_ids[0]
        dev = next(self.model.parameters()).device
        ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows], device=dev)
        inputs = {"input_ids": ids,
                  "attention_mask": torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows], device=dev),
                  "mm_token_type_ids": torch.tensor([[0] * (n - len(r)) + p.token_types(r) for r in rows], device=dev)}
        if pix:
            dtype = next(self.model.parameters()).dtype
            vis = getattr(getattr(self.model, "model", self.model), "visual", None)
            if vis is not None:
                dtype = next(vis.parameters()).dtype
            inputs["pixel_values"] = torch.cat(pix).to(dev, dtype)
            inputs["image_grid_thw"] = torch.cat(grids).to(dev)
        return inputs, [len(r) for r in rows]

    def _gen_kwargs(self, cfg: GenerationConfig, prompt_len: int) -> dict:
        room = max(1, cfg.max_length - prompt_len)
        new = min(cfg.max_new_tokens or room, room)
        kw = dict(max_new_tokens=new, do_sample=cfg.do_sample, repetition_penalty=cfg.repetition_penalty,
                  eos_token_id=self.processor.stop_ids, pad_token_id=self.processor.stop_ids[0])
        if cfg.do_sample:
            kw.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _decode(self, ids: list[int]) -> str:
        """The answer text: special tokens dropped except the reasoning tags ``visible_answer`` reads."""
        return self.processor.tokenizer.decode([i for i in ids if i not in self._hidden], skip_special_tokens=False)

    def batch_key(self, image, cfg: GenerationConfig) -> tuple:
        """Rows with and without an image share batches here (``_inputs`` pads them together)."""
        return astuple(replace(cfg, max_new_tokens=None))

    def _generate_rows(self, encoded: list, rows: Sequence) -> Iterator[tuple[int, Reply]]:
        """``generate`` for the rows at once, in a helper thread (it calls the streamer
        synchronously); ``(row, Reply)`` as answers grow. A row ends at a stop token, at its own
        ``max_new_tokens`` or when cancelled (a stopping criterion per row); abandoning the
        iterator stops ``generate`` at the next token."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        inputs, lens = self._inputs(encoded, [r.query for r in rows], [r.history for r in rows], [r.system for r in rows])
        width = inputs["input_ids"].shape[1]
        caps = [self._gen_kwargs(r.cfg, n)["max_new_tokens"] for r, n in zip(rows, lens)]
        kw = dict(self._gen_kwargs(rows[0].cfg, min(lens)), max_new_tokens=max(caps))
        if self.generator is not None:
            torch.manual_seed(int(self.generator.initial_seed()))
        asks = [r.cancelled or (lambda: False) for r in rows]
        q: queue.Queue = queue.Queue()
        abandoned = threading.Event()
        result: dict = {}

        class Ended(StoppingCriteria):
            def __call__(self, input_ids, scores, **_):
                made = input_ids.shape[1] - width
                stop = [abandoned.is_set() or made >= cap or bool(ask()) for cap, ask in zip(caps, asks)]
                return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

        def run():
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, **kw, streamer=_Streamer(q.put),
                                        stopping_criteria=StoppingCriteriaList([Ended()]))
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                result["error"] = e
            finally:
                q.put(None)

        stops = set(self.processor.stop_ids)
        answers: list[list[int]] = [[] for _ in rows]
        shown = [""] * len(rows)
        open_rows = list(range(len(rows)))

        def final(i: int, reason: str) -> tuple[int, Reply]:
            return i, Reply(visible_answer(self._decode(answers[i]), final=True), lens[i], len(answers[i]), reason)

        worker = threading.Thread(target=run, name="remoteglm-hf-generate", daemon=True)
        worker.start()
        try:
            while open_rows and (step := q.get()) is not None:
                for i in list(open_rows):
                    if asks[i]():
                        open_rows.remove(i)
                        continue
                    if step[i] in stops:
                        open_rows.remove(i)
                        yield final(i, "stop")
                        continue
                    answers[i].append(step[i])
                    if len(answers[i]) >= caps[i]:
                        open_rows.remove(i)
                        yield final(i, "length")
                        continue
                    if not rows[i].partial:
                        continue
                    text = visible_answer(self._decode(answers[i]), final=False)
                    if text != shown[i]:
                        shown[i] = text
                        yield i, Reply(text, lens[i], len(answers[i]))
        finally:
            abandoned.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        for i in open_rows:
            if not asks[i]():
                yield final(i, "length")

    def _batch(self, images, queries, histories, batch_size: int, cfg: GenerationConfig) -> list[str]:
        histories = list(histories) if histories is not None else [None] * len(queries)
        out: list[str] = []
        for i in range(0, len(queries), batch_size):
            enc = [self.embeddings(im) for im in images[i:i + batch_size]]
            inputs, lens = self._inputs(enc, queries[i:i + batch_size], histories[i:i + batch_size])
            kw = self._gen_kwargs(cfg, max(lens))
            if self.generator is not None:
                torch.manual_seed(int(self.generator.initial_seed()))
            with torch.inference_mode():
                gen = self.model.generate(**inputs, **kw)
            width = inputs["input_ids"].shape[1]
            for row in gen[:, width:].tolist():
                stops = set(self.processor.stop_ids)
                cut = next((k for k, t in enumerate(row) if t in stops), len(row))
                out.append(visible_answer(self._decode(row[:cut]), final=True))
        return out

    def prompt_tokens(self, query: str, history=None, english: bool = False, image=None, system: str | None = None) -> int:
        """Prompt tokens for ``query`` about ``image`` (its own size sets its tokens; ``True``: the
        largest image this resolution setting allows), after ``system`` in the template's system role."""
        p = self.processor
        has_image = image is not None and image is not False
        text = p.render(chat_messages(query, list(history or []), has_image, system=system), add_generation_prompt=True)
        n = len(p.tokenizer(text, add_special_tokens=False)["input_ids"])
        if has_image:
            size = (None, None)
            if image is not True:
                loaded = self.load_image(image)  # (a LoadedImage stays as it is: no second decode)
                size = loaded.size  # (a LoadedImage, or a PIL image given as it is)
            n += p.tokens_for(*size) - 1  # the placeholder becomes this many
        return n

    @property
    def context_length(self) -> int:
        cfg = getattr(self.model.config, "text_config", self.model.config)
        return int(getattr(cfg, "max_position_embeddings", 32768))
