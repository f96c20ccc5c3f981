"""Fold a LoRA / QLoRA fine-tune into its base weights: a plain sat checkpoint for VisualGLM runs,
a plain HF folder for the transformers families' runs (peft's merge_and_unload).

    python -m remoteglm.train.merge checkpoints/finetune-visualglm-11-22-10-00 checkpoints/visualglm-rs-merged
    python -m remoteglm.train.merge checkpoints/finetune-qwen2.5-vl-11-22-10-00 checkpoints/qwen2.5-vl-rs

The merged model has no LoRA layers (W + concat(B_i A_i) * alpha/rank), loads anywhere a base
VisualGLM-6B loads, and quantises the same way. A QLoRA run's NF4 base is dequantised first, so
the result is a full-precision model (quantise it again at load time with --quant 4).

A transformers family's merged folder is one vLLM and SGLang load as it is (remoteglm.train.serving):
weights in the base's dtype, in 5 GB safetensors shards with their index, the base's chat
template, tokenizer, generation and processor configs, the run's min / max pixels written into
preprocessor_config.json. `python -m remoteglm check_serving DST` checks it and prints the
serving commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.io import read_json
from remoteglm.options import Parser, add_trust_arg


def merge_checkpoint(src: str | Path, dst: str | Path, tokenizer: str | None = None, dtype: str | None = None,
                     max_shard_size: str | None = None) -> Path:
    """Fold the run at ``src`` into plain weights at ``dst`` (how: its family's)."""
    import inspect

    from remoteglm.registry import family_of

    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise RemoteGLMError(f"{dst} already exists and is not empty; choose a new output folder")
    fam = family_of(src)
    extra = {}
    if max_shard_size:
        if "max_shard_size" not in inspect.signature(fam.merge).parameters:
            raise RemoteGLMError(f"--max_shard_size: a {fam.label} run merges into one checkpoint; leave it out")
        from transformers.utils.hub import convert_file_size_to_int

        try:
            if convert_file_size_to_int(max_shard_size) <= 0:
                raise ValueError
        except ValueError:
            raise RemoteGLMError(f"--max_shard_size {max_shard_size!r}: give a size such as 5GB or 500MB") from None
        extra["max_shard_size"] = max_shard_size
    return fam.merge(src, dst, dtype, tokenizer, **extra)


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


def merge_adapter(src: Path, dst: Path, family, dtype: str | None = None, max_shard_size: str | None = None) -> Path:
    """A peft LoRA run of a transformers family -> a plain HF folder that vLLM and SGLang load as
    it is (``remoteglm.train.serving``), written beside ``dst`` and renamed into place. A QLoRA
    run merges into the float base."""
    import shutil

    from remoteglm.io import write_json_atomic
    from remoteglm.model.hf_folder import ADAPTER_CONFIG, adapter_base, load_hf
    from remoteglm.train.serving import SHARD_SIZE, VIDEO_CONFIG, run_pixels, serving_files, with_pixels

    if not (src / ADAPTER_CONFIG).is_file():
        raise RemoteGLMError(f"{src} has no LoRA adapter ({ADAPTER_CONFIG}); nothing to merge")
    base = adapter_base(src)
    pixels = run_pixels(src, family)  # before any work: a bad record is one line
    model, _ = load_hf(src, family, None, "cpu", dtype or base_dtype(base), merge=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size=max_shard_size or SHARD_SIZE)
    for f in serving_files():  # the run's copies; the base's where the run has none
        for d in (src, base):
            if (d / f).is_file():
                shutil.copyfile(d / f, tmp / f)
                break
    pc_file = tmp / "preprocessor_config.json"
    if pc_file.is_file():
        pc = with_pixels(read_json(pc_file, require_object=True), *pixels)
        write_json_atomic(pc_file, pc, indent=2)
        vc = family.video_config(pc)
        if vc is not None and not (tmp / VIDEO_CONFIG).is_file():
            write_json_atomic(tmp / VIDEO_CONFIG, vc, indent=2)
    if dst.exists():
        dst.rmdir()
    tmp.replace(dst)
    return dst


def base_dtype(base: Path) -> str | None:
    """The dtype the base folder's weights are stored in (config.json ``dtype`` / ``torch_dtype``,
    or its text config's): a bf16 model merges to bf16, not to a float32 copy twice its size."""
    cfg = read_json(base / "config.json", require_object=True)
    for c in (cfg, cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}):
        v = c.get("dtype") or c.get("torch_dtype")
        if isinstance(v, str) and v in ("float32", "float16", "bfloat16"):
            return v
    return None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m remoteglm.train.merge", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="fine-tune run folder (has latest, model_config.json with use_lora/use_qlora)")
    ap.add_argument("dst", help="new folder for the merged checkpoint")
    ap.add_argument("--tokenizer", help="ice_text.model if the run folder has none")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None,
                    help="dtype of the saved weights [VisualGLM: as loaded; transformers families: the base's]")
    ap.add_argument("--max_shard_size", default=None, metavar="SIZE",
                    help="transformers families: largest safetensors shard, e.g. 5GB, 500MB [5GB, as published folders]")
    add_trust_arg(ap)
    a = ap.parse_args(argv)
    from remoteglm import compat
    from remoteglm.model.unpickle import trust_checkpoints

    compat.single_process_env()
    trust_checkpoints(a.trust_checkpoint)
    out = merge_checkpoint(a.src, a.dst, a.tokenizer, a.dtype, a.max_shard_size)
    print(f"merged checkpoint written to {out}")
    if (out / "config.json").is_file():
        print(f"check it for vLLM / SGLang and get their commands: python -m remoteglm check_serving {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
