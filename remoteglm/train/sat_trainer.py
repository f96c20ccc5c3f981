"""VisualGLM-6B's trainer: LoRA / QLoRA with sat's `training_main` and DeepSpeed, behind the one
fine-tune command (``remoteglm.train.finetune``; several GPUs: finetune.sh's deepspeed launcher).
Defaults follow the official VisualGLM recipe (LoRA rank 10 on all
layers, lr 1e-4 cosine, warmup 0.02, ZeRO 1) with the fixes in remoteglm.train.sat_patches.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from remoteglm.errors import RemoteGLMError

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


def validate(opts, config) -> None:
    """What only VisualGLM checks (the common settings: ``remoteglm.train.options.validate``; the
    data: ``remoteglm.train.data.training_records``): its layer indices and its ZeRO stages."""
    if opts.zero_stage not in (1, 2):
        raise RemoteGLMError(f"--zero_stage {opts.zero_stage}: VisualGLM trains with ZeRO stage 1 or 2")
    if opts.layer_range is not None:
        bad = [i for i in opts.layer_range if not 0 <= i < config.num_layers]
        if bad or not opts.layer_range:
            raise RemoteGLMError(f"--layer_range (LAYER_RANGE) {bad or '(empty)'}: {opts.from_pretrained} has "
                                 f"{config.num_layers} ChatGLM layers, indices 0..{config.num_layers - 1}")


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


def run(opts, family) -> Path:
    """Train ``opts`` (resolved and checked by ``remoteglm.train.options``); the run folder."""
    import torch

    from remoteglm import compat
    from remoteglm.model.unpickle import trust_checkpoints
    from remoteglm.train import checkpointing as ckpt
    from remoteglm.train.run_folder import run_name, write_last_run
    from remoteglm.model.sample import SampleEncoder, collate, record_texts
    from remoteglm.train.data import FinetuneDataset, check_images, training_records

    trust_checkpoints(opts.trust_checkpoint)
    opts.zero_stage = 1 if opts.zero_stage is None else opts.zero_stage
    opts.feature_cache = opts.feature_cache or "cache/features"
    if opts.fp16 or opts.bf16 or opts.dtype:
        opts.fp16, opts.bf16 = opts.dtype == "fp16", opts.dtype == "bf16"
    if opts.train_qformer and not opts.no_feature_cache:
        opts.no_feature_cache = True
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    save_parent = Path(opts.save)

    # Everything cheap first: settings, data, checkpoint folders. Bad input fails in a second,
    # not after minutes of model loading.
    t0 = time.time()
    validate(opts, family.config(opts.from_pretrained))
    train, valid = training_records(opts)
    records = {"train": train, **({"valid": valid} if opts.valid_data else {})}
    try:  # VisualGLM reads 224 x 224 whatever the image: its codec takes no resolution
        codec = family.box_codec(opts.from_pretrained)
    except RemoteGLMError:
        codec = None  # a family without a box format trains records without boxes
    for r in check_images([r for rs in records.values() for r in rs if r.prompt_boxes or r.label_boxes])[0]:
        record_texts(r, codec)  # a box off its image: one line now, not after the model loads
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
                write_last_run(save_parent, resume_dir)
                print(f"{resume_dir} is already at step {start} of --train_iters {opts.train_iters}: nothing to train "
                      f"(raise --train_iters / TRAIN_ITERS to train on)")
            return resume_dir
    device, dtype = _device_and_dtype(opts)

    # Only now the heavy imports (sat, DeepSpeed: seconds) and the model (minutes at full size).
    compat.patch_for_cpu_training()
    from remoteglm.train import lora_setup, sat_patches
    from remoteglm.train.feature_cache import FeatureCache

    model, tokenizer, config = _load_base(opts, dtype)
    encoder = SampleEncoder(tokenizer, opts.max_source_length, opts.max_target_length, config.image_length, codec)

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
    run_dir = resume_dir if resume_dir is not None else save_parent.resolve() / run_name(opts.experiment_name, save_parent)
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
            write_last_run(save_parent, run_dir)
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
        write_last_run(save_parent, run_dir)
    if rank == 0:
        _summary(opts, family, run_dir, progress, state, model, t0, world)
    return run_dir


def _start_at(loader, batches: int) -> None:
    """Make ``loader`` begin ``batches`` (global) batches into its sequential sampler."""
    bs = loader.batch_sampler
    n = len(bs.sampler)
    offset = min(batches * bs.batch_size, n)
    bs.sampler = range(offset, n)


def _summary(opts, family, run_dir: Path, progress: Progress, state: dict, model, t0: float, world: int) -> None:
    import torch

    from remoteglm.train.run_folder import write_summary

    starts = state.get("step_starts", [])
    train_s = time.time() - state["t_train"] if state["t_train"] else 0.0
    cuda = torch.cuda.is_available()
    write_summary(run_dir, opts, family, losses=progress.losses, eval_losses=progress.eval_losses,
                  resumed_from=state["session_start"], seconds=time.time() - t0, train_seconds=train_s, world=world,
                  trainable=getattr(model, "trainable_parameters", None), tokens=state.get("tokens", 0), extra={
                      "train_seconds_total": round(state["prior_seconds"] + train_s, 2),
                      "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
                      # wall time from each step's start to the next one's (this session; the last step has
                      # none, and the final checkpoint write is in none of them): steady-state step time
                      "step_seconds": [round(b - a, 4) for a, b in zip(starts, starts[1:])],
                      "train_started_unix": state["t_train"], "image_length": getattr(model, "image_length", None)})
