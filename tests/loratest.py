"""A LoRA model whose adapters really change its output (sat initialises B to zero)."""

import torch


def add_random_lora(model, rank: int = 4, seed: int = 0, scale: float = 0.05):
    from remoteglm.model.lora import add_lora

    add_lora(model, rank)
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "matrix_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * scale)
    return model
