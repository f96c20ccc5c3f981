"""On-disk cache of the frozen image features (EVA ViT -> Q-Former -> glm_proj), [32, hidden].

During LoRA tuning the image encoder never changes, so its output per image is computed once,
kept on disk keyed by the image's bytes and a fingerprint of the encoder's weights, and the
encoder is left out of GPU memory for the whole run. A changed image or a different base model
gives a different key, so a stale feature can never be used.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.io import file_digest, torch_save_atomic


def encoder_fingerprint(model) -> str:
    """Hash of the image encoder's weights: names, shapes and a strided sample of every tensor
    (the full 1B-parameter ViT would take too long to hash; a sample still changes with any
    real checkpoint or fine-tune of the encoder)."""
    enc = image_encoder(model)
    h = hashlib.sha256()
    for name, t in sorted(enc.state_dict().items()):
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def image_encoder(model) -> torch.nn.Module:
    inner = model.module if hasattr(model, "module") else model
    try:
        return inner.mixins["eva"].model
    except (AttributeError, KeyError):
        raise RemoteGLMError("this model has no image encoder (mixins.eva.model); is it a VisualGLM checkpoint?") from None


class FeatureCache:
    """``get(path) -> Tensor[32, hidden]``; ``fill(model, paths)`` computes what is missing."""

    def __init__(self, root: str | Path, model):
        self.fingerprint = encoder_fingerprint(model)
        self.root = Path(root) / self.fingerprint
        self.root.mkdir(parents=True, exist_ok=True)
        self._keys: dict[Path, str] = {}
        self.hits = 0
        self.computed = 0

    def key(self, path: Path) -> str:
        if path not in self._keys:
            self._keys[path] = file_digest(path)
        return self._keys[path]

    def file(self, path: Path) -> Path:
        k = self.key(path)
        return self.root / k[:2] / f"{k}.pt"

    def get(self, path: Path) -> torch.Tensor:
        f = self.file(Path(path))
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise RemoteGLMError(f"no cached feature for {path}; rerun the command so the cache is filled") from None

    @torch.no_grad()
    def fill(self, model, paths, device="cpu", dtype=torch.float32, batch_size: int = 8, rank: int = 0) -> None:
        """Compute and store features for images not yet cached. Each file is written atomically,
        so an interrupted fill resumes where it stopped."""
        from tqdm import tqdm

        from remoteglm.model.image import preprocess_image

        todo = [Path(p) for p in paths if not self.file(Path(p)).exists()]
        self.hits = len(paths) - len(todo)
        if not todo:
            return
        inner = model.module if hasattr(model, "module") else model
        enc = image_encoder(inner)
        home = next(enc.parameters()).device
        enc.to(device)
        try:
            bar = tqdm(total=len(todo), desc="image features", unit="img", disable=rank != 0, file=sys.stderr)
            for i in range(0, len(todo), batch_size):
                chunk, images = [], []
                for p in todo[i: i + batch_size]:
                    try:
                        images.append(preprocess_image(p))
                        chunk.append(p)
                    except RemoteGLMError as e:  # counted and skipped by the dataset later
                        print(f"warning: {e}", file=sys.stderr)
                if images:
                    feats = inner.encode_image(torch.stack(images).to(device, dtype))
                    for p, f in zip(chunk, feats):
                        torch_save_atomic(self.file(p), f.detach().to("cpu").clone())
                        self.computed += 1
                bar.update(len(todo[i: i + batch_size]))
            bar.close()
        finally:
            enc.to(home)
