"""What the transformers families (Qwen2.5-VL, GLM-4.1V, Qwen3-VL, ...) share: a local HF folder
with its own processor files and chat template, served by ``HFEngine`` (``model.generate``),
trained by the HF Trainer with peft, merged with peft's ``merge_and_unload``, quantised by
bitsandbytes as it loads. A family module subclasses ``HFFamily`` with what differs: the model
type and classes, tokens, patch geometry and its tiny / full-size configs, then registers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.registry import Family

SAMPLE_IMAGES = "data/sample/images"


@dataclass(frozen=True, eq=False, kw_only=True)
class HFFamily(Family):
    name: str                # config.json "model_type"
    label: str               # what users call it
    model_class: str         # transformers class name
    image_token: str         # the placeholder the processor expands to one token per merged patch
    stop_tokens: tuple[str, ...]   # any of these ends an answer
    specials: tuple[str, ...]      # the tokenizer's special tokens, in published order (tiny tokenizers)
    eos_token: str = "<|endoftext|>"
    patch: int = 14          # ViT patch size (pixels)
    spatial_merge: int = 2   # patches merged per side into one LLM token
    frames_in_budget: int = 1  # GLM-4.1V's resize counts an image as 2 frames against max/min_pixels
    template_file: str = "chat_template.jinja"  # where the real folder keeps its template
    video_processor: str | None = None  # the real folder's video_preprocessor_config.json names this class (if it has one)
    tiny_dir: str | None = None
    full_sizes: dict = field(default_factory=dict)  # published text/vision config sizes (benchmarks)
    published_pixels: tuple[int, int] | None = None  # min/max pixels of the published preprocessor_config.json
    train_options: frozenset[str] = frozenset({"min_pixels", "max_pixels", "max_length", "use_dora", "tune_merger"})
    priority: int = 0

    # ---- what differs per family (tiny folders) ---------------------------------------------------
    def tiny_config(self, ids: dict[str, int], vocab: int, text: dict, vision: dict, size: str):
        """The family's config object: ``text``/``vision`` sizes, special-token ``ids``."""
        raise RemoteGLMError(f"{self.label}: no tiny config")

    def tiny_image_processor(self, min_pixels: int, max_pixels: int):
        """The family's own image processor class (PIL backend) resizing into [min, max] pixels."""
        raise RemoteGLMError(f"{self.label}: no tiny image processor")

    # ---- the seam -------------------------------------------------------------------------------
    def _config(self, folder: Path) -> dict | None:
        from remoteglm.io import read_json
        from remoteglm.model.hf_folder import adapter_base

        base = adapter_base(folder) or folder
        cfg = base / "config.json"
        return read_json(cfg, require_object=True) if cfg.is_file() else None

    def detect(self, folder: Path) -> bool:
        if not folder.is_dir():
            return False
        cfg = self._config(folder)
        return cfg is not None and cfg.get("model_type") == self.name

    def check(self, path: Path) -> None:
        from remoteglm.model.hf_folder import adapter_base, check_folder

        check_folder(adapter_base(path) or path)

    def is_tiny(self, path: Path) -> bool:
        if self.tiny_placeholder(path):
            return True
        text = (self._config(path) or {}).get("text_config") or {}
        return int(text.get("hidden_size") or 1 << 30) <= 256

    def recipe(self, path: Path, lora_rank: int | None = None) -> dict:
        rank = lora_rank or 8
        common = {"lora_rank": 8, "lora_alpha": 2 * rank, "lora_dropout": 0.05, "num_workers": 0,
                  "experiment_name": f"finetune-{self.label.lower()}"}
        if self.is_tiny(path):
            # tiny stand-ins learn in a minute only at a far higher rate; their text-only pre-training
            # makes the base answer every image with a farmland caption: the demo asks about another
            return {**common, "train_iters": 150, "batch_size": 4, "lr": 1e-2, "threads": 1,
                    "demo_image": f"{SAMPLE_IMAGES}/SOAP_031.png"}
        return {**common, "train_iters": 300, "batch_size": 1, "lr": 1e-4, "threads": None,
                "demo_image": f"{SAMPLE_IMAGES}/s2_farmland.png"}

    def load_engine(self, path: Path, *, quant=None, tokenizer=None, device=None, dtype=None, name=None,
                    defaults=None, max_new_tokens=None, seed=None, min_pixels=None, max_pixels=None, progress=True):
        import torch

        from remoteglm.compat import quiet_warnings
        from remoteglm.model.quant_layers import memory_summary
        from remoteglm.model.hf_folder import load_hf, sampling_defaults
        from remoteglm.serve.sampling import CHAT_DEFAULTS
        from remoteglm.serve.hf_engine import HFEngine

        if tokenizer:
            raise RemoteGLMError(f"--tokenizer is for VisualGLM checkpoints; a {self.label} folder brings its own tokenizer")
        quiet_warnings()  # every front end (cli, web, API, evaluation): no library notices in the user's terminal
        min_pixels, max_pixels = self.serving_pixels(path, min_pixels, max_pixels)
        model, proc = load_hf(path, self, quant, device, dtype, min_pixels=min_pixels, max_pixels=max_pixels)
        defaults = {**(defaults or CHAT_DEFAULTS), **sampling_defaults(path)}  # the toolkit's tables, then the authors'
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        engine = HFEngine(model, proc, name=name, quant=describe_quant(model), defaults=defaults,
                           max_new_tokens=max_new_tokens, generator=gen)
        lo, hi = proc.pixel_range()  # the resolution served: answers' boxes are read in its frame
        engine.box_codec = self.box_codec(path, min_pixels=lo, max_pixels=hi)
        return engine, memory_summary(model)

    def pixel_kwargs(self, min_pixels: int, max_pixels: int) -> dict:
        """The image processor's keyword arguments for a resolution, as vLLM's
        ``--mm-processor-kwargs`` / SGLang's ``--mm-process-config`` pass them: Qwen2-VL's image
        processor takes ``min_pixels`` / ``max_pixels`` (vllm/model_executor/models/qwen2_vl.py,
        ``Qwen2VLProcessingInfo._get_image_processor_kwargs``)."""
        return {"min_pixels": min_pixels, "max_pixels": max_pixels}

    def video_config(self, image_pc: dict) -> dict | None:
        """video_preprocessor_config.json for a folder that has an image processor config but no
        video one, in the layout of the family's real file (zai-org/GLM-4.1V-9B-Thinking,
        Qwen/Qwen3-VL-8B-Instruct: size, patch sizes, mean / std, ``video_processor_type``); None
        where the real folder has none. Servers build these families' processors with a video
        processor. The size is the image's: video is not what a run here learns."""
        if not self.video_processor:
            return None
        keep = ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "do_rescale")
        return {**{k: image_pc[k] for k in keep if k in image_pc}, "video_processor_type": self.video_processor}

    def serving_pixels(self, path: Path, min_pixels: int | None, max_pixels: int | None) -> tuple:
        """(min, max) pixels to serve ``path`` at: the given ones, else the ones its run was trained
        at (``remoteglm_base.json``: its box codec's, else its "settings"), else (None) the folder's.
        Where this family's boxes depend on the resolution (Qwen2.5-VL: pixels of the resized
        image), serving a run at another one than it was trained at is refused in one line: its
        boxes would be shifted."""
        from remoteglm.io import read_json
        from remoteglm.model.hf_folder import BASE_RECORD, folder_pixel_range

        rec = Path(path) / BASE_RECORD
        data = read_json(rec, require_object=True) if rec.is_file() else {}
        settings, codec = (data.get(k) if isinstance(data.get(k), dict) else {} for k in ("settings", "box_codec"))
        written = codec if {"min_pixels", "max_pixels"} <= codec.keys() else settings  # the range it resolved to, first
        if not {"min_pixels", "max_pixels"} & written.keys():
            return min_pixels, max_pixels  # no record of the run's resolution
        recorded = (written.get("min_pixels"), written.get("max_pixels"))
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in recorded):
            raise RemoteGLMError(f"{rec}: settings min_pixels / max_pixels {recorded} are not pixel counts")
        trained = tuple(r or f for r, f in zip(recorded, folder_pixel_range(path)))
        served = (min_pixels or trained[0], max_pixels or trained[1])
        if served != trained:
            frames = [self.box_codec(path, min_pixels=lo, max_pixels=hi).settings for lo, hi in (trained, served)]
            if frames[0] != frames[1]:
                raise RemoteGLMError(
                    f"{path} was trained at min_pixels {trained[0]}, max_pixels {trained[1]} ({BASE_RECORD}); "
                    f"{self.label} boxes are pixels of the resized image, so serving it at {served[0]}, {served[1]} "
                    "would shift them: leave out --min_pixels / --max_pixels (the run's are used)")
        return served

    def memory_facts(self, path: Path | None = None):
        """The planner's numbers (``remoteglm.train.planner.ModelFacts``), counted exactly on the meta
        device (no memory, well under a second) from the folder's config.json, or with ``path`` None
        from the published full-size config (``full_sizes``, at Qwen2-VL's processor range in this
        family's cells: 4 to 16,384 image tokens). The LoRA targets are the trainer's own."""
        import re
        from types import SimpleNamespace

        import torch
        import transformers

        from remoteglm.model.hf_folder import adapter_base, folder_pixel_range
        from remoteglm.model.hf_tiny import TEXT, VISION
        from remoteglm.train.hf_trainer import lora_config
        from remoteglm.train.planner import ModelFacts

        cell = self.frames_in_budget * (self.patch * self.spatial_merge) ** 2
        if path is None:
            ids = {s: i for i, s in enumerate(self.specials)}
            cfg = self.tiny_config(ids, self.full_sizes["text"]["vocab_size"], dict(TEXT), dict(VISION), "full")
            pixels = (4 * cell, 16384 * cell)
        else:
            base = adapter_base(Path(path)) or Path(path)
            cfg = transformers.AutoConfig.from_pretrained(str(base), local_files_only=True, trust_remote_code=False)
            pixels = folder_pixel_range(path)
        with torch.device("meta"):
            model = getattr(transformers, self.model_class)._from_config(cfg, dtype=torch.bfloat16)
        opts = SimpleNamespace(layer_range=None, lora_rank=1, lora_alpha=1, lora_dropout=0, use_dora=False, tune_merger=False)
        target = re.compile(lora_config(opts).target_modules)
        n = dict(linear=0, vision=0, merger=0, io=0, out=0, largest=0)
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and ".language_model.layers." in f".{name}":
                n["linear"] += m.weight.numel()
                n["largest"] = max(n["largest"], m.weight.numel())
                if target.fullmatch(name):
                    n["io"] += m.in_features + m.out_features
                    n["out"] += m.out_features
        for name, p in model.named_parameters():
            if name.startswith("model.visual."):
                n["vision"] += p.numel()
                n["merger"] += p.numel() if name.startswith("model.visual.merger.") else 0
        total = sum(p.numel() for p in model.parameters())
        text, vision = cfg.text_config, cfg.vision_config
        return ModelFacts(label=self.label, layers=text.num_hidden_layers, hidden=text.hidden_size,
                          intermediate=text.intermediate_size, vocab=text.vocab_size, llm_linear=n["linear"],
                          llm_other=total - n["linear"] - n["vision"], vision=n["vision"], vision_hidden=vision.hidden_size,
                          vision_intermediate=vision.intermediate_size, lora_io=n["io"], lora_out=n["out"],
                          largest_linear=n["largest"], extra_trainable=n["merger"], patch=self.patch,
                          spatial_merge=self.spatial_merge, frames_in_budget=self.frames_in_budget, pixel_range=pixels)

    def finetune(self, opts) -> Path:
        from remoteglm.train.hf_trainer import run

        return run(opts, self)

    def merge(self, src: Path, dst: Path, dtype: str | None = None, tokenizer: str | None = None,
              max_shard_size: str | None = None) -> Path:
        from remoteglm.train.merge import merge_adapter

        if tokenizer:
            raise RemoteGLMError(f"--tokenizer is for VisualGLM runs; a {self.label} run brings its own tokenizer")
        return merge_adapter(src, dst, self, dtype, max_shard_size)

    def quantize(self, src: Path, dst: Path, bits: int, **opts) -> Path:
        raise RemoteGLMError(f"{src} is a {self.label} folder: it is quantised as it loads; pass --quant {bits} to "
                             "cli_demo.py, web_demo.py, the API or the evaluation instead")

    def make_tiny(self, out: Path, seed: int = 0, pretrain_steps: int | None = None, size: str = "tiny",
                  device: str = "cpu") -> Path:
        from remoteglm.model.hf_tiny import CLI_PRETRAIN_STEPS, create_tiny_hf

        steps = CLI_PRETRAIN_STEPS if pretrain_steps is None else pretrain_steps
        return create_tiny_hf(self, out, seed, steps, size=size, device=device)


def describe_quant(model) -> str:
    """'int4 (NF4)', 'int8 (LLM.int8)' or the float dtype of a loaded transformers model."""
    qc = getattr(model.config, "quantization_config", None)
    if qc is not None:
        bits = 4 if getattr(qc, "load_in_4bit", False) or (isinstance(qc, dict) and qc.get("load_in_4bit")) else 8
        return "int4 (NF4)" if bits == 4 else "int8 (LLM.int8)"
    return str(next(model.parameters()).dtype).replace("torch.", "")
