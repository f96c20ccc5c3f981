"""Adjustments to sat 0.4.6's `training_main`, applied in one place and only for our runs.

sat's loop is used as is (data loaders, DeepSpeed engine, evaluation); these wrappers change
what sat would otherwise get wrong for fine-tuning users:

- Learning rate: sat silently holds the LR at 5% for the first 100 steps of any fine-tune or
  resumed run ("auto warmup"). We want exactly the cosine-with-warmup schedule asked for, and a
  resumed run must continue on the same curve, so auto warmup is switched off.
- Checkpoints: sat writes ``latest`` before the optimizer state exists and rewrites ``latest`` /
  ``model_config.json`` by truncate-then-write; its resume unpickles arbitrary objects. Saving
  and loading go to our ``on_save`` / ``on_load`` instead (remoteglm.train.checkpointing), and a
  step already saved is not written twice (sat saves again at the end).
- Data position on resume: sat skips batches only with its multi-rank sampler (we replayed them
  again on top: a 2-rank resume trained on the wrong batches). ``on_loaders`` gets the loaders
  to set one offset that holds for any number of ranks; sat's own skipping is turned off.
- Logs: iteration / validation lines go to TensorBoard (in our run's folder name) and a callback
  (the tqdm bar) instead of sat's print, which would tear the progress bar.
- Activation checkpointing: skipped where no gradient is taken (evaluation: nothing would be
  recomputed, and torch warned that no input requires grad); torch's fallback (no CUDA
  DeepSpeed) is called with ``use_reentrant`` given, as torch asks, keeping sat's reentrant kind.
"""

from __future__ import annotations

from typing import Callable

import sat.training.deepspeed_training as dt

_originals: dict[str, Callable] = {}
_sat_checkpoint: Callable | None = None  # sat.model.transformer's own ``checkpoint``


def _keep(name: str) -> Callable:
    if name not in _originals:
        _originals[name] = getattr(dt, name)
    return _originals[name]


def apply(*, on_save: Callable[[int, object, object], None], on_load: Callable[[object], int],
          on_loaders: Callable[[object, object, object], None], run_name: str,
          on_validation: Callable[[int | None, float], None] | None = None) -> None:
    """Install the wrappers. Safe to call more than once (always wraps sat's originals)."""
    sched = _keep("get_learning_rate_scheduler")
    make_loaders = _keep("make_loaders")
    writer = _keep("get_sample_writer")
    for name in ("save_checkpoint", "load_checkpoint", "report_evaluate_metrics", "report_iteration_metrics"):
        _keep(name)

    def get_learning_rate_scheduler(optimizer, iteration, args, auto_warmup_steps=100, auto_warmup_rate=0.05):
        return sched(optimizer, iteration, args, auto_warmup_steps=0, auto_warmup_rate=1.0)

    saved: set[int] = set()

    def save_checkpoint(iteration, model, optimizer, lr_scheduler, args):
        if iteration in saved:
            return
        saved.add(iteration)
        on_save(iteration, model, optimizer)

    def load_checkpoint(model, args, load_path=None, prefix=""):
        return on_load(model)

    def loaders(args, create_dataset_function, collate_fn=None):
        train, val, test = make_loaders(args, create_dataset_function, collate_fn=collate_fn)
        on_loaders(args, train, val)
        return train, val, test

    def get_sample_writer(name, base="..", iteration=0):
        return writer(run_name, base=base, iteration=iteration)

    def report_evaluate_metrics(summary_writer, prefix, loss, ppl, step, avg_metrics):
        if on_validation is not None:
            on_validation(step, loss)
        if summary_writer is not None:
            summary_writer.add_scalar("Train/valid_loss", loss, step)
            summary_writer.add_scalar("Train/valid_ppl", ppl, step)

    def report_iteration_metrics(summary_writer, optimizer, lr, loss, elapsed_time, step, total_step, args, avg_metrics):
        if summary_writer is not None:  # TensorBoard only; the progress bar shows the rest
            summary_writer.add_scalar("Train/lr", lr, step)
            summary_writer.add_scalar("Train/train_loss", loss, step)
            summary_writer.add_scalar("Train/elapsed_time", elapsed_time, step)

    _patch_checkpointing()
    dt.get_learning_rate_scheduler = get_learning_rate_scheduler
    dt.report_iteration_metrics = report_iteration_metrics
    dt.save_checkpoint = save_checkpoint
    dt.load_checkpoint = load_checkpoint
    dt.make_loaders = loaders
    dt.get_sample_writer = get_sample_writer
    dt.report_evaluate_metrics = report_evaluate_metrics


def restore() -> None:
    """Put sat's own functions back (tests use it between runs)."""
    for name, fn in _originals.items():
        setattr(dt, name, fn)
    if _sat_checkpoint is not None:
        import sat.model.transformer as st

        st.checkpoint = _sat_checkpoint


def _patch_checkpointing() -> None:
    import torch
    import torch.utils.checkpoint
    import sat.model.transformer as st

    global _sat_checkpoint
    if _sat_checkpoint is None:
        _sat_checkpoint = st.checkpoint
    inner = _sat_checkpoint

    def checkpoint(function, *args):
        if not torch.is_grad_enabled():
            return function(*args)
        if inner is torch.utils.checkpoint.checkpoint:
            return inner(function, *args, use_reentrant=True)
        return inner(function, *args)

    st.checkpoint = checkpoint
