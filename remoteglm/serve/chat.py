"""A chat session about one image: the state a CLI, web demo or API handler keeps between turns.

The image is encoded once per image (not once per turn); history is the official list of
``(question, answer)`` pairs. Generation itself lives in ``generation.py``.
"""

from __future__ import annotations

from typing import Iterator

import torch

from remoteglm.serve.generation import CHAT_DEFAULTS, GenerationConfig, image_embeddings, stream_chat


class ChatSession:
    def __init__(self, model, tokenizer, *, defaults: dict | None = None, generator: torch.Generator | None = None, **gen):
        self.model, self.tokenizer = model, tokenizer
        self.defaults = dict(defaults or CHAT_DEFAULTS)
        self.gen = gen
        GenerationConfig.make(self.defaults, **gen)  # fail early on bad options
        self.generator = generator
        self.image_embeds: torch.Tensor | None = None
        self.image_source = None
        self.history: list[tuple[str, str]] = []

    @property
    def english(self) -> bool:
        return bool(self.gen.get("english", False))

    def set_image(self, image) -> None:
        """Use a new image (path, bytes, PIL, pixel tensor, or None for text only); clears history."""
        self.image_embeds = image_embeddings(self.model, image)
        self.image_source = image
        self.history = []

    def clear(self) -> None:
        self.history = []

    def stream(self, query: str, **gen) -> Iterator[str]:
        """Yield the growing answer; the turn joins the history when the answer is complete."""
        response = ""
        for response, _ in stream_chat(
            self.model, self.tokenizer, None, query, self.history,
            image_embeds=self.image_embeds, defaults=self.defaults, generator=self.generator, **{**self.gen, **gen},
        ):
            yield response
        self.history = self.history + [(query, response)]

    def ask(self, query: str, **gen) -> str:
        response = ""
        for response in self.stream(query, **gen):
            pass
        return response
