"""A chat session about one image: the state a terminal (or any single-user front end) keeps
between turns, on top of an ``Engine``.

The image is checked and encoded when it is set (the engine caches its embeddings, so turns do
not re-encode a file or bytes); history is the official list of ``(question, answer)`` pairs, the
answers post-processed as the official chat stores them.
"""

from __future__ import annotations

from typing import Iterator

from remoteglm.serve.engine import Engine


class ChatSession:
    def __init__(self, engine: Engine, **gen):
        """``gen``: GenerationConfig fields for every turn (on top of the engine's defaults)."""
        self.engine = engine
        self.gen = gen
        engine.config(**gen)  # fail early on bad options
        self.image = None
        self.history: list[tuple[str, str]] = []

    @property
    def english(self) -> bool:
        return bool(self.gen.get("english", False))

    def set_image(self, image) -> None:
        """Use a new image (path, bytes, PIL, pixel tensor, or None for text only); clears history.
        RemoteGLMError (and the old image kept) when it cannot be read."""
        image = self.engine.load_image(image)  # decoded once
        with self.engine.lock:
            self.engine.embeddings(image)  # encoded now: a broken file fails here, not mid-answer
        self.image = image
        self.history = []

    def clear(self) -> None:
        self.history = []

    def stream(self, query: str, **gen) -> Iterator[str]:
        """Yield the growing answer; the turn joins the history when the answer is complete."""
        response, done = "", False
        for r in self.engine.stream(self.image, query, self.history, **{**self.gen, **gen}):
            response, done = r.text, r.finish_reason is not None
            yield response
        if done:
            self.history = self.history + [(query, response)]

    def boxes(self, answer: str) -> list:
        """The boxes of ``answer`` (about this session's image) in the image's original pixels."""
        return self.engine.boxes(answer, self.image)[0]

    def ask(self, query: str, **gen) -> str:
        response = ""
        for response in self.stream(query, **gen):
            pass
        return response
