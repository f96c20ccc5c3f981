"""The --vram planner (remoteglm/train/planner.py): the families' numbers against the real
architectures, the memory model against the public figures it was set from, the choice (monotonic
in the card, multiples of the family's cell, QLoRA where LoRA does not fit, given values win), and
the chosen resolution landing in a real run folder that serving then loads at that resolution."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from remoteglm.errors import RemoteGLMError
from remoteglm.registry import family_named
from remoteglm.train.planner import Spec, choose, parse_vram, plan_run, predict, spec_of

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "data" / "sample" / "sample_train.json"
FAMILIES = ("qwen2_5_vl", "glm4v", "qwen3_vl", "visualglm")
METHODS = {"LoRA": {}, "QLoRA": {"qlora": True}, "DoRA": {"dora": True}}


def full(name):
    return family_named(name).memory_facts(None)


def spec_for(name, **kw):
    vis = name != "visualglm"  # VisualGLM's encoder stays off the card with the feature cache (its default)
    return Spec(rank=8 if vis else 10, vision_on_gpu=vis, **kw)


def test_visualglm_facts_count_the_built_model_exactly():
    """The formula against every parameter of a model sat builds (tiny), and the published 7.8 B."""
    from remoteglm.model.config import get_config
    from remoteglm.model.visualglm import build_model

    f = family_named("visualglm").memory_facts("random:visualglm-tiny")
    m = build_model(get_config("visualglm-tiny"))
    linear = sum(x.weight.numel() for n, x in m.named_modules()
                 if n.startswith("transformer.layers.") and type(x).__name__.endswith("Linear"))
    vision = sum(p.numel() for n, p in m.named_parameters() if n.startswith("mixins.eva."))
    assert (f.total, f.llm_linear, f.vision) == (sum(p.numel() for p in m.parameters()), linear, vision)
    assert round(full("visualglm").total / 1e9, 1) == 7.8


def test_hf_facts_split_the_published_models_and_match_the_trainers_lora(tmp_path):
    for name, billions in (("qwen2_5_vl", 8.29), ("glm4v", 10.29), ("qwen3_vl", 8.77)):
        f = full(name)
        assert round(f.total / 1e9, 2) == billions and f.vision < f.llm_linear
    assert full("qwen2_5_vl").lora_io * 8 == 20_185_088  # rank 8 on q/k/v/o/gate/up/down of 28 layers
    # the facts' LoRA targets are the trainer's: peft on a real (tiny) model trains rank x lora_io parameters
    from types import SimpleNamespace

    from peft import get_peft_model

    from remoteglm.model.hf_folder import load_hf
    from remoteglm.train.hf_trainer import lora_config

    fam = family_named("qwen2_5_vl")
    folder = fam.make_tiny(tmp_path / "q", pretrain_steps=0)
    model, _ = load_hf(folder, fam)
    opts = SimpleNamespace(layer_range=None, lora_rank=4, lora_alpha=8, lora_dropout=0.0, use_dora=False, tune_merger=False)
    peft = get_peft_model(model, lora_config(opts))
    assert sum(p.numel() for p in peft.parameters() if p.requires_grad) == 4 * fam.memory_facts(folder).lora_io


def test_model_reproduces_the_public_figures_it_was_set_from():
    """Within 15 % of each figure cited in the planner's docstring."""
    q = full("qwen2_5_vl")
    # ms-swift caption.sh / grounding.sh: Qwen2-VL-7B LoRA, ~390 image tokens of COCO, short captions: 20-22 GiB
    a = predict(q, Spec(rank=8, text_tokens=60), 391 * 784, 1)["peak"]
    # ms-swift qlora/bnb.sh: Qwen2.5-7B (text) QLoRA rank 8, batch 1, ~512 tokens: 10 GB
    text_only = replace(q, vision=0, pixel_range=None)
    b = predict(text_only, Spec(qlora=True, rank=8, text_tokens=512, vision_on_gpu=False), None, 1)["peak"]
    # THUDM/VisualGLM-6B QLoRA script (fp16, batch 1, 64 + 256 tokens, rank 10 on 2 of 28 layers, ViT on the GPU): 9.8 GB
    c = predict(full("visualglm"), Spec(qlora=True, rank=10, layer_fraction=2 / 28, text_tokens=324), None, 1)["peak"]
    for got, want in ((a, 21.0), (b, 10.0), (c, 9.8)):
        assert abs(got - want) / want <= 0.15, (got, want)


@pytest.mark.parametrize("name", FAMILIES)
def test_more_memory_never_gets_a_smaller_choice(name):
    f = full(name)
    for method, kw in METHODS.items():
        last, fitted = (0, 0), False
        for card in range(6, 97, 2):
            try:
                p = choose(f, spec_for(name, **kw), card)
            except RemoteGLMError as e:
                assert not fitted, f"{method} fitted a smaller card than {card} GiB"
                assert "GB card or larger" in str(e) and ("--use_qlora" in str(e)) == (method != "QLoRA")
                continue
            fitted = True
            now = (p.max_pixels or 0, p.batch)
            assert now[0] >= last[0] and now[1] >= last[1], (method, card, last, now)
            assert p.batch >= 1 and p.peak_gib <= card and p.fits
            if f.pixel_range:
                assert p.max_pixels % f.cell == 0 and f.pixel_range[0] <= p.max_pixels <= f.pixel_range[1]
                assert p.image_tokens == p.max_pixels // f.cell
            last = now
        assert fitted, f"{name} {method} fits no card up to 96 GiB"


def test_qlora_fits_where_lora_does_not():
    with pytest.raises(RemoteGLMError, match=r"Qwen2.5-VL LoRA needs about .* GiB .*--vram: use a \d+ GB card or larger, or add --use_qlora"):
        choose(full("qwen2_5_vl"), spec_for("qwen2_5_vl"), 16)
    p = choose(full("qwen2_5_vl"), spec_for("qwen2_5_vl", qlora=True), 16)
    assert p.fits and p.max_pixels >= 200_704 and p.batch == 1  # 448 x 448 and more on a 16 GB card
    with pytest.raises(RemoteGLMError, match="add --use_qlora"):
        choose(full("visualglm"), spec_for("visualglm"), 12)
    p = choose(full("visualglm"), spec_for("visualglm", qlora=True), 12)
    assert p.max_pixels is None and p.image_tokens == 32 and p.batch >= 1 and p.fits  # VisualGLM: the batch only
    assert p.batch < choose(full("visualglm"), spec_for("visualglm", qlora=True), 24).batch


def test_given_settings_win_and_warn_once(capsys):
    from argparse import Namespace

    f = full("qwen2_5_vl")
    fam = Namespace(memory_facts=lambda path: f)  # the seam: anything with memory_facts
    opts = Namespace(from_pretrained="Qwen2.5-VL-7B-Instruct", vram="24GB", use_qlora=True, use_dora=False, lora_rank=8,
                     layer_range=None, dtype=None, no_gradient_checkpointing=False, max_source_length=128,
                     max_target_length=256, max_length=None, min_pixels=None, tune_merger=False, max_pixels=12_845_056,
                     batch_size=4)
    p = plan_run(opts, fam, {"max_pixels": True, "batch_size": True})
    out, err = capsys.readouterr()
    assert (opts.max_pixels, opts.batch_size, p.chosen) == (12_845_056, 4, ())
    assert err.count("warning:") == 1 and "over the 24 GiB card" in err and not p.fits
    assert "12,845,056" in out and "16,384" in out and "QLoRA" in out  # the table: max_pixels, tokens, method
    opts.max_pixels, opts.batch_size = 200_704, 1  # given max_pixels, batch chosen for it
    p = plan_run(opts, fam, {"max_pixels": True})
    assert opts.max_pixels == 200_704 and opts.batch_size == p.batch > 1 and p.chosen == ("batch_size",)
    assert "warning" not in capsys.readouterr().err
    assert spec_of(opts, f).method == "QLoRA"
    assert [parse_vram(v) for v in ("12", "24GB", "11.5", " 16 GiB")] == [12, 24, 11.5, 16]
    for bad in ("abc", "0", "-3", "nan"):
        with pytest.raises(RemoteGLMError, match="is not a card size"):
            parse_vram(bad)


def test_vram_choice_lands_in_the_run_and_serving_uses_it(tmp_path, capsys):
    """A tiny Qwen2.5-VL run with a card just big enough for 8 image tokens: the planner's max_pixels
    (not the folder's 12,544) goes into remoteglm_base.json and train_summary.json, and the run
    loads for chat / evaluation at that resolution."""
    from remoteglm.serve.bootstrap import start_engine
    from remoteglm.serve.loading import load_engine
    from remoteglm.options import add_model_args, Parser
    from remoteglm.train.finetune import main
    from remoteglm.train.options import build_parser, resolve

    fam = family_named("qwen2_5_vl")
    base = fam.make_tiny(tmp_path / "qwen2.5-vl-small", pretrain_steps=0)
    args = ["--from_pretrained", str(base), "--train_data", str(TRAIN), "--save", str(tmp_path / "runs"),
            "--train_iters", "1", "--lr", "1e-2"]
    opts = build_parser().parse_args(args)
    resolve(opts, fam)
    facts = fam.memory_facts(base)
    assert facts.pixel_range == (3136, 12544)
    card = predict(facts, spec_of(opts, facts), 8 * 784, 1)["peak"] + 1e-6  # 9 tokens would not fit
    assert main([*args, "--vram", repr(card), "--plan_only"]) == 0
    assert not (tmp_path / "runs").exists()  # the plan only: nothing written
    assert main([*args, "--vram", repr(card)]) == 0
    assert ">> memory plan" in capsys.readouterr().out
    run = Path((tmp_path / "runs" / "LAST_RUN").read_text().strip())
    record = json.loads((run / "remoteglm_base.json").read_text())
    assert (record["settings"]["max_pixels"], record["settings"]["batch_size"]) == (6272, 1)
    assert record["memory_plan"]["chosen"] == ["max_pixels", "batch_size"] and record["memory_plan"]["image_tokens"] == 8
    assert json.loads((run / "train_summary.json").read_text())["memory_plan"] == record["memory_plan"]
    engine, _ = load_engine(run, device="cpu", progress=False)
    assert engine.processor.pixel_range() == (3136, 6272)
    cli = add_model_args(Parser()).parse_args(["--from_pretrained", str(run), "--device", "cpu"])  # chat, web, API, eval
    engine, _, _ = start_engine(cli, progress=False)
    assert engine.processor.pixel_range()[1] == 6272


def test_finetune_sh_lets_the_planner_pick_the_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", DRY_RUN="1", NUM_GPUS="0", VRAM="16",
               MODEL_DIR=str(tmp_path / "checkpoints" / "qwen2.5-vl-tiny"))
    r = subprocess.run(["bash", str(ROOT / "finetune.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    cmd = r.stdout.strip().splitlines()[-1].split()
    assert r.returncode == 0 and cmd[cmd.index("--vram") + 1] == "16" and "--batch_size" not in cmd, r.stderr
