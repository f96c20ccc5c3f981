"""Fold a LoRA / QLoRA fine-tune into its base weights: a plain sat checkpoint for VisualGLM runs,
a plain HF folder for the transformers families' runs (peft's merge_and_unload).

    python -m remoteglm.train.merge checkpoints/finetune-visualglm-11-22-10-00 checkpoints/visualglm-rs-merged
    python -m remoteglm.train.merge checkpoints/finetune-qwen2.5-vl-11-22-10-00 checkpoints/qwen2.5-vl-rs

The merged model has no LoRA layers (W + concat(B_i A_i) * alpha/rank), loads anywhere a base
VisualGLM-6B loads, and quantises the same way. A QLoRA run's NF4 base is dequantised first, so
the result is a full-precision model (quantise it again at load time with --quant 4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import Parser, add_trust_arg


def merge_checkpoint(src: str | Path, dst: str | Path, tokenizer: str | None = None, dtype: str | None = None) -> Path:
    """Fold the run at ``src`` into plain weights at ``dst`` (how: its family's)."""
    from remoteglm.registry import family_of

    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise RemoteGLMError(f"{dst} already exists and is not empty; choose a new output folder")
    return family_of(src).merge(src, dst, dtype, tokenizer)


def merge_sat(src: Path, dst: Path, tokenizer: str | None = None, dtype: str | None = None) -> Path:
    """A VisualGLM LoRA / QLoRA run -> a plain sat checkpoint."""
    import torch

    from remoteglm.model.checkpoint import load_model
    from remoteglm.model.saving import save_sat_checkpoint
    from remoteglm.model.lora import merge_lora

    model, tok, config = load_model(src, tokenizer=tokenizer, device="cpu",
                                    dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype or "", None))
    if not config.has_lora:
        raise RemoteGLMError(f"{src} has no LoRA layers (use_lora/use_qlora false in model_config.json); nothing to merge")
    merge_lora(model)
    if config.use_qlora or any(p.dtype == torch.uint8 for p in model.parameters()):
        # Dequantised layers come back fp32 while the rest may be NF4-adjacent dtypes: unify.
        ref = model.transformer.word_embeddings.weight.dtype
        model.to(ref)
    save_sat_checkpoint(model, model.config, dst, iteration=1, tokenizer=tok)
    return dst


def merge_adapter(src: Path, dst: Path, family, dtype: str | None = None) -> Path:
    """A peft LoRA run of a transformers family -> a plain HF folder (safetensors, the processor
    files), written beside ``dst`` and renamed into place. A QLoRA run merges into the float base."""
    import shutil

    from remoteglm.model.hf_folder import ADAPTER_CONFIG, load_hf
    from remoteglm.train.hf_trainer import PROCESSOR_FILES

    if not (src / ADAPTER_CONFIG).is_file():
        raise RemoteGLMError(f"{src} has no LoRA adapter ({ADAPTER_CONFIG}); nothing to merge")
    model, _ = load_hf(src, family, None, "cpu", dtype, merge=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in PROCESSOR_FILES:
        if (src / f).is_file():
            shutil.copyfile(src / f, tmp / f)
    if dst.exists():
        dst.rmdir()
    tmp.replace(dst)
    return dst


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m remoteglm.train.merge", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="fine-tune run folder (has latest, model_config.json with use_lora/use_qlora)")
    ap.add_argument("dst", help="new folder for the merged checkpoint")
    ap.add_argument("--tokenizer", help="ice_text.model if the run folder has none")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="dtype of the saved weights [as loaded]")
    add_trust_arg(ap)
    a = ap.parse_args(argv)
    from remoteglm import compat
    from remoteglm.model.unpickle import trust_checkpoints

    compat.single_process_env()
    trust_checkpoints(a.trust_checkpoint)
    out = merge_checkpoint(a.src, a.dst, a.tokenizer, a.dtype)
    print(f"merged checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
