"""Load a checkpoint folder the way the official VisualGLM-6B code does: sat's own
``get_checkpoint_iteration``, ``AutoModel.from_pretrained`` (model_config.json -> args ->
registry -> ``get_model``) and ``load_checkpoint`` (torch.load with torch's defaults, strict about
missing keys in inference mode). Our model code only supplies the layers, behind classes named
as the official ones; nothing of our checkpoint reader is used."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch


@contextlib.contextmanager
def official_classes():
    """Register classes named VisualGLMModel / FineTuneVisualGLMModel in sat's model registry
    (what the official repo's import does), and put sat's registry back afterwards."""
    from sat.model.base_model import BaseModel
    from sat.model.registry import model_registry

    from remoteglm.model.config import VisualGLMConfig
    from remoteglm.model.visualglm import VisualGLMModel as Ours

    saved = dict(model_registry.member)

    class VisualGLMModel(Ours):  # noqa: D401 - the official name is the point
        def __init__(self, args, transformer=None, params_dtype=torch.float32, **kwargs):
            config = VisualGLMConfig.from_sat_dict(vars(args))
            # sat's BaseModel.__init__ reads args.model_parallel_size first; the official class
            # builds through it, so a model_config.json without it fails here as it does there.
            BaseModel.__init__(self, argparse.Namespace(**{**vars(config.glm_args()), "model_parallel_size": args.model_parallel_size}))
            super().__init__(config, params_dtype=params_dtype, skip_init=getattr(args, "skip_init", False))

    class FineTuneVisualGLMModel(VisualGLMModel):
        def __init__(self, args, transformer=None, params_dtype=torch.float32, **kwargs):
            super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
            if getattr(args, "use_lora", False) or getattr(args, "use_qlora", False):
                from sat.model.finetune.lora2 import LoraMixin

                self.add_mixin("lora", LoraMixin(args.num_layers, args.lora_rank, lora_alpha=getattr(args, "lora_alpha", 1.0),
                                                 layer_range=args.layer_range, qlora=args.use_qlora), reinit=True)

    try:
        yield
    finally:
        model_registry.member.clear()
        model_registry.member.update(saved)


def sat_iteration(folder: Path):
    from sat.training.model_io import get_checkpoint_iteration

    return get_checkpoint_iteration(str(folder))


def sat_from_pretrained(folder: Path):
    """The official cli_demo's call: AutoModel.from_pretrained(path, args=Namespace(...))."""
    from sat.model.base_model import AutoModel

    with official_classes():
        model, args = AutoModel.from_pretrained(
            str(folder), args=argparse.Namespace(fp16=False, skip_init=True, use_gpu_initialization=False, device="cpu"))
    return model.eval(), args
