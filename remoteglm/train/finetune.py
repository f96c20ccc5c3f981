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
import math
import os
import sys
import time
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import add_trust_arg

EXAMPLES = """examples:
  # the default job: tiny model on the bundled sample, CPU, ~1 min
  python finetune_visualglm.py --from_pretrained checkpoints/visualglm-tiny --train_data data/sample/sample_train.json
  # VisualGLM-6B, QLoRA on a 12 GB card
  python finetune_visualglm.py --from_pretrained checkpoints/visualglm-6b --train_data data/ucm/ucm_train.json \\
      --valid_data data/ucm/ucm_val.json --use_qlora --bf16
  # continue a run that stopped
  python finetune_visualglm.py ... --resume checkpoints/finetune-visualglm-11-22-10-00
  # a GLM-4.1V / Qwen2.5-VL folder goes to the transformers engine (its options: add --help after it)
  python finetune_visualglm.py --from_pretrained checkpoints/Qwen2.5-VL-7B-Instruct --help
"""


def add_schedule_args(p: argparse.ArgumentParser, batch_size: int):
    """The optimisation options both engines share (steps, batch, LR schedule); returns the group."""
    g = p.add_argument_group("optimisation")
    g.add_argument("--train_iters", type=int, default=300, help="optimizer steps [300]")
    g.add_argument("--batch_size", type=int, default=batch_size, help=f"micro-batch per GPU [{batch_size}]")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--warmup", type=float, default=0.02, help="fraction of steps with linear warmup [0.02]")
    g.add_argument("--lr_decay_style", default="cosine", choices=["cosine", "linear", "constant"])
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--gradient_clipping", type=float, default=1.0)
    return g


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
    g = add_schedule_args(p, batch_size=4)
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
    g.add_argument("--save_interval", type=int, default=None,
                   help="checkpoint every N steps; a killed run resumes from the last one [min(100, train_iters)]")
    g.add_argument("--keep_checkpoints", type=int, default=2,
                   help="complete step folders to keep (older ones are deleted once a newer one is complete; 0 = all) [2]")
    g.add_argument("--eval_interval", type=int, default=None, help="eval loss every N steps [save_interval]")
    g.add_argument("--eval_iters", type=int, default=10, help="batches per evaluation [10]")
    g.add_argument("--log_interval", type=int, default=10, help="TensorBoard scalars every N steps (in SAVE/runs/) [10]")
    g.add_argument("--resume", help="a run folder written by this script: continue at its latest complete step "
                                    "(same settings; the run's total --train_iters may be raised)")
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


def _device_and_dtype(opts):
    import torch

    from remoteglm import compat

    if compat.on_cpu():
        if opts.fp16 or opts.bf16:
            print("warning: no GPU: training in fp32 on the CPU (fp16/bf16 ignored)", file=sys.stderr)
        opts.fp16 = opts.bf16 = False
        return "cpu", torch.float32
    from remoteglm.device import parse_dtype

    dtype = parse_dtype("bf16" if opts.bf16 else "fp16" if opts.fp16 else None, "cuda")
    opts.bf16, opts.fp16 = dtype == torch.bfloat16, dtype == torch.float16
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}", dtype


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
    handed = _vlm_handoff(sys.argv[1:] if argv is None else argv)
    if handed is not None:
        return handed
    opts = build_parser().parse_args(argv)
    from remoteglm import compat

    compat.single_process_env()
    return run(opts)


def _vlm_handoff(argv: list[str]) -> int | None:
    """GLM-4.1V / Qwen2.5-VL folders go to the transformers engine (remoteglm.train.vlm_finetune),
    with the same arguments; None for VisualGLM checkpoints."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--from_pretrained")
    known, _ = ap.parse_known_args(argv)
    from remoteglm.model.vlm import is_vlm

    if not known.from_pretrained or known.from_pretrained.startswith("random:") or not is_vlm(known.from_pretrained):
        return None
    from remoteglm.train import vlm_finetune

    return vlm_finetune.main(argv)


def _peek_config(opts):
    """The base model's config from its JSON alone (no weights read): for checks before loading."""
    from remoteglm.io import read_json
    from remoteglm.model.checkpoint import HF_CONFIG, SAT_CONFIG, detect_format
    from remoteglm.model.config import VisualGLMConfig, get_config

    if opts.from_pretrained.startswith("random:"):
        return get_config(opts.from_pretrained.split(":", 1)[1])
    fmt, d = detect_format(opts.from_pretrained)
    if fmt == "sat":
        return VisualGLMConfig.from_sat_dict(read_json(d / SAT_CONFIG, require_object=True), source=str(d / SAT_CONFIG))
    return VisualGLMConfig.from_hf_dict(read_json(d / HF_CONFIG, require_object=True), source=str(d / HF_CONFIG))


def validate(opts, config, records: dict) -> None:
    """Every setting and the data, checked before minutes of model loading; one line each."""
    positive = {"--train_iters": opts.train_iters, "--batch_size": opts.batch_size,
                "--gradient_accumulation_steps": opts.gradient_accumulation_steps, "--lora_rank": opts.lora_rank,
                "--max_source_length": opts.max_source_length, "--max_target_length": opts.max_target_length,
                "--save_interval": opts.save_interval, "--eval_interval": opts.eval_interval,
                "--eval_iters": opts.eval_iters, "--log_interval": opts.log_interval}
    for flag, v in positive.items():
        if v is None or v < 1:
            raise RemoteGLMError(f"{flag} must be a whole number >= 1, got {v} (finetune.sh: TRAIN_ITERS, BATCH_SIZE, "
                                 "LORA_RANK, MAX_SOURCE_LEN, MAX_TARGET_LEN are these settings)")
    if opts.num_workers < 0 or opts.keep_checkpoints < 0:
        raise RemoteGLMError("--num_workers and --keep_checkpoints must be >= 0")
    if not opts.lr > 0 or not opts.lora_alpha > 0:
        raise RemoteGLMError(f"--lr and --lora_alpha must be > 0, got {opts.lr} and {opts.lora_alpha}")
    if not 0 <= opts.warmup < 1 or not 0 <= opts.lora_dropout < 1:
        raise RemoteGLMError(f"--warmup and --lora_dropout are fractions in [0, 1), got {opts.warmup} and {opts.lora_dropout}")
    if opts.layer_range is not None:
        bad = [i for i in opts.layer_range if not 0 <= i < config.num_layers]
        if bad or not opts.layer_range:
            raise RemoteGLMError(f"--layer_range (LAYER_RANGE) {bad or '(empty)'}: {opts.from_pretrained} has "
                                 f"{config.num_layers} ChatGLM layers, indices 0..{config.num_layers - 1}")
    for split, recs in records.items():
        if not recs:
            raise RemoteGLMError(f"no {split} samples in {' '.join(getattr(opts, split + '_data'))}")
        found = sum(1 for r in recs if r.img.is_file())
        if found == 0:
            raise RemoteGLMError(f"none of the {len(recs)} {split} images exist (first: {recs[0].img}); "
                                 "fix the img paths or pass --image_root (IMAGE_ROOT) to the folder that holds them")


class Progress:
    """tqdm bar over optimizer steps with loss / lr / eval loss; only rank 0 draws. Keeps the
    whole run's per-step losses (a resumed run starts with the earlier ones)."""

    def __init__(self, total: int, rank: int, losses=(), eval_losses=()):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, disable=rank != 0, file=sys.stderr)
        self.losses: list[tuple[int, float, float]] = [tuple(x) for x in losses]
        self.eval_losses: list[tuple[int, float]] = [tuple(x) for x in eval_losses]
        self._micro: list[float] = []

    @property
    def eval_loss(self):
        return self.eval_losses[-1][1] if self.eval_losses else None

    def micro(self, iteration: int, loss: float, lr: float, per_step: int) -> None:
        """One micro-batch's loss; a step is recorded once all ``per_step`` of its micro-batches ran."""
        self._micro.append(loss)
        if len(self._micro) < per_step:
            return
        mean = sum(self._micro) / len(self._micro)
        self._micro = []
        self.losses.append((iteration, mean, lr))
        post = {"loss": f"{mean:.4f}", "lr": f"{lr:.2e}"}
        if self.eval_loss is not None:
            post["eval"] = f"{self.eval_loss:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(iteration - self.bar.n)

    def validation(self, step, loss: float) -> None:
        self.eval_losses.append((step, loss))
        self.bar.write(f"step {step}: eval loss {loss:.4f}")

    def close(self) -> None:
        self.bar.close()


def _run_name(opts, save_parent: Path) -> str:
    """The new run folder's name, chosen by rank 0 and shared with every rank and node (sat
    stamps the minute per process: ranks that straddle a minute would save into two folders)."""
    import torch

    name = None
    if int(os.environ.get("RANK", 0)) == 0:
        stamp = time.strftime("%m-%d-%H-%M")
        name, k = f"{opts.experiment_name}-{stamp}", 2
        while (save_parent / name).exists():
            name, k = f"{opts.experiment_name}-{stamp}-{k}", k + 1
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        box = [name]
        torch.distributed.broadcast_object_list(box, src=0)
        name = box[0]
    return name


def run(opts) -> int:
    import torch

    from remoteglm import compat
    from remoteglm.model.checkpoint import trust_checkpoints
    from remoteglm.train import checkpointing as ckpt
    from remoteglm.train.data import FinetuneDataset, SampleEncoder, check_leaks, collate, load_records

    trust_checkpoints(opts.trust_checkpoint)
    opts.save_interval = opts.save_interval or max(1, min(100, opts.train_iters))
    opts.eval_interval = opts.eval_interval or opts.save_interval
    if opts.train_qformer and not opts.no_feature_cache:
        opts.no_feature_cache = True
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    save_parent = Path(opts.save)

    # Everything cheap first: settings, data, checkpoint folders. Bad input fails in a second,
    # not after minutes of model loading.
    t0 = time.time()
    records = {"train": [r for path in opts.train_data for r in load_records(path, "train", opts.seed, opts.image_root)]}
    if opts.valid_data:
        records["valid"] = [r for path in opts.valid_data for r in load_records(path, "val", opts.seed, opts.image_root)]
    check_leaks(records["train"], records.get("valid", []), opts.train_data)
    config0 = _peek_config(opts)
    validate(opts, config0, records)
    resume_dir, start, prior = None, 0, {}
    if opts.resume:
        resume_dir = Path(opts.resume).resolve()
        start = ckpt.read_latest(resume_dir)
        prior = ckpt.read_train_state(resume_dir, start)
        for key in ("batch_size", "gradient_accumulation_steps", "world_size"):
            now = {"world_size": world}.get(key, getattr(opts, key, None))
            if prior.get(key) is not None and prior[key] != now:
                raise RemoteGLMError(f"--resume {resume_dir}: the run used {key} {prior[key]}, this launch {now}: "
                                     "resume with the same settings (NUM_GPUS, BATCH_SIZE) for an exact continuation")
        if start >= opts.train_iters:
            if rank == 0:
                ckpt.write_last_run(save_parent, resume_dir)
                print(f"{resume_dir} is already at step {start} of --train_iters {opts.train_iters}: nothing to train "
                      f"(raise --train_iters / TRAIN_ITERS to train on)")
            return 0
    device, dtype = _device_and_dtype(opts)

    # Only now the heavy imports (sat, DeepSpeed: seconds) and the model (minutes at full size).
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
    lora_setup.prepare(model, opts, config, device=device)
    # The model was built from its checkpoint config, not from sat's args: switch sat's
    # per-layer activation checkpointing on here (ChatGLM layers; the image encoder is frozen).
    model.transformer.checkpoint_activations = not opts.no_gradient_checkpointing
    model.transformer.checkpoint_num_layers = 1
    if cache is not None:
        lora_setup.park_image_encoder(model)

    ds_config = deepspeed_config(opts)
    sat_args = _sat_args(opts, config, ds_config, save_parent)  # starts the process group
    run_dir = resume_dir if resume_dir is not None else save_parent.resolve() / _run_name(opts, save_parent)
    sat_args.summary_dir = str(run_dir.parent)  # TensorBoard: <parent>/runs/<run name>
    sat_args.resume_dataloader = False  # one skip mechanism: ours (on_loaders)
    if resume_dir is not None:
        sat_args.load = str(resume_dir)
        sat_args.mode = "pretrain"  # sat continues the iteration count only in this mode

    progress = Progress(opts.train_iters, rank, prior.get("losses", [])[:start], prior.get("eval_losses", []))
    state = {"first": True, "t_train": None, "session_start": start,
             "prior_seconds": float(prior.get("train_seconds", 0.0))}

    def train_state(iteration: int) -> dict:
        elapsed = time.time() - state["t_train"] if state["t_train"] else 0.0
        return {"train_iters": opts.train_iters, "batch_size": opts.batch_size,
                "gradient_accumulation_steps": opts.gradient_accumulation_steps, "seed": opts.seed,
                "train_data": [str(Path(p).resolve()) for p in opts.train_data],
                "train_seconds": round(state["prior_seconds"] + elapsed, 3),
                "losses": [x for x in progress.losses if x[0] <= iteration],
                "eval_losses": [x for x in progress.eval_losses if x[0] <= iteration]}

    def on_save(iteration, engine, optimizer):
        ckpt.save_step(run_dir, iteration, engine, optimizer, train_state(iteration),
                       write_config=lambda d: lora_setup.write_model_config(d, model, tokenizer),
                       keep=opts.keep_checkpoints)
        if rank == 0:
            ckpt.write_last_run(save_parent, run_dir)
            progress.bar.write(f"saved step {iteration} -> {run_dir}")

    def on_load(module) -> int:
        ckpt.load_step_weights(resume_dir, start, module, frozen_prefix="mixins.eva.model." if cache is not None else None)
        return start

    def on_loaders(args, train, val):
        # sat's loaders read a seeded random mapping in order: a resumed run starts where the
        # killed one stood, on every rank (the batch sampler hands each rank its slice).
        if train is not None:
            _start_at(train, start * args.gradient_accumulation_steps)
        if val is not None:
            _start_at(val, (start // args.eval_interval) * args.eval_iters)

    sat_patches.apply(on_save=on_save, on_load=on_load, on_loaders=on_loaders, run_name=run_dir.name,
                      on_validation=progress.validation)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)

    def forward(data_iterator, model, args, timers, train: bool):
        inner = model.module if hasattr(model, "module") else model
        if train and not progress._micro:  # the first micro-batch of a step: its start time
            state.setdefault("step_starts", []).append(time.time())
        if train and state["first"]:
            state["first"] = False
            state["t_train"] = time.time()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            progress.bar.reset(total=args.train_iters)
            progress.bar.update(args.iteration)
            if resume_dir is not None:
                ckpt.load_rank_state(resume_dir, start, model.optimizer, rank)
                progress.bar.write(f"resumed {resume_dir.name} at step {start}: weights, Adam state, LR and data position restored")
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
            state["tokens"] = state.get("tokens", 0) + ids.numel()  # computed (padded) positions: for MFU
            lr = model.optimizer.param_groups[0]["lr"] if hasattr(model, "optimizer") else opts.lr
            # sat increments args.iteration after this step returns.
            progress.micro(args.iteration + 1, loss.item(), lr, args.gradient_accumulation_steps)
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
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # one LAST_RUN per node, the same name on all
        ckpt.write_last_run(save_parent, run_dir)
    if rank == 0:
        _write_summary(opts, run_dir, progress, state, model, t0, world)
    return 0


def _start_at(loader, batches: int) -> None:
    """Make ``loader`` begin ``batches`` (global) batches into its sequential sampler."""
    bs = loader.batch_sampler
    n = len(bs.sampler)
    offset = min(batches * bs.batch_size, n)
    bs.sampler = range(offset, n)


def _write_summary(opts, run_dir: Path, progress: Progress, state: dict, model, t0: float, world: int) -> None:
    """train_summary.json for the whole run (a resumed run includes the steps before the kill)."""
    import resource

    import torch

    from remoteglm.io import write_json_atomic

    losses = progress.losses
    session = [x for x in losses if x[0] > state["session_start"]]
    starts = state.get("step_starts", [])
    train_s = time.time() - state["t_train"] if state["t_train"] else 0.0
    first = losses[0][1] if losses else math.nan
    last = sum(x[1] for x in losses[-10:]) / max(1, len(losses[-10:]))
    samples = len(session) * opts.batch_size * opts.gradient_accumulation_steps * world
    summary = {"run_dir": str(run_dir), "steps": losses[-1][0] if losses else 0, "train_iters": opts.train_iters,
               "resumed_from": state["session_start"] or None, "first_loss": first, "final_loss_avg10": last,
               "eval_loss": progress.eval_loss, "eval_losses": progress.eval_losses,
               "seconds": round(time.time() - t0, 1), "train_seconds": round(train_s, 2),
               "train_seconds_total": round(state["prior_seconds"] + train_s, 2),
               "world_size": world, "batch_size": opts.batch_size,
               "gradient_accumulation_steps": opts.gradient_accumulation_steps,
               "samples_per_second": round(samples / train_s, 3) if train_s > 0 else None,
               "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
               "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved() if torch.cuda.is_available() else None,
               "tokens_per_second": round(state.get("tokens", 0) * world / train_s, 1) if train_s > 0 else None,
               # wall time from each step's start to the next one's (this session; the last step has none,
               # and the final checkpoint write is in none of them): steady-state step time for benchmarks
               "step_seconds": [round(b - a, 4) for a, b in zip(starts, starts[1:])],
               "train_started_unix": state["t_train"],
               "image_length": getattr(model, "image_length", None),
               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "trainable_parameters": getattr(model, "trainable_parameters", None),
               # the evaluation's leakage guard reads these
               "train_data": [str(Path(p).resolve()) for p in opts.train_data],
               "losses": losses}
    write_json_atomic(run_dir / "train_summary.json", summary)
    print(f"done: loss {first:.4f} -> {last:.4f} in {summary['seconds']} s; checkpoint: {run_dir}")
    print(f"chat with it: python cli_demo.py --from_pretrained {run_dir}")
