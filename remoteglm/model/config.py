"""VisualGLM configurations: small dataclasses, one registry, and the two on-disk spellings.

A config converts to and from the official sat ``model_config.json`` (``eva_args`` /
``qformer_args`` nested dicts, ``lora_rank``, ``layer_range`` ...) and the HF ``config.json``
(``eva_config`` / ``qformer_config``). Unknown fields of a user's file are kept in ``extra`` and
written back, so a load/save round trip does not lose them.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

from remoteglm.errors import RemoteGLMError

# model_class values the official code and RemoteGLM/XrayGLM fine-tunes write.
SAT_MODEL_CLASSES = ("VisualGLMModel", "FineTuneVisualGLMModel")
HF_ARCHITECTURE = "ChatGLMForConditionalGenerationWithImage"


@dataclass
class ViTConfig:
    """EVA-CLIP ViT (last layer already dropped: 39 of ViT-g's 40 layers)."""

    num_layers: int = 39
    hidden_size: int = 1408
    num_attention_heads: int = 16
    inner_hidden_size: int = 6144
    image_size: int = 224
    patch_size: int = 14
    in_channels: int = 3
    layernorm_epsilon: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_sat(self) -> dict:
        # The field set of the official eva_args (sat ViTModel args, plus no final LayerNorm).
        return {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "vocab_size": 1,  # the CLS token
            "layernorm_order": "pre",
            "model_parallel_size": 1,
            "max_sequence_length": self.num_patches + 1,
            "inner_hidden_size": self.inner_hidden_size,
            "use_final_layernorm": False,
            "layernorm_epsilon": self.layernorm_epsilon,
            "image_size": [self.image_size, self.image_size],
            "pre_len": 1,
            "post_len": 0,
            "in_channels": self.in_channels,
            "num_classes": 0,
            "patch_size": self.patch_size,
        }

    @classmethod
    def from_sat(cls, d: dict) -> "ViTConfig":
        size = d.get("image_size", 224)
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or size[0] != size[1]:
                raise RemoteGLMError(f"eva_args.image_size {size} is not square; VisualGLM uses [224, 224]")
            size = size[0]
        return cls(
            num_layers=int(d["num_layers"]),
            hidden_size=int(d["hidden_size"]),
            num_attention_heads=int(d["num_attention_heads"]),
            inner_hidden_size=int(d.get("inner_hidden_size") or 4 * int(d["hidden_size"])),
            image_size=int(size),
            patch_size=int(d.get("patch_size", 14)),
            in_channels=int(d.get("in_channels", 3)),
            layernorm_epsilon=float(d.get("layernorm_epsilon", 1e-6)),
        )


@dataclass
class QFormerConfig:
    """BLIP-2 Q-Former: post-LN BERT, learned queries as its vocabulary, cross-attn on some layers."""

    num_layers: int = 12
    hidden_size: int = 768
    num_attention_heads: int = 12
    num_query_tokens: int = 32
    cross_attn_hidden_size: int = 1408
    cross_attention_freq: int = 2  # cross-attention on layers 0, freq, 2*freq, ...
    layernorm_epsilon: float = 1e-12
    inner_hidden_size: int | None = None

    @property
    def is_decoder(self) -> list[bool]:
        return [i % self.cross_attention_freq == 0 for i in range(self.num_layers)]

    def to_sat(self) -> dict:
        d = {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "vocab_size": self.num_query_tokens,
            "layernorm_order": "post",
            "model_parallel_size": 1,
            "max_sequence_length": 0,  # no position embeddings
            "is_decoder": self.is_decoder,
            "cross_attn_hidden_size": self.cross_attn_hidden_size,
            "layernorm_epsilon": self.layernorm_epsilon,
        }
        if self.inner_hidden_size is not None:
            d["inner_hidden_size"] = self.inner_hidden_size
        return d

    @classmethod
    def from_sat(cls, d: dict) -> "QFormerConfig":
        n = int(d["num_layers"])
        dec = d.get("is_decoder", [i % 2 == 0 for i in range(n)])
        if isinstance(dec, bool):
            dec = [dec] * n
        freq = next((f for f in range(1, n + 1) if [i % f == 0 for i in range(n)] == list(dec)), None)
        if freq is None:
            raise RemoteGLMError(
                f"qformer_args.is_decoder {dec} is not 'cross-attention every k-th layer from layer 0'; "
                "VisualGLM uses [true, false, true, ...]"
            )
        return cls(
            num_layers=n,
            hidden_size=int(d["hidden_size"]),
            num_attention_heads=int(d["num_attention_heads"]),
            num_query_tokens=int(d.get("vocab_size", 32)),
            cross_attn_hidden_size=int(d["cross_attn_hidden_size"]),
            cross_attention_freq=freq,
            layernorm_epsilon=float(d.get("layernorm_epsilon", 1e-12)),
            inner_hidden_size=d.get("inner_hidden_size"),
        )


# ChatGLM fields that both formats spell the same way.
_GLM_FIELDS = (
    "num_layers", "hidden_size", "num_attention_heads", "vocab_size", "inner_hidden_size",
    "max_sequence_length", "layernorm_epsilon", "image_length",
    "bos_token_id", "eos_token_id", "mask_token_id", "gmask_token_id", "pad_token_id",
)
# sat fields we write ourselves (everything else of a user's file goes to ``extra``).
_SAT_OWN = set(_GLM_FIELDS) | {
    "model_class", "model_parallel_size", "layernorm_order", "eva_args", "qformer_args",
    "lora_rank", "layer_range", "use_lora", "use_qlora", "lora_alpha",
}
_HF_OWN = set(_GLM_FIELDS) | {
    "architectures", "model_type", "eva_config", "qformer_config", "torch_dtype", "position_encoding_2d",
}


@dataclass
class VisualGLMConfig:
    """ChatGLM-6B arguments at the top level (as in sat), the vision towers nested."""

    name: str = "visualglm-6b"
    num_layers: int = 28
    hidden_size: int = 4096
    num_attention_heads: int = 32
    vocab_size: int = 130528
    inner_hidden_size: int | None = 16384
    max_sequence_length: int = 2048
    layernorm_epsilon: float = 1e-5
    image_length: int = 32
    bos_token_id: int = 130004  # <sop>
    eos_token_id: int = 130005  # <eop>
    mask_token_id: int = 130000
    gmask_token_id: int = 130001
    pad_token_id: int = 3
    vit: ViTConfig = field(default_factory=ViTConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    # LoRA as the official fine-tune records it; lora_rank > 0 alone does not mean LoRA layers
    # exist (the official base model_config.json says lora_rank 10 with use_lora false).
    lora_rank: int = 0
    layer_range: list[int] | None = None
    use_lora: bool = False
    use_qlora: bool = False
    lora_alpha: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise RemoteGLMError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.image_length != self.qformer.num_query_tokens:
            raise RemoteGLMError(
                f"image_length {self.image_length} must equal the Q-Former's query count {self.qformer.num_query_tokens}"
            )
        if self.qformer.cross_attn_hidden_size != self.vit.hidden_size:
            raise RemoteGLMError(
                f"qformer cross_attn_hidden_size {self.qformer.cross_attn_hidden_size} must equal the ViT width {self.vit.hidden_size}"
            )

    @property
    def has_lora(self) -> bool:
        return self.use_lora or self.use_qlora

    # ---- sat model_config.json -------------------------------------------------------------
    def to_sat_dict(self) -> dict:
        d = dict(self.extra)
        d.update({
            "model_class": "FineTuneVisualGLMModel" if self.has_lora else "VisualGLMModel",
            "model_parallel_size": 1,  # sat's from_pretrained reads it (AttributeError without)
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "vocab_size": self.vocab_size,
            "layernorm_order": "post",
            "inner_hidden_size": self.inner_hidden_size,
            "max_sequence_length": self.max_sequence_length,
            "layernorm_epsilon": self.layernorm_epsilon,
            "image_length": self.image_length,
            "eva_args": self.vit.to_sat(),
            "qformer_args": self.qformer.to_sat(),
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "mask_token_id": self.mask_token_id,
            "gmask_token_id": self.gmask_token_id,
            "pad_token_id": self.pad_token_id,
            "lora_rank": self.lora_rank,
            "layer_range": self.layer_range,
            "use_lora": self.use_lora,
            "use_qlora": self.use_qlora,
        })
        if self.lora_alpha != 1.0:
            d["lora_alpha"] = self.lora_alpha
        return d

    @classmethod
    def from_sat_dict(cls, d: dict, source: str = "model_config.json") -> "VisualGLMConfig":
        mc = d.get("model_class", "VisualGLMModel")
        if mc not in SAT_MODEL_CLASSES:
            raise RemoteGLMError(
                f"{source}: model_class {mc!r} is not a VisualGLM model ({' or '.join(SAT_MODEL_CLASSES)}); "
                "pass a VisualGLM-6B checkpoint directory"
            )
        if d.get("use_ptuning"):
            raise RemoteGLMError(f"{source}: P-tuning checkpoints (use_ptuning true) are not supported; use a LoRA or full fine-tune")
        for k in ("eva_args", "qformer_args", "num_layers", "hidden_size", "num_attention_heads", "vocab_size"):
            if k not in d:
                raise RemoteGLMError(f"{source} has no {k!r}: it is not a VisualGLM sat config; compare with the official visualglm-6b/model_config.json")
        return cls._from_common(d, ViTConfig.from_sat(d["eva_args"]), QFormerConfig.from_sat(d["qformer_args"]), _SAT_OWN, source)

    # ---- HF config.json --------------------------------------------------------------------
    def to_hf_dict(self, torch_dtype: str = "float16") -> dict:
        d = {k: v for k, v in self.extra.items() if k not in _SAT_OWN}
        d.update({
            "architectures": [HF_ARCHITECTURE],
            "model_type": "chatglm",
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "vocab_size": self.vocab_size,
            "inner_hidden_size": self.inner_hidden_size or 4 * self.hidden_size,
            "max_sequence_length": self.max_sequence_length,
            "layernorm_epsilon": self.layernorm_epsilon,
            "position_encoding_2d": True,
            "image_length": self.image_length,
            "eva_config": self.vit.to_sat(),
            "qformer_config": self.qformer.to_sat(),
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "mask_token_id": self.mask_token_id,
            "gmask_token_id": self.gmask_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype,
        })
        return d

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "VisualGLMConfig":
        for k in ("eva_config", "qformer_config", "num_layers", "hidden_size", "num_attention_heads", "vocab_size"):
            if k not in d:
                hint = " (a ChatGLM-6B text-only config? VisualGLM needs eva_config/qformer_config)" if k.endswith("_config") else ""
                raise RemoteGLMError(f"{source} has no {k!r}{hint}: pass a VisualGLM-6B HF directory")
        return cls._from_common(d, ViTConfig.from_sat(d["eva_config"]), QFormerConfig.from_sat(d["qformer_config"]), _HF_OWN, source)

    @classmethod
    def _from_common(cls, d: dict, vit: ViTConfig, qformer: QFormerConfig, own: set, source: str) -> "VisualGLMConfig":
        defaults = cls()
        kw: dict[str, Any] = {}
        for k in _GLM_FIELDS:
            v = d.get(k)
            kw[k] = getattr(defaults, k) if v is None and k != "inner_hidden_size" else v
        if kw["inner_hidden_size"] is None:
            kw["inner_hidden_size"] = 4 * int(kw["hidden_size"])
        for k in ("num_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_sequence_length", "image_length"):
            kw[k] = int(kw[k])
        kw["layernorm_epsilon"] = float(kw["layernorm_epsilon"])
        layer_range = d.get("layer_range")
        if isinstance(layer_range, int):
            layer_range = [layer_range]
        return cls(
            name=d.get("_name") or "custom",
            vit=vit,
            qformer=qformer,
            lora_rank=int(d.get("lora_rank") or 0),
            layer_range=list(layer_range) if layer_range is not None else None,
            use_lora=bool(d.get("use_lora", False)),
            use_qlora=bool(d.get("use_qlora", False)),
            lora_alpha=float(d.get("lora_alpha", 1.0)),
            extra={k: copy.deepcopy(v) for k, v in d.items() if k not in own},
            **kw,
        )

    # ---- sat argument namespaces -------------------------------------------------------------
    def glm_args(self, skip_init: bool = False, gpu_init: bool = False) -> argparse.Namespace:
        return argparse.Namespace(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            vocab_size=self.vocab_size,
            inner_hidden_size=self.inner_hidden_size,
            max_sequence_length=self.max_sequence_length,
            layernorm_epsilon=self.layernorm_epsilon,
            layernorm_order="post",
            model_parallel_size=1,
            skip_init=skip_init,
            use_gpu_initialization=gpu_init,
            image_length=self.image_length,
            bos_token_id=self.bos_token_id,
            mask_token_id=self.mask_token_id,
            gmask_token_id=self.gmask_token_id,
            pad_token_id=self.pad_token_id,
        )

    def vit_args(self, skip_init: bool = False, gpu_init: bool = False) -> argparse.Namespace:
        d = self.vit.to_sat()
        return argparse.Namespace(**d, skip_init=skip_init, use_gpu_initialization=gpu_init)

    def qformer_args(self, skip_init: bool = False, gpu_init: bool = False) -> argparse.Namespace:
        return argparse.Namespace(**self.qformer.to_sat(), skip_init=skip_init, use_gpu_initialization=gpu_init)

    def with_tokenizer(self, tokenizer) -> "VisualGLMConfig":
        """A copy whose vocabulary and special ids come from ``tokenizer`` (used by the tiny model)."""
        return replace(
            self,
            vocab_size=tokenizer.vocab_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            mask_token_id=tokenizer.mask_token_id,
            gmask_token_id=tokenizer.gmask_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    def to_dict(self) -> dict:
        return asdict(self)


# ---- registry ------------------------------------------------------------------------------
def _visualglm_6b() -> VisualGLMConfig:
    return VisualGLMConfig(name="visualglm-6b")


def _visualglm_tiny() -> VisualGLMConfig:
    # Same architecture, toy widths. vocab and special ids are placeholders: a real tiny model
    # takes them from its tokenizer (``with_tokenizer``), as create_tiny_checkpoint does.
    return VisualGLMConfig(
        name="visualglm-tiny",
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        vocab_size=1000,
        inner_hidden_size=256,
        max_sequence_length=2048,
        bos_token_id=4 + 4,
        eos_token_id=4 + 5,
        mask_token_id=4,
        gmask_token_id=5,
        pad_token_id=3,
        vit=ViTConfig(num_layers=2, hidden_size=64, num_attention_heads=4, inner_hidden_size=256),
        qformer=QFormerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, cross_attn_hidden_size=64),
    )


CONFIGS: dict[str, Callable[[], VisualGLMConfig]] = {
    "visualglm-6b": _visualglm_6b,
    "visualglm-tiny": _visualglm_tiny,
}


def get_config(name: str, **overrides) -> VisualGLMConfig:
    """A fresh config from the registry, with top-level fields overridden."""
    if name not in CONFIGS:
        raise RemoteGLMError(f"unknown model config {name!r}; choose one of {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]()
    unknown = set(overrides) - {f.name for f in fields(cfg)}
    if unknown:
        raise RemoteGLMError(f"unknown config field(s) {', '.join(sorted(unknown))} for {name}")
    return replace(cfg, **overrides)
