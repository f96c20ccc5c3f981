"""The transformers families' trainer (Qwen2.5-VL, GLM-4.1V, ...): LoRA / QLoRA / DoRA with the HF
Trainer and peft, behind the one fine-tune command (``remoteglm.train.finetune``), on the same
data files as VisualGLM:

    MODEL_DIR=checkpoints/Qwen2.5-VL-7B-Instruct QLORA=1 bash finetune.sh

Why the HF Trainer (and not a loop on accelerate): it already implements what the
sat path had to add by hand - exact resume (optimizer, LR schedule, RNG states and the data order,
skipping the batches already seen), DeepSpeed ZeRO-2/3, eval loss, TensorBoard and a progress bar
with ETA - and it is what peft's adapters are tested against. What it lacks is added here: a
checkpoint counts only once complete (``latest`` moves last, atomically), every setting and the
data are checked before the model loads, and the run folder itself loads as the newest adapter.

Run folder (``SAVE/finetune-<family>-MM-DD-HH-MM-SS``, ``remoteglm.train.run_folder``)::

    latest                    the newest COMPLETE checkpoint folder's name (written last)
    checkpoint-N/             Trainer's checkpoint + remoteglm_complete.json
    adapter_config.json ...   the adapter of ``latest`` and the processor files: the folder loads alone
    remoteglm_base.json       the base model folder, the run's settings and its box codec's;  runs/  TensorBoard;
                              train_summary.json
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json

COMPLETE = "remoteglm_complete.json"
LATEST = "latest"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj")
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
                   "generation_config.json")

def run_settings(opts, world: int) -> dict:
    """What a resume must repeat: the adapter's shape (its saved weights must fit) and what sets
    the batches (their order and contents)."""
    return {"lora_rank": opts.lora_rank, "lora_alpha": opts.lora_alpha,
            "layer_range": sorted(set(opts.layer_range)) if opts.layer_range else None, "use_dora": opts.use_dora,
            "use_qlora": opts.use_qlora, "tune_merger": opts.tune_merger, "batch_size": opts.batch_size,
            "gradient_accumulation_steps": opts.gradient_accumulation_steps, "seed": opts.seed,
            "min_pixels": opts.min_pixels, "max_pixels": opts.max_pixels, "world_size": world,
            "train_data": [str(Path(f).resolve()) for f in opts.train_data]}


def complete_checkpoints(run: Path) -> list[Path]:
    """A run folder's complete checkpoint folders, oldest first."""
    out = []
    for d in run.glob("checkpoint-*"):
        if d.is_dir() and (d / COMPLETE).is_file() and d.name.split("-")[-1].isdigit():
            out.append(d)
    return sorted(out, key=lambda d: int(d.name.split("-")[-1]))


def resume_point(run: str | Path) -> Path:
    """The checkpoint a ``--resume RUN`` continues from, or one line on what is wrong."""
    r = Path(run)
    if not r.is_dir():
        raise RemoteGLMError(f"--resume {r}: no such run folder")
    good = complete_checkpoints(r)
    names = ", ".join(d.name for d in good) or "none"
    f = r / LATEST
    if not f.is_file():
        if good:
            raise RemoteGLMError(f"--resume {r}: '{LATEST}' is missing; complete checkpoints: {names}: write one name into {f}")
        raise RemoteGLMError(f"--resume {r}: no complete checkpoint was saved (the run stopped before its first "
                             "--save_interval); start it again without --resume")
    name = f.read_text(encoding="utf-8", errors="replace").strip()
    d = r / name
    if not name or "/" in name or not (d / COMPLETE).is_file():
        raise RemoteGLMError(f"--resume {r}: '{LATEST}' names {name!r}, which is not a complete checkpoint; complete "
                             f"checkpoints: {names}: write one of them into {f}")
    return d


# ---- the Trainer pieces -----------------------------------------------------------------------
def _callbacks(run: Path, keep: int):
    from transformers import TrainerCallback

    from remoteglm.io import write_atomic, write_json_atomic, write_text_atomic

    class CompleteCheckpoints(TrainerCallback):
        """After the Trainer wrote checkpoint-N: mark it complete, copy its adapter to the run
        folder, move ``latest``, then drop old checkpoints (never an incomplete newer one first)."""

        def on_save(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            ck = run / f"checkpoint-{state.global_step}"
            write_json_atomic(ck / COMPLETE, {"step": state.global_step, "time": time.time()})
            for f in ck.iterdir():
                if f.name.startswith("adapter_") or f.name == "README.md":
                    write_atomic(run / f.name, lambda tmp, src=f: shutil.copyfile(src, tmp))
            write_text_atomic(run / LATEST, ck.name + "\n")
            done = complete_checkpoints(run)
            old = done[:-keep] if keep else []
            for d in old:
                shutil.rmtree(d, ignore_errors=True)

    return [CompleteCheckpoints()]


def _ds_config(stage: int) -> dict | None:
    if not stage:
        return None
    cfg = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
           "zero_optimization": {"stage": stage, "overlap_comm": False, "contiguous_gradients": True},
           "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}
    if stage == 3:
        cfg["zero_optimization"].update(stage3_gather_16bit_weights_on_model_save=True)
    return cfg


def lora_config(opts):
    """peft's LoraConfig: the language model's attention and MLP projections (of the layers in
    --layer_range, or all), DoRA with --use_dora, the merger fully trained with --tune_merger."""
    from peft import LoraConfig

    layers = "|".join(str(i) for i in sorted(set(opts.layer_range))) if opts.layer_range else r"\d+"
    names = "|".join(LORA_TARGETS)
    return LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=rf".*language_model\.layers\.({layers})\.(self_attn|mlp)\.({names})",
                      use_dora=opts.use_dora, modules_to_save=["merger"] if opts.tune_merger else None,
                      task_type="CAUSAL_LM")


def run(opts, fam) -> Path:
    """Train ``opts`` (resolved and checked by ``remoteglm.train.options``) for the transformers
    family ``fam``; the run folder."""
    import warnings

    import torch

    from remoteglm import compat

    compat.patch_for_cpu_training()
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="OMP_NUM_THREADS/MKL_NUM_THREADS unset")  # accelerate, on a CPU

    from remoteglm.io import write_json_atomic
    from remoteglm.model.hf_folder import BASE_RECORD, check_folder, load_processor
    from remoteglm.train.run_folder import run_name, write_last_run, write_summary
    from remoteglm.train.data import training_records

    base = Path(opts.from_pretrained).expanduser().resolve()
    check_folder(base)  # a missing or damaged shard: one line now, not a traceback after the data work
    resume_from = resume_point(opts.resume) if opts.resume else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if resume_from is not None:
        rec = Path(opts.resume) / BASE_RECORD
        record = read_json(rec, require_object=True) if rec.is_file() else {}
        saved = record.get("base")
        if saved and Path(saved).resolve() != base:
            raise RemoteGLMError(f"--resume {opts.resume} was trained on {saved}, not {base}: pass the same --from_pretrained")
        done_steps = int(resume_from.name.split("-")[1])
        if done_steps >= opts.train_iters:
            print(f">> {opts.resume} already ran {done_steps} of --train_iters {opts.train_iters} steps: nothing to do "
                  "(raise --train_iters to train further)", flush=True)
            write_last_run(Path(opts.save), Path(opts.resume).resolve())
            return Path(opts.resume)
        now = run_settings(opts, world)
        for k, v in (record.get("settings") or {}).items():
            if k in now and now[k] != v:
                flag = "the number of ranks (NUM_GPUS x machines)" if k == "world_size" else f"--{k}"
                raise RemoteGLMError(f"--resume {opts.resume} was trained with {flag} {v}, not {now[k]}: resume with the "
                                     f"run's settings (an exact resume repeats its batches; see {BASE_RECORD} there)")
    if opts.layer_range:
        n = read_json(base / "config.json", require_object=True).get("text_config", {}).get("num_hidden_layers")
        if n is not None and any(i >= n for i in opts.layer_range):
            raise RemoteGLMError(f"--layer_range {' '.join(map(str, opts.layer_range))}: the language model has layers 0-{n - 1}")
    train, valid = training_records(opts)
    cuda = torch.cuda.is_available()
    stage = opts.zero_stage if opts.zero_stage is not None else (2 if cuda and world > 1 else 0)
    if opts.use_qlora:
        try:
            import bitsandbytes  # noqa: F401
        except Exception as e:  # noqa: BLE001
            raise RemoteGLMError(f"--use_qlora needs bitsandbytes ({e}): pip install -r requirements.txt") from None
    proc = load_processor(base, fam, opts.min_pixels, opts.max_pixels)
    lo, hi = proc.pixel_range()
    img_tok = proc.tokens_for()  # the largest square image the setting allows
    max_length = opts.max_length or opts.max_source_length + opts.max_target_length + img_tok + 32
    print(f">> {fam.label}: images resized to {lo}-{hi} pixels: up to {img_tok} image tokens each; "
          f"{max_length} tokens per sample", flush=True)

    from remoteglm.train.hf_data import HFDataset, HFEncoder, collate

    try:  # boxes in the family's form at this run's resize (Qwen2.5-VL's pixels depend on it)
        codec = fam.box_codec(base, min_pixels=lo, max_pixels=hi)
    except RemoteGLMError:
        codec = None  # a family without a box format trains records without boxes
    enc = HFEncoder(proc, max_length, codec)
    train_ds = HFDataset(train, enc)
    valid_ds = HFDataset(valid, enc) if valid else None
    train_ds[0]  # a sample that cannot be encoded fails here, before the model loads

    rank = _init_ranks(cuda, world)
    save_interval = opts.save_interval or min(100, opts.train_iters)
    eval_interval = opts.eval_interval or save_interval

    from remoteglm.device import parse_dtype

    dtype = parse_dtype(opts.dtype, "cuda" if cuda else "cpu")
    from transformers import set_seed

    set_seed(opts.seed)  # the LoRA matrices' random init: the same run for the same --seed
    model = _load_for_training(base, opts, dtype, cuda)
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(opts))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f">> trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)"
          f"{' (NF4 base)' if opts.use_qlora else ''}{' DoRA' if opts.use_dora else ''}", flush=True)

    # the run folder is made (or cleaned) only now: a model that fails to load leaves nothing behind
    if resume_from is not None:
        run_dir = Path(opts.resume).resolve()
        if rank == 0:  # checkpoints a kill left half-written: the Trainer would otherwise write into them
            done = set(complete_checkpoints(run_dir))
            for d in run_dir.glob("checkpoint-*"):
                if d not in done:
                    shutil.rmtree(d, ignore_errors=True)
    else:
        run_dir = Path(opts.save) / run_name(opts.experiment_name, Path(opts.save))
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=False)
    _barrier(world)  # rank 0 made (or cleaned) the folder before anyone writes into it

    from transformers import Trainer, TrainingArguments

    if rank == 0:
        write_json_atomic(run_dir / BASE_RECORD, {"base": str(base), "family": fam.name,
                                                  "train_data": [str(Path(f).resolve()) for f in opts.train_data],
                                                  "settings": run_settings(opts, world),
                                                  # what serving passes to fam.box_codec to write boxes as trained
                                                  "box_codec": codec.settings if codec else None,
                                                  # --vram: what the planner chose (remoteglm.train.planner)
                                                  "memory_plan": getattr(opts, "memory_plan", None)})
        for f in PROCESSOR_FILES:
            if (base / f).is_file():
                shutil.copyfile(base / f, run_dir / f)
    bf16 = cuda and dtype == torch.bfloat16
    targs = TrainingArguments(
        output_dir=str(run_dir), max_steps=opts.train_iters, per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size, gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.lr, lr_scheduler_type=opts.lr_decay_style, warmup_steps=int(opts.warmup * opts.train_iters),
        weight_decay=opts.weight_decay, max_grad_norm=opts.gradient_clipping, seed=opts.seed, data_seed=opts.seed,
        logging_steps=opts.log_interval, report_to=["tensorboard"],  # TensorBoard: RUN/runs/
        save_strategy="steps", save_steps=save_interval, save_total_limit=None,
        eval_strategy="steps" if valid_ds is not None else "no", eval_steps=eval_interval,
        bf16=bf16, fp16=cuda and dtype == torch.float16, use_cpu=not cuda,
        gradient_checkpointing=cuda and not opts.no_gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, remove_unused_columns=False,
        dataloader_num_workers=opts.num_workers, deepspeed=_ds_config(stage), disable_tqdm=False,
        save_only_model=False, label_names=["labels"], ddp_find_unused_parameters=False)
    pad = proc.tokenizer.pad_token_id if proc.tokenizer.pad_token_id is not None else proc.stop_ids[0]
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=_limit(valid_ds, opts),
                      data_collator=lambda b: collate(b, pad), callbacks=_callbacks(run_dir, opts.keep_checkpoints))
    if resume_from is None and rank == 0:
        write_last_run(Path(opts.save), run_dir)
    if cuda:
        torch.cuda.reset_peak_memory_stats()  # the peak of training, not of loading
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if trainer.state.global_step % save_interval:
        trainer._save_checkpoint(trainer.model, None)
        trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
    hist = trainer.state.log_history
    losses = [(h["step"], h["loss"], h.get("learning_rate")) for h in hist if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in hist if "eval_loss" in h]
    probe = [len(train_ds[i]["input_ids"]) for i in range(min(16, len(train_ds)))]
    if trainer.is_world_process_zero():
        write_last_run(Path(opts.save), run_dir)
        write_summary(run_dir, opts, fam, losses=losses, eval_losses=evals,
                      resumed_from=int(resume_from.name.split("-")[1]) if resume_from else None,
                      seconds=time.time() - t0, train_seconds=result.metrics.get("train_runtime") or 0.0, world=world,
                      trainable=trainable, total=total, steps=trainer.state.global_step, extra={
                          "samples": len(train_ds), "skipped": train_ds.skipped, "image_tokens_max": img_tok,
                          "mean_sample_tokens": round(sum(probe) / len(probe), 1), "dora": opts.use_dora,
                          "zero_stage": stage})
    return run_dir


def _init_ranks(cuda: bool, world: int) -> int:
    """This process's rank; with several ranks the process group starts here (the launcher's env://
    rendezvous), before the Trainer, so the run folder's name can be agreed first. The Trainer
    (accelerate) keeps a group that exists."""
    if world <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _limit(ds, opts):
    """The first ``eval_iters`` batches of the validation set (what each evaluation reads)."""
    if ds is None:
        return None
    import torch

    return torch.utils.data.Subset(ds, list(range(min(len(ds), opts.eval_iters * opts.batch_size))))


def _load_for_training(base: Path, opts, dtype, cuda: bool):
    import torch

    from remoteglm.model.hf_folder import bnb_config, from_pretrained

    qc = bnb_config(4, dtype) if opts.use_qlora else None
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    model = from_pretrained(base, dtype, qc, device_map={"": dev} if qc is not None else None)
    for n, p in model.named_parameters():
        p.requires_grad_(False)
    if qc is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cuda and not opts.no_gradient_checkpointing)
    elif cuda and not opts.no_gradient_checkpointing:
        model.enable_input_require_grads()
    return model
