"""Every base folder the project writes loads in sat's own loader (the official VisualGLM code's
path), with the same logits as ours. Run folders are checked in tests/train."""

import torch

from remoteglm.model.checkpoint import load_model
from tests.loratest import add_random_lora
from tests.satref import sat_from_pretrained, sat_iteration


def _logits(model, tok):
    ids = torch.tensor([tok.encode("问：描述这张图片。\n答：")])
    with torch.no_grad():
        return model(input_ids=ids)[0]


def _accepted(folder, tok, ref):
    it, release, ok = sat_iteration(folder)
    assert ok and (it >= 1 or release)
    model, args = sat_from_pretrained(folder)
    assert args.model_parallel_size == 1
    torch.testing.assert_close(_logits(model, tok), ref, atol=1e-5, rtol=1e-5)


def test_tiny_base_loads_in_sat(tiny_checkpoint):
    model, tok, _ = load_model(tiny_checkpoint)
    _accepted(tiny_checkpoint, tok, _logits(model, tok))


def test_converted_and_merged_folders_load_in_sat(tiny_checkpoint, tmp_path):
    from remoteglm.model.saving import save_sat_checkpoint
    from remoteglm.model.convert import convert
    from remoteglm.train.merge import merge_checkpoint

    base, tok, _ = load_model(tiny_checkpoint)
    ref = _logits(base, tok)
    hf = convert(tiny_checkpoint, tmp_path / "hf", "hf")
    back = convert(hf, tmp_path / "sat", "sat")
    _accepted(back, tok, ref)

    add_random_lora(base, 4, seed=1)
    save_sat_checkpoint(base, None, tmp_path / "lora", tokenizer=tok)
    lora_ref = _logits(base, tok)
    _accepted(tmp_path / "lora", tok, lora_ref)  # a LoRA folder: the official FineTuneVisualGLMModel
    _accepted(merge_checkpoint(tmp_path / "lora", tmp_path / "merged"), tok, lora_ref)


def test_quantized_folder_is_readable_by_sat(tiny_checkpoint, tmp_path):
    """sat cannot build int4 layers from a config (the official code quantises after loading), but
    its tracker parsing, config reading and torch.load (torch's default weights_only) accept the folder."""
    import argparse

    from sat.arguments import update_args_with_file

    from remoteglm.model import quant_checkpoint, quant_layers

    model, tok, _ = load_model(tiny_checkpoint)
    quant_layers.quantize_model(model, 4)
    out = quant_checkpoint.save_quantized(model, tmp_path / "q4", tokenizer=tok)
    it, release, ok = sat_iteration(out)
    assert ok and it >= 1
    args = update_args_with_file(argparse.Namespace(), str(out / "model_config.json"))
    assert args.model_parallel_size == 1
    sd = torch.load(out / str(it) / "mp_rank_00_model_states.pt", map_location="cpu")
    assert "module" in sd
