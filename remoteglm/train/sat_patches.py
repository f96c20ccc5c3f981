"""Adjustments to sat 0.4.6's `training_main`, applied in one place and only for our runs.

sat's loop is used as is (data loaders, DeepSpeed engine, checkpoints); these wrappers change
what sat would otherwise get wrong for fine-tuning users:

- Learning rate: sat silently holds the LR at 5% for the first 100 steps of any fine-tune or
  resumed run ("auto warmup"). We want exactly the cosine-with-warmup schedule asked for, and a
  resumed run must continue on the same curve, so auto warmup is switched off.
- Checkpoints: after sat writes `{iter}/mp_rank_00_model_states.pt`, we rewrite
  `model_config.json` with the official VisualGLM fields (so `cli_demo.py` and the official
  loaders read it) and save the optimizer state beside it so `--resume` restores Adam moments.
- Saves: the end-of-run save is skipped when the interval save already wrote that step.
- Logs: iteration / validation lines go to TensorBoard and a callback (the tqdm bar) instead of
  sat's print, which would tear the progress bar.
"""

from __future__ import annotations

from typing import Callable

import sat.training.deepspeed_training as dt

_originals: dict[str, Callable] = {}


def _keep(name: str) -> Callable:
    if name not in _originals:
        _originals[name] = getattr(dt, name)
    return _originals[name]


def apply(after_save: Callable[[int, object, object, object], None] | None = None,
          on_validation: Callable[[int | None, float], None] | None = None) -> None:
    """Install the wrappers. Safe to call more than once (always wraps sat's originals)."""
    sched = _keep("get_learning_rate_scheduler")
    save = _keep("save_checkpoint")
    _keep("report_evaluate_metrics")
    _keep("report_iteration_metrics")

    def get_learning_rate_scheduler(optimizer, iteration, args, auto_warmup_steps=100, auto_warmup_rate=0.05):
        return sched(optimizer, iteration, args, auto_warmup_steps=0, auto_warmup_rate=1.0)

    saved: set[tuple[str, int]] = set()

    def save_checkpoint(iteration, model, optimizer, lr_scheduler, args):
        # sat saves again at the end even when the last interval save was the same step;
        # for a 15 GB model that is minutes of disk writes for nothing.
        if (args.save, iteration) in saved:
            return
        saved.add((args.save, iteration))
        save(iteration, model, optimizer, lr_scheduler, args)
        if after_save is not None:
            after_save(iteration, model, optimizer, args)

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

    dt.get_learning_rate_scheduler = get_learning_rate_scheduler
    dt.report_iteration_metrics = report_iteration_metrics
    dt.save_checkpoint = save_checkpoint
    dt.report_evaluate_metrics = report_evaluate_metrics


def restore() -> None:
    """Put sat's own functions back (tests use it between runs)."""
    for name, fn in _originals.items():
        setattr(dt, name, fn)
