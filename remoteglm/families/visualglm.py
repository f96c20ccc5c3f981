"""VisualGLM-6B on SwissArmyTransformer: EVA-CLIP + Q-Former + ChatGLM-6B, in sat or HF layout
(base, LoRA / QLoRA run folders, merged, quantised). Served by ``VisualGLMEngine``, trained with
sat's ``training_main`` and DeepSpeed (``remoteglm.train.sat_trainer``), merged by folding its
LoRA pairs, quantised to a saved int4/int8 checkpoint.

It is detected last: it claims any sat or HF checkpoint layout no other family claims, so that
a broken or foreign folder gets its one line on what is wrong (``detect_format``).
"""

from __future__ import annotations

from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.registry import Family, labels, register

SAMPLE = "data/sample"
# config.json model types of vision-language models this toolkit does not load (yet): a clear
# line instead of VisualGLM's "no eva_config" when one is passed
_OTHER_VLM_SUFFIXES = ("_vl", "_vl_moe", "v_moe")


class VisualGLM(Family):
    name = "visualglm"
    label = "VisualGLM-6B"
    tiny_dir = "checkpoints/visualglm-tiny"
    train_options = frozenset({"tokenizer", "train_qformer", "feature_cache", "no_feature_cache"})
    priority = -1

    def detect(self, folder: Path) -> bool:
        if str(folder).startswith("random:"):  # benchmarks: a random model of a registry size
            return True
        from remoteglm.io import read_json
        from remoteglm.model.layout import detect_format

        fmt, d = detect_format(folder)  # a missing path, a file, a foreign folder: its one line
        if fmt == "hf":
            mt = read_json(d / "config.json", require_object=True).get("model_type")
            if isinstance(mt, str) and mt.endswith(_OTHER_VLM_SUFFIXES):
                raise RemoteGLMError(f"{d}: model type {mt!r} is not supported yet (supported: {labels()})")
        return True

    def check(self, path: Path) -> None:
        self.detect(Path(path))

    def config(self, path):
        """The VisualGLMConfig of a folder from its JSON alone (no weights read); ``random:<size>``
        names a registry size (benchmarks build a random model of it)."""
        from remoteglm.io import read_json
        from remoteglm.model.layout import detect_format
        from remoteglm.model.config import VisualGLMConfig, get_config

        if str(path).startswith("random:"):
            return get_config(str(path).split(":", 1)[1])
        fmt, d = detect_format(path)
        if fmt == "sat":
            f = d / "model_config.json"
            return VisualGLMConfig.from_sat_dict(read_json(f, require_object=True), source=str(f))
        f = d / "config.json"
        return VisualGLMConfig.from_hf_dict(read_json(f, require_object=True), source=str(f))

    def recipe(self, path: Path, lora_rank: int | None = None) -> dict:
        rank = lora_rank or 10
        tiny = self.tiny_placeholder(path) or self.config(path).hidden_size <= 256
        common = {"lora_rank": 10, "lora_dropout": 0.0, "batch_size": 4, "train_iters": 300, "num_workers": 2,
                  "experiment_name": "finetune-visualglm", "demo_image": f"{SAMPLE}/images/s2_farmland.png"}
        if tiny:
            # the tiny model stands in for a pretrained one: it needs a far higher learning rate to learn in a
            # minute, and a second OpenMP thread only fights the first over the cores (2-4x slower on 2 cores)
            return {**common, "lr": 1e-2, "lora_alpha": float(rank), "threads": 1}
        return {**common, "lr": 1e-4, "lora_alpha": 1.0, "threads": None}  # alpha 1: the official recipe

    def load_engine(self, path: Path, *, quant=None, tokenizer=None, device=None, dtype=None, name=None,
                    defaults=None, max_new_tokens=None, seed=None, min_pixels=None, max_pixels=None, progress=True):
        import torch

        from remoteglm.model.quant import load_model_quantized
        from remoteglm.model.quant_layers import describe_quant, memory_summary
        from remoteglm.serve.visualglm_engine import VisualGLMEngine

        if min_pixels or max_pixels:
            raise RemoteGLMError("--min_pixels / --max_pixels are for the transformers families' folders; "
                                 "VisualGLM reads 224 x 224")
        model, tok, _ = load_model_quantized(path, quant, tokenizer=tokenizer, device=device, dtype=dtype, progress=progress)
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed) if seed is not None else None
        engine = VisualGLMEngine(model, tok, name=name, quant=describe_quant(model), defaults=defaults,
                                 max_new_tokens=max_new_tokens, generator=gen)
        engine.box_codec = self.box_codec(path)
        return engine, memory_summary(model)

    def box_codec(self, path=None, *, min_pixels=None, max_pixels=None):
        """VisualGLM-6B was not trained on boxes: fine-tuning teaches it THUDM's own later form,
        CogVLM's ``[[x0,y0,x1,y1]]`` relative to the image on 000..999 (CogVLM/CogAgent, arXiv 2312.08914:
        "coordinates normalized to [000, 999]"; THUDM/cogvlm-grounding-generalist-hf), the phrase it
        names in front. It reads 224 x 224 whatever the image, so no resolution setting applies."""
        from remoteglm.box_codec import BracketCodec, relative

        return BracketCodec(frame=relative(999), digits=3)

    def memory_facts(self, path: Path | None = None):
        """The planner's numbers (``remoteglm.train.planner.ModelFacts``) from the folder's config (None:
        VisualGLM-6B's), by the layout sat builds: ChatGLM layers (query_key_value, dense, dense_h_to_4h,
        dense_4h_to_h, with biases, two LayerNorms), an untied lm_head, EVA-CLIP's ViT (CLS, position
        table, patch conv), the Q-Former (cross-attention every ``cross_attention_freq`` layers, its
        queries) and glm_proj. VisualGLM-6B comes to 7.8 B parameters, ChatGLM-6B 6.2 B (THUDM/VisualGLM-6B
        README: "整体模型共78亿参数", "具有 62 亿参数" - without its output head). LoRA is sat's: query_key_value and dense. The image
        is always 224 x 224 -> 32 query tokens, so there is no pixel budget to choose."""
        from remoteglm.model.config import get_config
        from remoteglm.train.planner import ModelFacts

        c = self.config(path) if path is not None else get_config("visualglm-6b")
        h, i, L, v = c.hidden_size, c.inner_hidden_size or 4 * c.hidden_size, c.num_layers, c.vocab_size
        vit, qf = c.vit, c.qformer

        def block(d: int, inner: int) -> tuple[int, int]:  # (Linear weights, biases + LayerNorms) of one layer
            return 4 * d * d + 2 * d * inner, 9 * d + inner

        lin, rest = block(h, i)
        vw, vr = block(vit.hidden_size, vit.inner_hidden_size)
        qi = qf.inner_hidden_size or 4 * qf.hidden_size
        qw, qr = block(qf.hidden_size, qi)
        hv, hq = vit.hidden_size, qf.hidden_size
        cross = sum(qf.is_decoder) * (2 * hq * hq + 2 * hq * hv + 6 * hq)
        qformer = qf.num_layers * (qw + qr) + cross + qf.num_query_tokens * hq + 2 * hq + h * hq + h
        vision = (vit.num_layers * (vw + vr) + hv * (vit.in_channels * vit.patch_size ** 2 + 1) + 2 * hv
                  + hv * (vit.num_patches + 2) + qformer)
        return ModelFacts(label=self.label, layers=L, hidden=h, intermediate=i, vocab=v, llm_linear=L * lin,
                          llm_other=L * rest + 2 * v * h + 2 * h, vision=vision, vision_hidden=hv,
                          vision_intermediate=vit.inner_hidden_size, lora_io=L * 6 * h, lora_out=L * 4 * h,
                          largest_linear=h * i, extra_trainable=qformer, patch=vit.patch_size, spatial_merge=1,
                          fixed_image_tokens=c.image_length, fixed_patches=vit.num_patches + 1, template_tokens=4,
                          state_bytes=20, qlora_float_bytes=None, feature_cache=True)

    def finetune(self, opts) -> Path:
        from remoteglm.train.sat_trainer import run

        return run(opts, self)

    def merge(self, src: Path, dst: Path, dtype: str | None = None, tokenizer: str | None = None) -> Path:
        from remoteglm.train.merge import merge_sat

        return merge_sat(src, dst, tokenizer, dtype)

    def quantize(self, src: Path, dst: Path, bits: int, *, tokenizer=None, device=None, merge_lora=False,
                 lm_head_int8=False) -> Path:
        import time

        import torch

        from remoteglm.device import default_device
        from remoteglm.model.checkpoint import load_model
        from remoteglm.model.quant_checkpoint import is_quantized_checkpoint, save_quantized
        from remoteglm.model.quant_layers import gib, model_memory_bytes, quantize_model

        if is_quantized_checkpoint(src) is not None:
            raise RemoteGLMError(f"{src} is already quantised; pass the float checkpoint")
        device = default_device(device)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        t0 = time.time()
        model, tok, _ = load_model(src, tokenizer=tokenizer, device="cpu", dtype=dtype)
        before = model_memory_bytes(model)
        quantize_model(model, bits, device=device, lm_head=lm_head_int8, merge_lora=merge_lora, progress=True)
        out = save_quantized(model, dst, tokenizer=tok)
        print(f"int{bits} checkpoint written to {out}: weights {gib(before)} -> {gib(model_memory_bytes(model))} "
              f"({time.time() - t0:.1f} s)")
        return out

    def make_tiny(self, out: Path, seed: int = 0, pretrain_steps: int | None = None, pretrain_data=None) -> Path:
        from remoteglm.model.tiny import CLI_PRETRAIN_STEPS, create_tiny_checkpoint

        steps = CLI_PRETRAIN_STEPS if pretrain_steps is None else pretrain_steps
        return create_tiny_checkpoint(out, seed=seed, pretrain_steps=steps, pretrain_data=pretrain_data)


FAMILY = register(VisualGLM())
