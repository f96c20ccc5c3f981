"""The ``Engine`` for VisualGLM-6B on SwissArmyTransformer: images through EVA-CLIP + Q-Former
into 32 prompt embeddings, the official 问：…\\n答： prompt, and the toolkit's own token loop
(``remoteglm.serve.generation``). Front ends get one through ``remoteglm.serve.loading.load_engine``.

    engine = VisualGLMEngine(model, tokenizer, name="visualglm-6b", defaults=CHAT_DEFAULTS)
"""

from __future__ import annotations

from dataclasses import astuple, replace
from typing import Iterator, Sequence

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.image import preprocess_image
from remoteglm.model.prompt import encode_prompt
from remoteglm.serve.engine import Engine, Row
from remoteglm.serve.generation import Reply, generate_batch, stream_responses
from remoteglm.serve.sampling import GenerationConfig

__all__ = ["VisualGLMEngine"]


class VisualGLMEngine(Engine):
    weights_label = "ChatGLM weights"
    speaker = "VisualGLM"

    def __init__(self, model, tokenizer, *, name: str = "visualglm-6b", **kw):
        super().__init__(model, tokenizer, name=name, **kw)

    @staticmethod
    def _place_system(system: str | None, query: str, history: list) -> tuple[str, list]:
        """(query, history) with a system text where VisualGLM takes it: it has no system role,
        so the text goes before the first question (of the history, else of the query)."""
        if not system:
            return query, history
        if history:
            return query, [(f"{system}\n{history[0][0]}", history[0][1]), *history[1:]]
        return f"{system}\n{query}", history

    def _encode_images(self, images: list) -> list:
        """The images' embeddings [1, 32, hidden], in one pass of the image encoder for all."""
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

    def _generate_rows(self, encoded: list, rows: Sequence[Row]) -> Iterator[tuple[int, Reply | RemoteGLMError]]:
        placed = [self._place_system(r.system, r.query, list(r.history or [])) for r in rows]
        return stream_responses(self.model, self.tokenizer, [q for q, _ in placed], [h for _, h in placed],
                                [r.cfg for r in rows], image_embeds=encoded, generator=self.generator,
                                cancelled=[r.cancelled for r in rows], partial=[r.partial for r in rows])

    def batch_key(self, image, cfg: GenerationConfig) -> tuple:
        """The same settings but for ``max_new_tokens``, and an image in every row or in none (the
        image's 32 slots sit in the prompt)."""
        return (image is not None, *astuple(replace(cfg, max_new_tokens=None)))

    def _batch(self, images, queries, histories, batch_size: int, cfg: GenerationConfig) -> list[str]:
        return generate_batch(self.model, self.tokenizer, images, queries, histories, batch_size=batch_size,
                              generator=self.generator, config=cfg)

    def prompt_tokens(self, query: str, history=None, english: bool = False, image=None, system: str | None = None) -> int:
        query, history = self._place_system(system, query, list(history or []))
        slots = self.model.image_length if image is not None and image is not False else None
        return len(encode_prompt(self.tokenizer, query, history, english=english, image_length=slots).ids)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_sequence_length", 2048))

    def image_fit(self, width: int, height: int) -> tuple[int, int]:
        """Its ViT's square (224 x 224), whatever the image's shape."""
        side = int(self.model.config.vit.image_size)
        return side, side
