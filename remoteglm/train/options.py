"""The one option set of ``remoteglm finetune`` / ``finetune_visualglm.py`` / ``finetune.sh``, for
every model family. Options left out take the family's recipe (``Family.recipe``); options only
some families take are refused in one line for the others (``Family.train_options``); every
setting is checked here before any data or model is read.
"""

from __future__ import annotations

import argparse
import math

from remoteglm.errors import RemoteGLMError
from remoteglm.options import Parser, add_trust_arg

EXAMPLES = """examples:
  # the default job: the tiny VisualGLM on the bundled sample, CPU, ~1 min
  remoteglm finetune --from_pretrained checkpoints/visualglm-tiny --train_data data/sample/sample_train.json
  # VisualGLM-6B, QLoRA on a 12 GB card
  remoteglm finetune --from_pretrained checkpoints/visualglm-6b --train_data data/ucm/ucm_train.json \\
      --valid_data data/ucm/ucm_val.json --use_qlora --dtype bf16
  # Qwen2.5-VL-7B, QLoRA at 448 px on one card
  remoteglm finetune --from_pretrained checkpoints/Qwen2.5-VL-7B-Instruct --train_data data/ucm/ucm_train.json \\
      --use_qlora --max_pixels 200704
  # the largest image budget and batch a 16 GB card holds (the table only: --plan_only)
  remoteglm finetune --from_pretrained checkpoints/Qwen2.5-VL-7B-Instruct --train_data data/ucm/ucm_train.json \\
      --use_qlora --vram 16
  # continue a run that stopped (same settings; --train_iters may be raised)
  remoteglm finetune ... --resume checkpoints/finetune-visualglm-11-22-10-00-00
"""

# options whose default is the family's (``Family.recipe``)
RECIPE = ("train_iters", "batch_size", "lr", "lora_rank", "lora_alpha", "lora_dropout", "num_workers", "experiment_name")


def build_parser(prog: str = "remoteglm finetune") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="LoRA / QLoRA / DoRA fine-tuning of any model family "
                                "(VisualGLM-6B on sat + DeepSpeed; the transformers families on the HF Trainer + peft).",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--from_pretrained", required=True, help="base model folder (any family; a run folder with --resume)")
    g.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="training precision [bf16 on GPUs that have it, else fp16; fp32 on the CPU]")
    g.add_argument("--fp16", action="store_true", help=argparse.SUPPRESS)  # the older spellings of --dtype
    g.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--tokenizer", help="VisualGLM: ice_text.model (default: the one inside --from_pretrained)")
    g.add_argument("--min_pixels", type=int, default=None, help="transformers families: smallest image area after resizing")
    g.add_argument("--max_pixels", type=int, default=None,
                   help="transformers families: largest image area after resizing (one token per 28 x 28 pixels; Qwen3-VL: 32 x 32)")
    add_trust_arg(g)  # --trust_checkpoint
    g = p.add_argument_group("data")
    g.add_argument("--train_data", required=True, nargs="+", help="fine-tune JSON ({img, prompt, label} list) or dataset_*_zh.json")
    g.add_argument("--valid_data", nargs="*", default=None, help="held-out JSON for the eval loss")
    g.add_argument("--image_root", help="folder for relative image paths (default: the JSON file's folder)")
    g.add_argument("--max_source_length", type=int, default=128, help="prompt text tokens (image tokens come on top) [128]")
    g.add_argument("--max_target_length", type=int, default=256, help="answer tokens [256]")
    g.add_argument("--max_length", type=int, default=None,
                   help="transformers families: tokens per sample, image tokens included [source + target + image tokens]")
    g.add_argument("--num_workers", type=int, default=None, help="DataLoader workers that decode images [the family's]")
    g = p.add_argument_group("LoRA / QLoRA / DoRA")
    g.add_argument("--lora_rank", type=int, default=None, help="LoRA rank [VisualGLM 10, others 8]")
    g.add_argument("--lora_alpha", type=float, default=None,
                   help="LoRA alpha; scale = alpha / rank [VisualGLM 1 (its tiny model: rank), others 2 x rank]")
    g.add_argument("--lora_dropout", type=float, default=None, help="dropout on the LoRA input [VisualGLM 0, others 0.05]")
    g.add_argument("--layer_range", type=int, nargs="*", default=None,
                   help="language-model layer INDICES to adapt, e.g. '0 14' = layers 0 and 14 [all]")
    g.add_argument("--use_qlora", action="store_true", help="NF4-quantised language model (bitsandbytes), LoRA on top")
    g.add_argument("--use_dora", action="store_true", help="transformers families: weight-decomposed LoRA (DoRA)")
    g.add_argument("--tune_merger", action="store_true", help="transformers families: also train the vision merger fully")
    g.add_argument("--train_qformer", action="store_true",
                   help="VisualGLM: also train the Q-Former and glm_proj (disables the feature cache)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--train_iters", type=int, default=None, help="optimizer steps [300; tiny transformers models 150]")
    g.add_argument("--batch_size", type=int, default=None, help="micro-batch per GPU [VisualGLM 4, others 1]")
    g.add_argument("--vram", default=None, metavar="GIB",
                   help="the card's memory, e.g. 12, 16, 24: choose the largest --max_pixels and --batch_size that fit "
                        "(given ones win) from the memory model in remoteglm/train/planner.py, print the table, record it")
    g.add_argument("--plan_only", action="store_true", help="print the memory table (with --vram: the plan) and stop")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--lr", type=float, default=None, help="peak learning rate [1e-4; tiny models 1e-2]")
    g.add_argument("--warmup", type=float, default=0.02, help="fraction of steps with linear warmup [0.02]")
    g.add_argument("--lr_decay_style", default="cosine", choices=["cosine", "linear", "constant"])
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--gradient_clipping", type=float, default=1.0)
    g.add_argument("--zero_stage", type=int, default=None, choices=[0, 1, 2, 3],
                   help="DeepSpeed ZeRO stage [VisualGLM 1; others 2 with several GPUs, else 0 = no DeepSpeed]")
    g.add_argument("--no_gradient_checkpointing", action="store_true", help="keep activations (faster, more memory)")
    g.add_argument("--seed", type=int, default=1234)
    g = p.add_argument_group("image-feature cache (VisualGLM)")
    g.add_argument("--feature_cache", default=None,
                   help="folder for cached frozen image features (ViT + Q-Former + glm_proj) [cache/features]")
    g.add_argument("--no_feature_cache", action="store_true", help="run the image encoder every step")
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--save", default="checkpoints", help="parent folder of the run folder [checkpoints]")
    g.add_argument("--experiment_name", default=None, help="run folder prefix; a timestamp is added [finetune-<family>]")
    g.add_argument("--save_interval", type=int, default=None,
                   help="checkpoint every N steps; a killed run resumes from the last one [min(100, train_iters)]")
    g.add_argument("--keep_checkpoints", type=int, default=2,
                   help="complete checkpoints to keep (older ones go once a newer one is complete; 0 = all) [2]")
    g.add_argument("--eval_interval", type=int, default=None, help="eval loss every N steps [save_interval]")
    g.add_argument("--eval_iters", type=int, default=10, help="batches per evaluation [10]")
    g.add_argument("--log_interval", type=int, default=10, help="TensorBoard scalars every N steps (RUN/runs/) [10]")
    g.add_argument("--resume", help="a run folder of this command: continue at its latest complete checkpoint "
                                    "(same settings; the run's total --train_iters may be raised)")
    g.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


# options only some families take: (dest, what a user set means it was given)
_GIVEN = {"tokenizer": lambda v: v is not None, "min_pixels": lambda v: v is not None,
          "max_pixels": lambda v: v is not None, "max_length": lambda v: v is not None, "use_dora": bool,
          "tune_merger": bool, "train_qformer": bool, "feature_cache": lambda v: v is not None,
          "no_feature_cache": bool}


def resolve(opts, family) -> None:
    """Fill what a user left out from ``family``'s recipe and refuse what it does not take."""
    from pathlib import Path

    for dest, given in _GIVEN.items():
        if given(getattr(opts, dest)) and dest not in family.train_options:
            raise RemoteGLMError(f"--{dest} is not an option of {family.label} fine-tuning (it is for "
                                 "other model families); leave it out")
    if opts.fp16 and opts.bf16:
        raise RemoteGLMError("--fp16 and --bf16 exclude each other: pass --dtype fp16 or --dtype bf16")
    if opts.fp16 or opts.bf16:
        opts.dtype = opts.dtype or ("fp16" if opts.fp16 else "bf16")
    recipe = family.recipe(Path(opts.from_pretrained), opts.lora_rank)
    for k in RECIPE:
        if getattr(opts, k) is None:
            setattr(opts, k, recipe[k])
    opts.save_interval = opts.save_interval or max(1, min(100, opts.train_iters or 1))
    opts.eval_interval = opts.eval_interval or opts.save_interval


def validate(opts) -> None:
    """Every setting, one line each (``finetune.sh`` names its variables for the common ones)."""
    for flag in ("train_iters", "batch_size", "gradient_accumulation_steps", "lora_rank", "max_source_length",
                 "max_target_length", "save_interval", "eval_interval", "eval_iters", "log_interval"):
        v = getattr(opts, flag)
        if v is None or v < 1:
            raise RemoteGLMError(f"--{flag} must be a whole number >= 1, got {v} (finetune.sh: TRAIN_ITERS, BATCH_SIZE, "
                                 "LORA_RANK, MAX_SOURCE_LEN, MAX_TARGET_LEN are these settings)")
    for flag in ("max_length", "min_pixels", "max_pixels"):
        v = getattr(opts, flag)
        if v is not None and v < 1:
            raise RemoteGLMError(f"--{flag} must be >= 1, got {v}")
    if opts.num_workers < 0 or opts.keep_checkpoints < 0:
        raise RemoteGLMError("--num_workers and --keep_checkpoints must be >= 0 (--keep_checkpoints 0 keeps all)")
    if not (opts.lr > 0 and math.isfinite(opts.lr)) or not opts.lora_alpha > 0:
        raise RemoteGLMError(f"--lr and --lora_alpha must be > 0, got {opts.lr} and {opts.lora_alpha}")
    if not 0 <= opts.warmup < 1 or not 0 <= opts.lora_dropout < 1:
        raise RemoteGLMError(f"--warmup and --lora_dropout are fractions in [0, 1), got {opts.warmup} and {opts.lora_dropout}")
    if opts.min_pixels and opts.max_pixels and opts.min_pixels > opts.max_pixels:
        raise RemoteGLMError(f"--min_pixels {opts.min_pixels} is more than --max_pixels {opts.max_pixels}")
    if opts.max_pixels is not None and opts.max_pixels < 28 * 28:
        raise RemoteGLMError("--max_pixels must be at least 784 (28 x 28 pixels: the smallest image token)")
    if opts.layer_range is not None and any(i < 0 for i in opts.layer_range):
        raise RemoteGLMError("--layer_range takes layer indices >= 0")
