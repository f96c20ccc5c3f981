"""VisualGLM-6B on sat (SwissArmyTransformer 0.4.6), readable top to bottom.

    image [B,3,224,224]
      -> EVA-CLIP ViT (sat ViTModel, pre-LN, no final LN) -> ln_vision      [B, 257, 1408]
      -> Q-Former (sat BaseModel, post-LN; 32 learned queries are its
         "vocabulary"; cross-attention to the ViT on layers 0, 2, 4, ...)  [B, 32, 768]
      -> glm_proj Linear(768 -> 4096)                                       [B, 32, 4096]
      -> replaces the word embeddings at [pre_image, pre_image + 32) of ChatGLM-6B
         (sat ChatGLMModel: 2-D rotary positions, GLM mask, post-LN with residual scaling).

The image tower lives in a word-embedding mixin named ``eva`` holding ``.model`` with ``.vit``,
``.qformer`` and ``.glm_proj``, so every parameter name equals the official sat checkpoint's
(``mixins.eva.model.vit.transformer.layers.0.attention.query_key_value.weight``,
``mixins.chatglm-final.lm_head.weight`` ...) and official files and LoRA fine-tunes load as-is.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from remoteglm.compat import single_process_env

single_process_env()  # sat builds a process group on import of a model; keep it on loopback

from sat.model.base_model import BaseMixin, BaseModel  # noqa: E402
from sat.model.official.chatglm_model import (  # noqa: E402
    ChatGLMAttnMixin,
    ChatGLMFinalMixin,
    ChatGLMLayerMixin,
    ChatGLMModel,
    gelu,
)
from sat.mpu.layers import ColumnParallelLinear  # noqa: E402
from sat.model.official.vit_model import ViTModel  # noqa: E402

from remoteglm.device import parse_dtype  # noqa: E402
from remoteglm.model.config import VisualGLMConfig  # noqa: E402


# ---- vision tower ----------------------------------------------------------------------------
class LNFinalMixin(BaseMixin):
    """``ln_vision``: the LayerNorm BLIP-2 puts on the ViT output (replaces ViT's class head)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.ln_vision = nn.LayerNorm(hidden_size)

    def final_forward(self, logits, **kw_args):
        return self.ln_vision(logits)


class EVAViT(ViTModel):
    """EVA-CLIP ViT-g/14 without its last layer; returns all 257 token states."""

    def __init__(self, args, transformer=None, **kwargs):
        with warnings.catch_warnings():  # sat builds a 0-class head first ("zero-element tensor")
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(args, transformer=transformer, parallel_output=True, **kwargs)
        self.del_mixin("cls")
        self.add_mixin("cls", LNFinalMixin(args.hidden_size))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        cls_ids = torch.zeros(b, 1, dtype=torch.long, device=image.device)  # vocab of 1: the CLS token
        full = torch.ones(1, 1, dtype=image.dtype, device=image.device)  # full attention
        return super().forward(input_ids=cls_ids, position_ids=None, attention_mask=full, image=image)[0]


class QFormer(BaseModel):
    """BLIP-2 Q-Former: its input ids are the query indices arange(32), no position embeddings."""

    def __init__(self, args, transformer=None, **kwargs):
        super().__init__(args, transformer=transformer, activation_func=F.gelu, **kwargs)
        self.transformer.position_embeddings = None
        self.num_queries = args.vocab_size

    def position_embedding_forward(self, position_ids, **kw_args):
        return None

    def final_forward(self, logits, **kw_args):
        return logits

    def forward(self, encoder_outputs: torch.Tensor) -> torch.Tensor:
        b = encoder_outputs.shape[0]
        dev, dt = encoder_outputs.device, encoder_outputs.dtype
        query_ids = torch.arange(self.num_queries, device=dev).unsqueeze(0).expand(b, -1)
        full = torch.ones(1, 1, dtype=dt, device=dev)
        return super().forward(
            input_ids=query_ids, position_ids=None, attention_mask=full,
            encoder_outputs=encoder_outputs, cross_attention_mask=full,
        )[0]


class BLIP2(nn.Module):
    """ViT -> Q-Former -> glm_proj: an image becomes ``image_length`` ChatGLM input embeddings."""

    def __init__(self, config: VisualGLMConfig, params_dtype=torch.float32, skip_init=False, gpu_init=False):
        super().__init__()
        self.vit = EVAViT(config.vit_args(skip_init, gpu_init), params_dtype=params_dtype)
        self.qformer = QFormer(config.qformer_args(skip_init, gpu_init), params_dtype=params_dtype)
        self.glm_proj = nn.Linear(config.qformer.hidden_size, config.hidden_size, dtype=params_dtype)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.glm_proj(self.qformer(self.vit(image)))


class ImageMixin(BaseMixin):
    """Word-embedding hook: the image embeddings overwrite the placeholder slots of the prompt."""

    def __init__(self, config: VisualGLMConfig, **build):
        super().__init__()
        self.image_length = config.image_length
        self.model = BLIP2(config, **build)

    def word_embedding_forward(self, input_ids, output_cross_layer, image_embeds=None, pre_image=None, **kw_args):
        emb = self.transformer.word_embeddings(input_ids)
        if image_embeds is None:
            return emb
        b, n = input_ids.shape
        if pre_image is None:
            raise ValueError("image_embeds given without pre_image (the index of the first image slot)")
        start = torch.as_tensor(pre_image, device=input_ids.device).reshape(-1).expand(b)  # int or per-row
        if int(start.max()) + self.image_length > n:
            raise ValueError(f"image slots [{int(start.max())}, +{self.image_length}) do not fit a sequence of {n} tokens")
        idx = (start[:, None] + torch.arange(self.image_length, device=input_ids.device))[..., None]
        # scatter (not in-place) keeps gradients flowing to both text and image embeddings.
        return emb.scatter(1, idx.expand(-1, -1, emb.shape[-1]), image_embeds.to(emb.dtype))


# ---- the full model ----------------------------------------------------------------------------
class LMHeadMixin(ChatGLMFinalMixin):
    """sat's ``chatglm-final`` mixin, but built in the model's dtype/device and without random
    init when weights will be loaded (sat's own allocates a 2 GB fp32 head and initialises it)."""

    def __init__(self, vocab_size, hidden_size, params_dtype=torch.float32, skip_init=False, device="cpu"):
        BaseMixin.__init__(self)
        self.lm_head = ColumnParallelLinear(
            hidden_size, vocab_size, gather_output=True, bias=False, module=self, name="lm_head",
            params_dtype=params_dtype, skip_init=skip_init, device=device,
        )


class VisualGLMModel(ChatGLMModel):
    """sat ChatGLMModel + the ``eva`` image mixin. Output: ``[logits, *per_layer_dicts]`` as sat.

    Per-layer dicts hold ``past_key_values`` ((key, value), each [seq, batch, heads, head_dim]),
    the KV cache the generation code feeds back.
    """

    def __init__(self, config: VisualGLMConfig, params_dtype=torch.float32, skip_init=False, gpu_init=False):
        args = config.glm_args(skip_init, gpu_init)
        # ChatGLMModel.__init__, step by step, so that the LM head honours dtype/device/skip_init.
        BaseModel.__init__(self, args, activation_func=gelu, params_dtype=params_dtype)
        del self.transformer.position_embeddings  # rotary positions instead
        device = torch.cuda.current_device() if gpu_init else "cpu"
        self.add_mixin("chatglm-final", LMHeadMixin(args.vocab_size, args.hidden_size, params_dtype, skip_init, device))
        self.add_mixin("chatglm-attn", ChatGLMAttnMixin(args.hidden_size, args.num_attention_heads))
        self.add_mixin("chatglm-layer", ChatGLMLayerMixin(args.num_layers))
        self.bos_token_id, self.mask_token_id = args.bos_token_id, args.mask_token_id
        self.gmask_token_id, self.pad_token_id = args.gmask_token_id, args.pad_token_id
        self.config = config
        self.image_length = config.image_length
        self.add_mixin("eva", ImageMixin(config, params_dtype=params_dtype, skip_init=skip_init, gpu_init=gpu_init))

    @property
    def image_encoder(self) -> BLIP2:
        return self.get_mixin("eva").model

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [B,3,224,224] (or [3,224,224]) -> image embeddings [B, 32, hidden]."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        p = next(self.image_encoder.parameters())
        return self.image_encoder(image.to(device=p.device, dtype=p.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        image: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        pre_image: int | torch.Tensor | None = None,
        past_key_values=None,
        **kw_args,
    ):
        """``input_ids`` [B, n]; ``position_ids`` [B, 2, n]; ``attention_mask`` [B, 1, n, n_past + n]
        (1 = attend). Without mask and positions both are derived as sat's ChatGLM does (GLM
        mask up to <sop>, left padding). ``image`` (pixels) or ``image_embeds`` ([B, 32, hidden],
        e.g. cached) fill the slots starting at ``pre_image`` (an int or one per row).
        """
        if attention_mask is None and position_ids is None:
            attention_mask, position_ids = self.get_inputs(input_ids)
        elif attention_mask is None or position_ids is None:
            raise ValueError("pass both attention_mask and position_ids, or neither")
        if attention_mask.dtype is torch.bool:  # sat/HF ChatGLM convention: True = masked out
            attention_mask = (~attention_mask).long()
        if image is not None and image_embeds is None:
            image_embeds = self.encode_image(image)
        # BaseModel.forward, not ChatGLMModel.forward: that one silently keeps only the last token
        # whenever a cache is given; the caller here decides which tokens to run.
        return BaseModel.forward(
            self, input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
            past_key_values=past_key_values, image_embeds=image_embeds, pre_image=pre_image, **kw_args,
        )


def build_model(
    config: VisualGLMConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    skip_init: bool = False,
) -> VisualGLMModel:
    """Build a VisualGLM model. ``skip_init`` leaves weights uninitialised (they will be loaded);
    on CUDA the transformer weights are allocated on the GPU directly in ``dtype``, so the
    full-size model is never held twice. Default dtype: fp32 on CPU, fp16 on CUDA.
    """
    device = torch.device(device)
    dtype = parse_dtype(dtype, device, cuda_default="fp16")
    gpu_init = device.type == "cuda"
    if gpu_init and device.index is not None:
        torch.cuda.set_device(device)  # sat allocates on the "current" device
    model = VisualGLMModel(config, params_dtype=dtype, skip_init=skip_init, gpu_init=gpu_init)
    # A few small modules (LayerNorms, patch conv, lm_head, position tables) ignore params_dtype.
    model.to(device=device, dtype=dtype)
    keep_rotary_fp32(model)
    return model


def keep_rotary_fp32(model: nn.Module) -> None:
    """Rotary inverse frequencies stay fp32 (``.half()`` on the model would round them)."""
    for m in model.modules():
        if type(m).__name__ == "RotaryEmbedding" and getattr(m, "inv_freq", None) is not None:
            dim = m.inv_freq.numel() * 2
            exact = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=m.inv_freq.device).float() / dim))
            m.inv_freq = exact
            m.max_seq_len_cached, m.cos_cached, m.sin_cached = None, None, None
