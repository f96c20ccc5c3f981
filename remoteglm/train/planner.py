"""``--vram 12|16|24`` (GiB): the largest ``max_pixels`` and micro-batch that fit one card, from an
explicit memory model; ``--plan_only`` prints the table and stops. Each family gives its numbers
(``Family.memory_facts``: parameter counts of the language model's Linear layers, its other
weights and the vision tower, sizes, patch/merge, the LoRA targets); nothing here asks which family.

The memory model (bytes on one card during a training step; b = 2 for bf16/fp16, 4 with --dtype fp32)::

  weights     LoRA/DoRA: every weight x b.  QLoRA: the decoder's Linear weights in NF4 at 4.127 bits
              (4 bits + 0.127 for double-quantised absmax constants, QLoRA paper arXiv 2305.14314 s.3),
              the rest (embeddings, output head, norms, vision tower) at 4 bytes on the transformers path
              (peft's prepare_model_for_kbit_training casts every non-4-bit weight to fp32), at b on
              VisualGLM's sat path. VisualGLM's image encoder is off the GPU with the feature cache.
  states      trainable parameters (rank x sum of the targets' in + out features; DoRA adds its
              magnitude vectors) x 16 (fp32 weight, grad, Adam m and v: peft keeps adapters in fp32)
              or x 20 on sat + DeepSpeed (bf16 weight and grad, fp32 master, grad and Adam states).
  activations per sequence token, x (image tokens + text tokens) x batch:
              b x layers x hidden                 each decoder layer's input (gradient checkpointing
                                                  keeps only that: k = 1 per layer)
            + b x (20 x hidden + 6 x intermediate)  the one layer recomputed during backward: what a
                                                  pre-norm layer with LoRA on q/k/v/o/gate/up/down saves
                                                  (norm outputs and their fp32 upcasts, q/k/v, attention
                                                  output, LoRA-dropout copies of each target's input,
                                                  gate/up/act/product of the MLP) plus their gradients
            + 12 x vocabulary                     logits: bf16 (2), the loss's fp32 log-softmax (4), its
                                                  gradient (4) and the bf16 gradient (2)
              without checkpointing every layer keeps the recompute term (layers x the second line).
  vision      per image patch (image tokens x merge^2), x batch: b x (12 x vision hidden + 3 x vision
              intermediate): one frozen ViT block at a time (nothing is kept for backward).
  transient   the largest decoder Linear dequantised to b (QLoRA), 5 copies of it (DoRA's weight norm).
  card        (sum) x 1.2 (caching-allocator slack with sequences of varying length) + 0.75 GiB
              (CUDA context, cuBLAS workspace).

Calibration: NOT on our own GPU - no device run has been lent to this project yet. The constants
above were set so that the model reproduces these public figures (``tests/train/test_planner.py``
checks that it stays within 15 % of each):

  ms-swift examples/train/multimodal/caption.sh  "# 22GiB" (grounding.sh "# 20GiB"): Qwen2-VL-7B
      (the same 7.6 B language model as Qwen2.5-VL-7B), LoRA rank 8 on all linears, bf16, batch 1,
      COCO images (640 x 480 -> ~390 image tokens), max_length 2048.        model: 20.9 GiB
  ms-swift examples/train/qlora/bnb.sh "# 10GB": Qwen2.5-7B-Instruct (text only), bitsandbytes NF4
      double-quant QLoRA rank 8, batch 1, alpaca samples (~512 tokens).    model: 11.3 GiB
  THUDM/VisualGLM-6B README ("QLoRA ... 只需要9.8GB显存即可微调", finetune/finetune_visualglm_qlora.sh:
      fp16, batch 1, 64 + 256 text tokens, rank 10 on layers 0 and 14, ViT on the GPU). model: 9.9 GiB

To calibrate on a card: ``python benchmarks/train_bench.py --model qwen2_5_vl --size full --max_pixels N
--batch_size B`` (benchmarks/vlm_bench.py: random-init Qwen2.5-VL-7B, LoRA and QLoRA rows with the
peak from train_summary.json) and ``python benchmarks/train_bench.py --size 6b`` (VisualGLM-6B),
against the prediction ``--plan_only`` prints for the same settings (a run started with --vram
keeps it as ``memory_plan`` in train_summary.json); the constants above are what to refit. The
benchmark reports torch.cuda.max_memory_allocated: compare it with ``allocated`` (before the slack
and the context). Qualitatively, QwenLM/Qwen3-VL#938 (LoRA on Qwen2.5-VL-7B, max_pixels 12800, OOM on
24 GB until the output head was frozen) shows how large the logits / head term is at a 152 k vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from remoteglm.errors import RemoteGLMError

GIB = 2 ** 30
NF4_BYTES = 4.127 / 8      # QLoRA: NF4 + double-quantised constants, per parameter
LAYER_H, LAYER_I = 20, 6   # the recomputed layer's saved tensors, in hidden / intermediate widths
LOGIT_BYTES = 12           # per vocabulary entry per token
VIS_H, VIS_I = 12, 3       # one frozen ViT block, per patch, in vision hidden / intermediate widths
SLACK = 0.20               # caching-allocator slack over the allocated peak
CONTEXT_GIB = 0.75         # CUDA context + cuBLAS workspace
MAX_BATCH = 16             # larger micro-batches: use --gradient_accumulation_steps
UNCALIBRATED = "uncalibrated: constants set from public figures, no GPU run of ours yet (remoteglm/train/planner.py)"
CARDS_GB = (8, 10, 12, 16, 20, 24, 32, 40, 48, 80, 96, 141)


@dataclass(frozen=True)
class ModelFacts:
    """What the memory model needs of one model (its family's ``memory_facts``); ``patch``,
    ``spatial_merge`` and ``frames_in_budget`` as on the family. Bytes per weight are the formats'
    (bf16/fp16 2, fp32 4, NF4 ``NF4_BYTES``), not the family's: ``qlora_float_bytes`` says only what
    its trainer keeps the unquantised part in."""

    label: str
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    llm_linear: int            # decoder Linear weights (NF4 under QLoRA)
    llm_other: int             # embeddings, output head, norms, biases
    vision: int                # image encoder (+ merger / Q-Former / projection)
    vision_hidden: int
    vision_intermediate: int
    lora_io: int               # sum of (in + out) features over the LoRA targets: LoRA params = rank x this
    lora_out: int              # sum of out features over the targets (DoRA's magnitudes)
    largest_linear: int        # in x out of the largest decoder Linear
    extra_trainable: int = 0   # what --tune_merger / --train_qformer trains in full
    patch: int = 14
    spatial_merge: int = 2
    frames_in_budget: int = 1
    pixel_range: tuple[int, int] | None = None  # (min, max) max_pixels allowed; None: a fixed image
    fixed_image_tokens: int = 0     # a fixed image's tokens (VisualGLM: 32)
    fixed_patches: int = 0          # a fixed image's ViT patches (VisualGLM: 257)
    template_tokens: int = 32       # chat-template tokens on top of prompt + answer
    state_bytes: int = 16           # per trainable parameter (see the module docstring)
    qlora_float_bytes: int | None = 4  # the float part under QLoRA (None: the training dtype)
    feature_cache: bool = False     # the image encoder can stay off the GPU (VisualGLM)

    @property
    def cell(self) -> int:
        """Pixels of max_pixels per image token (GLM-4.1V counts an image as two frames)."""
        return self.frames_in_budget * (self.patch * self.spatial_merge) ** 2

    @property
    def total(self) -> int:
        return self.llm_linear + self.llm_other + self.vision


@dataclass(frozen=True)
class Spec:
    """The run's settings that the model reads (``spec_of(opts, facts)``)."""

    qlora: bool = False
    dora: bool = False
    rank: int = 8
    layer_fraction: float = 1.0
    dtype_bytes: int = 2
    checkpointing: bool = True
    text_tokens: int = 416
    max_length: int | None = None
    min_pixels: int | None = None
    train_extra: bool = False
    vision_on_gpu: bool = True

    @property
    def method(self) -> str:
        return ("QLoRA+DoRA" if self.dora else "QLoRA") if self.qlora else ("DoRA" if self.dora else "LoRA")


@dataclass
class Plan:
    facts: ModelFacts
    spec: Spec
    max_pixels: int | None
    image_tokens: int
    batch: int
    parts: dict = field(default_factory=dict)   # GiB per term
    card_gib: float | None = None
    chosen: tuple = ()                          # which settings the planner chose

    @property
    def peak_gib(self) -> float:
        return self.parts["peak"]

    @property
    def fits(self) -> bool:
        return self.card_gib is None or self.peak_gib <= self.card_gib

    def record(self) -> dict:
        """The run folder's ``memory_plan`` (remoteglm_base.json, train_summary.json)."""
        return {"card_gib": self.card_gib, "family": self.facts.label, "method": self.spec.method,
                "max_pixels": self.max_pixels, "image_tokens": self.image_tokens, "batch_size": self.batch,
                "predicted_peak_gib": round(self.peak_gib, 2), "fits": self.fits, "chosen": list(self.chosen),
                "parts_gib": {k: round(v, 3) for k, v in self.parts.items()}, "model": UNCALIBRATED}


def image_tokens(facts: ModelFacts, max_pixels: int | None) -> int:
    """The most LLM tokens one image can become at ``max_pixels``: the resize keeps its area (sides
    rounded to patch x merge) within max_pixels, so an image of the right aspect ratio reaches
    max_pixels // cell tokens (a square one may get fewer)."""
    if facts.pixel_range is None or max_pixels is None:
        return facts.fixed_image_tokens
    return max_pixels // facts.cell


def predict(facts: ModelFacts, spec: Spec, max_pixels: int | None, batch: int) -> dict:
    """GiB per term of the memory model (module docstring) and ``peak``: what the card must hold."""
    b = spec.dtype_bytes
    img = image_tokens(facts, max_pixels)
    seq = img + spec.text_tokens
    if spec.max_length:
        seq = min(seq, spec.max_length)
    vision_w = facts.vision if spec.vision_on_gpu else 0
    if spec.qlora:
        weights = facts.llm_linear * NF4_BYTES + (facts.llm_other + vision_w) * (facts.qlora_float_bytes or b)
    else:
        weights = (facts.llm_linear + facts.llm_other + vision_w) * b
    trainable = spec.layer_fraction * (spec.rank * facts.lora_io + (facts.lora_out if spec.dora else 0))
    trainable += facts.extra_trainable if spec.train_extra else 0
    layer = LAYER_H * facts.hidden + LAYER_I * facts.intermediate
    kept = facts.layers * facts.hidden + layer if spec.checkpointing else facts.layers * layer
    per_token = b * kept + LOGIT_BYTES * facts.vocab + (2 * b * facts.lora_out / facts.layers if spec.dora else 0)
    patches = facts.fixed_patches or img * facts.spatial_merge ** 2
    vision = (batch * patches * b * (VIS_H * facts.vision_hidden + VIS_I * facts.vision_intermediate)
              if spec.vision_on_gpu else 0)
    transient = facts.largest_linear * b * ((1 if spec.qlora else 0) + (5 if spec.dora else 0))
    parts = {"weights": weights, "states": trainable * facts.state_bytes, "activations": per_token * seq * batch,
             "vision": vision, "transient": transient}
    parts = {k: v / GIB for k, v in parts.items()}
    allocated = sum(parts.values())
    parts.update(allocated=allocated, slack=allocated * SLACK, context=CONTEXT_GIB)
    parts["peak"] = allocated * (1 + SLACK) + CONTEXT_GIB
    return parts


def parse_vram(text) -> float:
    """``--vram 24`` / ``24GB`` / ``11.5``: the card's memory in GiB (a "24 GB" card holds 24 GiB)."""
    s = str(text).strip().lower().removesuffix("gib").removesuffix("gb").removesuffix("g").strip()
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and 0 < v <= 4096):
        raise RemoteGLMError(f"--vram {text!r} is not a card size: give its memory in GiB, e.g. --vram 12, 16 or 24")
    return v


def _plan(facts, spec, pixels, batch, card, chosen=()) -> Plan:
    return Plan(facts, spec, pixels, image_tokens(facts, pixels), batch,
                predict(facts, spec, pixels, batch), card, tuple(chosen))


def _largest(lo: int, hi: int, ok) -> int | None:
    """The largest n in [lo, hi] with ok(n), for ok true up to some n and false above (None: none)."""
    if lo > hi or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def choose(facts: ModelFacts, spec: Spec, card_gib: float | None, *, max_pixels: int | None = None,
           batch: int | None = None, default_pixels: int | None = None, default_batch: int = 1) -> Plan:
    """The plan for one card. Given settings win (``max_pixels`` / ``batch``); with ``card_gib`` the
    rest is chosen: the largest max_pixels (a multiple of the family's cell within its range) at
    batch 1, then, once max_pixels is at the top of its range, the largest batch up to MAX_BATCH -
    so a larger card never gets a smaller max_pixels or batch. Without a card the plan is just the
    prediction for the given (else default) settings. Raises one line when even the smallest
    free choice does not fit."""
    if card_gib is None:
        return _plan(facts, spec, max_pixels or default_pixels, batch or default_batch, None)
    fits = lambda p, b: predict(facts, spec, p, b)["peak"] <= card_gib  # noqa: E731
    chosen, pixels, top = [], max_pixels, True
    if facts.pixel_range is not None and max_pixels is None:
        cell = facts.cell
        lo_n = math.ceil(max(facts.pixel_range[0], spec.min_pixels or 0, cell) / cell)
        hi_n = facts.pixel_range[1] // cell
        n = _largest(lo_n, hi_n, lambda k: fits(k * cell, batch or 1))
        chosen.append("max_pixels")
        top = n == hi_n
        pixels = (n or lo_n) * cell
        if n is None and batch is None:
            _too_small(facts, spec, pixels, card_gib)
    if batch is None:
        chosen.append("batch_size")
        b = _largest(1, MAX_BATCH, lambda k: fits(pixels, k)) if top else (1 if fits(pixels, 1) else None)
        if b is None and max_pixels is None:
            _too_small(facts, spec, pixels, card_gib)
        batch = b or 1
    return _plan(facts, spec, pixels, batch, card_gib, chosen)


def _too_small(facts, spec, pixels, card_gib):
    need = predict(facts, spec, pixels, 1)["peak"]
    card = next((c for c in CARDS_GB if c >= need), None)
    where = f"a {card} GB card or larger" if card else "more memory than one card has (several GPUs with --zero_stage 3)"
    at = f"max_pixels {pixels:,} and batch 1" if pixels else "batch 1"
    hint = "" if spec.qlora else ", or add --use_qlora"
    raise RemoteGLMError(f"{facts.label} {spec.method} needs about {need:.1f} GiB even at {at}, more than the "
                         f"{card_gib:g} GiB of --vram: use {where}{hint}")


def spec_of(opts, facts: ModelFacts) -> Spec:
    """The memory model's view of resolved fine-tune options (``remoteglm.train.options``)."""
    layers = sorted(set(opts.layer_range)) if opts.layer_range else None
    cache_off = getattr(opts, "no_feature_cache", False) or getattr(opts, "train_qformer", False)
    return Spec(qlora=bool(opts.use_qlora), dora=bool(getattr(opts, "use_dora", False)), rank=opts.lora_rank,
                layer_fraction=len(layers) / facts.layers if layers else 1.0,
                dtype_bytes=4 if opts.dtype == "fp32" else 2, checkpointing=not opts.no_gradient_checkpointing,
                text_tokens=opts.max_source_length + opts.max_target_length + facts.template_tokens,
                max_length=getattr(opts, "max_length", None), min_pixels=getattr(opts, "min_pixels", None),
                train_extra=bool(getattr(opts, "tune_merger", False) or getattr(opts, "train_qformer", False)),
                vision_on_gpu=not (facts.feature_cache and not cache_off))


def table(plan: Plan) -> str:
    """The short table ``--vram`` / ``--plan_only`` print."""
    f = plan.facts
    pixels = f"{plan.max_pixels:,}" if plan.max_pixels else "fixed"
    card = f" / {plan.card_gib:g}" if plan.card_gib is not None else ""
    rows = [("family", "method", "max_pixels", "image tokens/image", "batch", "predicted peak GiB"),
            (f.label, plan.spec.method, pixels, f"{plan.image_tokens:,}", str(plan.batch), f"{plan.peak_gib:.{1 if plan.peak_gib >= 10 else 2}f}{card}")]
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    head = (f">> memory plan for a {plan.card_gib:g} GiB card" if plan.card_gib is not None else ">> memory prediction")
    chosen = f" (chosen: {', '.join(plan.chosen)})" if plan.chosen else ""
    return "\n".join([f"{head}{chosen}; {UNCALIBRATED}", *("   " + x for x in lines)])


def plan_run(opts, family, given: dict) -> Plan:
    """``--vram`` / ``--plan_only`` for resolved fine-tune ``opts``: prints the table, sets the
    chosen ``max_pixels`` / ``batch_size`` on ``opts`` (settings in ``given`` were the user's and
    win) and ``opts.memory_plan`` (recorded in the run folder); warns once when the given settings
    are predicted not to fit."""
    import os
    import sys
    from pathlib import Path

    facts = family.memory_facts(Path(opts.from_pretrained).expanduser())
    spec = spec_of(opts, facts)
    card = parse_vram(opts.vram) if opts.vram is not None else None
    default_pixels = facts.pixel_range[1] if facts.pixel_range else None
    plan = choose(facts, spec, card, max_pixels=opts.max_pixels if given.get("max_pixels") else None,
                  batch=opts.batch_size if given.get("batch_size") or card is None else None,
                  default_pixels=opts.max_pixels or default_pixels, default_batch=opts.batch_size)
    if "max_pixels" in plan.chosen:
        opts.max_pixels = plan.max_pixels
    if "batch_size" in plan.chosen:
        opts.batch_size = plan.batch
    opts.memory_plan = plan.record()
    if int(os.environ.get("RANK", 0)) != 0:  # one table for a multi-GPU launch
        return plan
    print(table(plan), flush=True)
    if not plan.fits:
        flags = " / ".join(f"--{k}" for k in ("max_pixels", "batch_size") if given.get(k)) or "settings"
        print(f"warning: predicted peak {plan.peak_gib:.1f} GiB is over the {card:g} GiB card with the given {flags} "
              f"(given values win); lower them{'' if spec.qlora else ' or add --use_qlora'}", file=sys.stderr, flush=True)
    return plan

