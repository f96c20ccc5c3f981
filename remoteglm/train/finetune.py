"""LoRA / QLoRA fine-tuning of VisualGLM-6B with sat's `training_main` and DeepSpeed.

    python finetune_visualglm.py --from_pretrained checkpoints/visualglm-6b \\
        --train_data data/ucm/ucm_train.json --valid_data data/ucm/ucm_val.json

Single process: plain `python`; several GPUs: `deepspeed --num_gpus N finetune_visualglm.py ...`
(what finetune.sh does). Defaults follow the official VisualGLM recipe (LoRA rank 10 on all
layers, lr 1e-4 cosine, warmup 0.02, ZeRO 1) with the fixes in remoteglm.train.sat_patches.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.serve.options import add_trust_arg

EXAMPLES = """examples:
  # the default job: tiny model on the bundled sample, CPU, ~1 min
  python finetune_visualglm.py --from_pretrained checkpoints/visualglm-tiny --train_data data/sample/sample_train.json
  # VisualGLM-6B, QLoRA on a 12 GB card
  python finetune_visualglm.py --from_pretrained checkpoints/visualglm-6b --train_data data/ucm/ucm_train.json \\
      --valid_data data/ucm/ucm_val.json --use_qlora --bf16
  # continue a run that stopped
  python finetune_visualglm.py ... --resume checkpoints/finetune-visualglm-11-22-10-00
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune_visualglm.py", description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--from_pretrained", required=True, help="base checkpoint directory (sat or HF format)")
    g.add_argument("--tokenizer", help="ice_text.model (default: the one inside --from_pretrained)")
    add_trust_arg(g)  # --trust-checkpoint
    g = p.add_argument_group("data")
    g.add_argument("--train_data", required=True, nargs="+", help="fine-tune JSON ({img, prompt, label} list) or dataset_*_zh.json")
    g.add_argument("--valid_data", nargs="*", default=None, help="held-out JSON for the eval loss")
    g.add_argument("--image_root", help="folder for relative image paths (default: the JSON file's folder)")
    g.add_argument("--max_source_length", type=int, default=128,
                   help="prompt text tokens (the 32 image slots come on top; the official 64 counted them in) [128]")
    g.add_argument("--max_target_length", type=int, default=256, help="answer tokens [256]")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader workers that decode images [2]")
    g = p.add_argument_group("LoRA / QLoRA")
    g.add_argument("--lora_rank", type=int, default=10, help="LoRA rank [10]")
    g.add_argument("--lora_alpha", type=float, default=1.0, help="LoRA alpha; scale = alpha / rank [1]")
    g.add_argument("--lora_dropout", type=float, default=0.0, help="dropout on the LoRA input [0]")
    g.add_argument("--layer_range", type=int, nargs="*", default=None,
                   help="ChatGLM layer INDICES to adapt, e.g. '0 14' = layers 0 and 14 (default: all)")
    g.add_argument("--use_qlora", action="store_true", help="NF4-quantise every ChatGLM linear layer (bitsandbytes)")
    g.add_argument("--train_qformer", action="store_true", help="also train the Q-Former and glm_proj (disables the feature cache)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--train_iters", type=int, default=300, help="optimizer steps [300]")
    g.add_argument("--batch_size", type=int, default=4, help="micro-batch per GPU [4]")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--warmup", type=float, default=0.02, help="fraction of steps with linear warmup [0.02]")
    g.add_argument("--lr_decay_style", default="cosine", choices=["cosine", "linear", "constant"])
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--gradient_clipping", type=float, default=1.0)
    g.add_argument("--zero_stage", type=int, default=1, choices=[1, 2], help="DeepSpeed ZeRO stage [1]")
    prec = g.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="fp16 mixed precision (GPU)")
    prec.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU; default on GPUs that support it)")
    g.add_argument("--no_gradient_checkpointing", action="store_true", help="keep activations (faster, more memory)")
    g.add_argument("--seed", type=int, default=1234)
    g = p.add_argument_group("image-feature cache")
    g.add_argument("--feature_cache", default="cache/features",
                   help="folder for cached frozen image features (ViT + Q-Former + glm_proj) [cache/features]")
    g.add_argument("--no_feature_cache", action="store_true", help="run the image encoder every step")
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--save", default="checkpoints", help="parent folder of the run folder [checkpoints]")
    g.add_argument("--experiment_name", default="finetune-visualglm", help="run folder prefix (a timestamp is added)")
    g.add_argument("--save_interval", type=int, default=None, help="checkpoint every N steps [train_iters]")
    g.add_argument("--eval_interval", type=int, default=None, help="eval loss every N steps [save_interval]")
    g.add_argument("--eval_iters", type=int, default=10, help="batches per evaluation [10]")
    g.add_argument("--log_interval", type=int, default=10, help="TensorBoard scalars every N steps (in SAVE/runs/) [10]")
    g.add_argument("--resume", help="a run folder written by this script: continue at its saved step")
    g.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def _sat_args(opts, config, ds_config: dict, save_dir: Path):
    """sat's argument namespace. Parsed in inference mode (sat refuses CPU training at parse time),
    then switched to fine-tuning exactly as sat would for a given DeepSpeed config."""
    from sat import get_args

    from remoteglm import compat

    argv = [
        "--mode", "inference", "--skip-init",
        "--train-iters", str(opts.train_iters), "--batch-size", str(opts.batch_size),
        "--lr", str(opts.lr), "--warmup", str(max(opts.warmup, 1e-8)), "--lr-decay-style", opts.lr_decay_style,
        "--seed", str(opts.seed), "--distributed-backend", compat.distributed_backend(),
        "--zero-stage", str(opts.zero_stage), "--num-workers", str(opts.num_workers),
        "--log-interval", str(opts.log_interval), "--split", "1",
        "--save-interval", str(opts.save_interval), "--eval-iters", str(opts.eval_iters),
        "--eval-interval", str(opts.eval_interval),
        "--train-data", *opts.train_data, "--experiment-name", opts.experiment_name,
        "--save", str(save_dir),
    ]
    if opts.valid_data:
        argv += ["--valid-data", *opts.valid_data]
    if not opts.no_gradient_checkpointing:
        argv += ["--checkpoint-activations"]
    args = get_args(argv)
    args.mode = "finetune"
    args.deepspeed = True
    args.deepspeed_config = ds_config
    args.fp16 = ds_config["fp16"]["enabled"]
    args.bf16 = ds_config["bf16"]["enabled"]
    args.gradient_accumulation_steps = opts.gradient_accumulation_steps
    args.eval_batch_size = opts.batch_size
    args.deepspeed_activation_checkpointing = not opts.no_gradient_checkpointing
    args.resume_dataloader = True
    args.summary_dir = str(save_dir)  # sat adds runs/<run name>
    if not compat.on_cpu() and args.deepspeed_activation_checkpointing:
        import deepspeed
        from sat import mpu

        deepspeed.checkpointing.configure(mpu, deepspeed_config=ds_config, num_checkpoints=config.num_layers)
    return args


def deepspeed_config(opts) -> dict:
    return {
        "train_micro_batch_size_per_gpu": opts.batch_size,
        "gradient_accumulation_steps": opts.gradient_accumulation_steps,
        "gradient_clipping": opts.gradient_clipping,
        "zero_optimization": {"stage": opts.zero_stage, "contiguous_gradients": False, "overlap_comm": False},
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": bool(opts.fp16), "loss_scale": 0, "loss_scale_window": 400, "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": bool(opts.bf16)},
        # torch's AdamW: DeepSpeed's fused Adam JIT-builds for minutes and needs nvcc.
        "optimizer": {"type": "AdamW", "params": {"lr": opts.lr, "betas": [0.9, 0.95], "eps": 1e-8,
                                                  "weight_decay": opts.weight_decay, "torch_adam": True}},
    }


class Progress:
    """tqdm bar over optimizer steps with loss / lr / eval loss; only rank 0 draws."""

    def __init__(self, total: int, rank: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True,
                        disable=rank != 0, file=sys.stderr)
        self.last_loss = math.nan
        self.eval_loss = None
        self.losses: list[tuple[int, float, float]] = []

    def step(self, iteration: int, loss: float, lr: float) -> None:
        self.last_loss = loss
        self.losses.append((iteration, loss, lr))
        post = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
        if self.eval_loss is not None:
            post["eval"] = f"{self.eval_loss:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(iteration - self.bar.n)

    def validation(self, step, loss: float) -> None:
        self.eval_loss = loss
        self.bar.write(f"step {step}: eval loss {loss:.4f}")

    def close(self) -> None:
        self.bar.close()


def _device_and_dtype(opts):
    import torch

    from remoteglm import compat

    if compat.on_cpu():
        if opts.fp16 or opts.bf16:
            print("warning: no GPU: training in fp32 on the CPU (fp16/bf16 ignored)", file=sys.stderr)
        opts.fp16 = opts.bf16 = False
        return "cpu", torch.float32
    if not opts.fp16 and not opts.bf16:
        opts.bf16 = torch.cuda.is_bf16_supported()
        opts.fp16 = not opts.bf16
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}", (torch.bfloat16 if opts.bf16 else torch.float16)


def _load_base(opts, dtype):
    """The base model. ``random:<registry name>`` builds a randomly initialised model of that size
    instead (benchmarks: memory and speed are those of the real weights); it needs --tokenizer."""
    import dataclasses

    import torch

    from remoteglm.model.checkpoint import load_model

    name = opts.from_pretrained
    if not name.startswith("random:"):
        return load_model(name, tokenizer=opts.tokenizer, device="cpu", dtype=dtype)
    from remoteglm.model.config import get_config
    from remoteglm.model.tokenizer import ChatGLMTokenizer
    from remoteglm.model.visualglm import build_model

    if not opts.tokenizer:
        raise RemoteGLMError("random:<size> needs --tokenizer (any ice_text.model, e.g. the tiny one)")
    tok = ChatGLMTokenizer.from_pretrained(opts.tokenizer)
    config = get_config(name.split(":", 1)[1])
    vocab = max(config.vocab_size, tok.vocab_size)
    config = dataclasses.replace(config.with_tokenizer(tok), vocab_size=vocab)
    torch.manual_seed(opts.seed)
    return build_model(config, device="cpu", dtype=dtype), tok, config


@cli_entry
def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    from remoteglm import compat

    compat.single_process_env()
    return run(opts)


def run(opts) -> int:
    import torch

    from remoteglm import compat
    from remoteglm.model.checkpoint import trust_checkpoints
    from remoteglm.train.data import FinetuneDataset, SampleEncoder, collate, load_records

    trust_checkpoints(opts.trust_checkpoint)
    opts.save_interval = opts.save_interval or opts.train_iters
    opts.eval_interval = opts.eval_interval or opts.save_interval
    if opts.train_qformer and not opts.no_feature_cache:
        opts.no_feature_cache = True
    device, dtype = _device_and_dtype(opts)
    rank = int(os.environ.get("RANK", 0))

    resume_dir = None
    save_parent = Path(opts.save)
    if opts.resume:
        resume_dir = Path(opts.resume)
        if not (resume_dir / "latest").is_file():
            raise RemoteGLMError(f"--resume {resume_dir}: no 'latest' file there; pass a run folder written by this script "
                                 f"(it holds latest, model_config.json and numbered step folders)")
        save_parent = resume_dir.parent

    # Data first: a bad file should fail before minutes of model loading.
    t0 = time.time()
    records = {"train": [r for path in opts.train_data for r in load_records(path, "train", opts.seed, opts.image_root)]}
    if opts.valid_data:
        records["valid"] = [r for path in opts.valid_data for r in load_records(path, "val", opts.seed, opts.image_root)]
    if not opts.from_pretrained.startswith("random:"):
        from remoteglm.model.checkpoint import detect_format

        detect_format(opts.from_pretrained)
    # Only now the heavy imports (sat, DeepSpeed: seconds): bad input above fails at once.
    compat.patch_for_cpu_training()
    from remoteglm.train import lora_setup, sat_patches
    from remoteglm.train.feature_cache import FeatureCache

    model, tokenizer, config = _load_base(opts, dtype)
    encoder = SampleEncoder(tokenizer, opts.max_source_length, opts.max_target_length, config.image_length)

    cache = None
    if not opts.no_feature_cache:
        cache = FeatureCache(opts.feature_cache, model)
        images = sorted({r.img for rs in records.values() for r in rs if r.img.exists()})
        cache.fill(model, images, device=device, dtype=dtype, rank=rank)

    datasets = {k: FinetuneDataset(v, encoder, config.vit.image_size, features=cache.get if cache else None)
                for k, v in records.items()}
    if rank == 0:
        for k, ds in datasets.items():
            print(f"{k} data: {ds.report()}", file=sys.stderr)

    torch.manual_seed(opts.seed)  # LoRA's A matrices are random: same seed, same run
    lora_setup.prepare(model, opts, config)
    # The model was built from its checkpoint config, not from sat's args: switch sat's
    # per-layer activation checkpointing on here (ChatGLM layers; the image encoder is frozen).
    model.transformer.checkpoint_activations = not opts.no_gradient_checkpointing
    model.transformer.checkpoint_num_layers = 1
    if cache is not None:
        lora_setup.park_image_encoder(model)

    if resume_dir is None:
        # sat names the run folder <name>-MM-DD-HH-MM; two runs in one minute would share it.
        stamp = time.strftime("%m-%d-%H-%M")
        base, k = opts.experiment_name, 2
        while (save_parent / f"{opts.experiment_name}-{stamp}").exists():
            opts.experiment_name = f"{base}{k}"
            k += 1
    ds_config = deepspeed_config(opts)
    sat_args = _sat_args(opts, config, ds_config, save_parent)
    if resume_dir is not None:
        sat_args.load = str(resume_dir)
        sat_args.mode = "pretrain"  # sat continues the iteration count only in this mode
        # sat restores CUDA RNG trackers that do not exist without a GPU.
        sat_args.no_load_rng = compat.on_cpu()
        sat_args.experiment_name = resume_dir.name
        compat.trust_sat_checkpoint_pickles()

    progress = Progress(opts.train_iters, rank)
    state = {"first": True, "run_dir": None}

    def after_save(iteration, engine, optimizer, args):
        run_dir = Path(args.save)
        state["run_dir"] = run_dir
        if rank == 0:
            lora_setup.write_model_config(run_dir, model, tokenizer)
        lora_setup.save_optimizer(run_dir, iteration, optimizer)
        if rank == 0:
            progress.bar.write(f"saved step {iteration} -> {run_dir}")

    sat_patches.apply(after_save=after_save, on_validation=progress.validation)

    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)

    def forward(data_iterator, model, args, timers, train: bool):
        inner = model.module if hasattr(model, "module") else model
        if train and state["first"]:
            state["first"] = False
            state["t_train"] = time.time()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            progress.bar.reset(total=args.train_iters)
            progress.bar.update(args.iteration)
            if resume_dir is not None:
                lora_setup.load_optimizer(resume_dir, args.iteration, model.optimizer)
                # sat's resume_dataloader only works with its multi-rank sampler; replay the
                # batches already trained so the run sees exactly the data it would have seen.
                skip = args.iteration * args.gradient_accumulation_steps
                progress.bar.write(f"resuming at step {args.iteration}: skipping {skip} batches already trained")
                for _ in range(skip):
                    next(data_iterator)
        batch = next(data_iterator)
        p = next(inner.parameters())
        ids = batch["input_ids"].to(p.device)
        labels = batch["labels"].to(p.device)
        kw = {"pre_image": encoder.pre_image}
        if "image_embeds" in batch:
            kw["image_embeds"] = batch["image_embeds"].to(p.device, dtype)
        else:
            kw["image"] = batch["image"].to(p.device, dtype)
        logits = model(input_ids=ids, **kw)[0]
        loss = loss_fn(logits[:, :-1].float().reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1))
        if train:
            lr = model.optimizer.param_groups[0]["lr"] if hasattr(model, "optimizer") else opts.lr
            # sat increments args.iteration after this step returns.
            progress.step(args.iteration + 1, loss.item(), lr)
        return loss, {}

    def create_dataset(path, args):
        return datasets[path]

    from sat.training.deepspeed_training import training_main

    # sat asks for one dataset per path; ours are built (and merged) already, so its "paths"
    # are just our keys.
    sat_args.train_data = ["train"]
    if opts.valid_data:
        sat_args.valid_data = ["valid"]
    try:
        training_main(sat_args, model_cls=model,
                      forward_step_function=functools.partial(forward, train=True),
                      forward_step_eval=functools.partial(forward, train=False),
                      create_dataset_function=create_dataset,
                      collate_fn=functools.partial(collate, pad_token_id=tokenizer.pad_token_id))
    finally:
        progress.close()
        sat_patches.restore()
    run_dir = state["run_dir"]
    if rank == 0 and run_dir is not None:
        first = progress.losses[0][1] if progress.losses else math.nan
        last = sum(l for _, l, _ in progress.losses[-10:]) / max(1, len(progress.losses[-10:]))
        import resource

        steps = len(progress.losses)
        train_s = time.time() - state.get("t_train", t0)
        world = int(os.environ.get("WORLD_SIZE", 1))
        summary = {"run_dir": str(run_dir), "steps": opts.train_iters, "first_loss": first,
                   "final_loss_avg10": last, "eval_loss": progress.eval_loss,
                   "seconds": round(time.time() - t0, 1), "train_seconds": round(train_s, 2),
                   "samples_per_second": round(steps * opts.batch_size * opts.gradient_accumulation_steps * world / train_s, 3),
                   "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
                   "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   "trainable_parameters": getattr(model, "trainable_parameters", None),
                   # the evaluation's leakage guard reads these
                   "train_data": [str(Path(p).resolve()) for p in opts.train_data],
                   "losses": progress.losses}
        tmp = run_dir / "train_summary.json.tmp"
        tmp.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, run_dir / "train_summary.json")
        (save_parent / "LAST_RUN").write_text(str(run_dir) + "\n", encoding="utf-8")
        print(f"done: loss {first:.4f} -> {last:.4f} in {summary['seconds']} s; checkpoint: {run_dir}")
        print(f"chat with it: python cli_demo.py --from_pretrained {run_dir}")
    return 0
