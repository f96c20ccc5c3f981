"""int4 (NF4) / int8 quantisation of the tiny model: which layers, accuracy, memory, save/load,
LoRA, and --quant in cli_demo.

Tolerances (why these numbers):
- One layer, Gaussian-like weights (sat's init): NF4 puts each weight on one of 16 levels at
  normal quantiles of its 64-block's absmax; its RMS rounding error is ~10% of the weights' std,
  so a layer's output error relative to its output norm is ~0.09 (QLoRA's figure; 0.089-0.097 here).
  Bound: 0.03 < err < 0.13 (the lower bound proves the layer really is 4-bit). int8 rounds to
  absmax/127 per output row: RMS error = step/sqrt(12), ~0.3-0.5% of the output. Bound:
  1e-4 < err < 0.015.
- The whole model: the tiny model's ChatGLM matrices have std 1/sqrt(hidden), so each layer's
  output is as large as the residual stream and the per-layer error carries through to the logits:
  measured 10.9% (NF4) / 1.1% (int8) relative error. A random model is unsure between many
  tokens, so top-1 agreement over all prompt positions is only 68% / 95%. Bounds 20% / 3% and
  >= 50% / 85% still catch a broken layer (a transposed or mis-scaled weight gives >= 100% error
  and near-chance agreement, ~1/vocab) without flaking on rounding.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model import quant, quant_checkpoint, quant_layers
from remoteglm.model.checkpoint import load_model
from remoteglm.model.prompt import encode_prompt
from remoteglm.model.saving import save_sat_checkpoint
from remoteglm.serve.generation import chat, image_embeddings
from tests.loratest import add_random_lora

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "tests" / "fixtures" / "images" / "OSBS_029.tif"
QUESTION = "描述这张图片。"


def logits_of(model, tok):
    p = encode_prompt(tok, QUESTION, image_length=model.image_length)
    with torch.no_grad():
        return model(torch.tensor([p.ids]), image_embeds=image_embeddings(model, IMAGE), pre_image=p.pre_image)[0][0].float()


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def reference(tiny):
    model, tok, _ = tiny
    return logits_of(model, tok)


@pytest.fixture(params=[4, 8])
def quantized(request, tiny_checkpoint):
    """A freshly quantised model per test: a forward in one test must not change what the next sees."""
    model, tok, _ = load_model(tiny_checkpoint)
    float_layers = {name: getattr(owner, attr) for owner, attr, name in quant_layers.quant_targets(model)}
    quant_layers.quantize_model(model, request.param)
    return request.param, model, tok, float_layers


def test_only_chatglm_linears_are_quantized(quantized):
    import bitsandbytes as bnb

    bits, model, _, float_layers = quantized
    kind = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    quantized_names = {n for n, m in model.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))}
    assert quantized_names == set(float_layers) and len(quantized_names) == 4 * model.config.num_layers
    assert all(isinstance(m, kind) for n, m in model.named_modules() if n in quantized_names)
    # the vision side, the embeddings and the head keep their float weights
    for name, p in model.named_parameters():
        if name.startswith(("mixins.eva.", "transformer.word_embeddings", "mixins.chatglm-final")):
            assert p.dtype == torch.float32, name
    assert model.config.extra["quantization"]["bits"] == bits
    assert quant_layers.describe_quant(model) == ("int4 (NF4)" if bits == 4 else "int8 (LLM.int8)")
    with pytest.raises(RemoteGLMError, match="already quantised"):
        quant_layers.quantize_model(model, bits)


def test_each_layer_is_close_to_its_float_original(quantized):
    bits, model, _, float_layers = quantized
    modules = dict(model.named_modules())
    lo, hi = (0.03, 0.13) if bits == 4 else (1e-4, 0.015)
    x = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    for name, lin in float_layers.items():
        q = modules[name]
        with torch.no_grad():
            xin = x if lin.weight.shape[1] == x.shape[1] else torch.randn(5, lin.weight.shape[1], generator=torch.Generator().manual_seed(1))
            err = rel(q(xin), torch.nn.functional.linear(xin, lin.weight, lin.bias))
        assert lo < err < hi, f"{name}: relative error {err:.4f} outside ({lo}, {hi}) for int{bits}"


def test_logits_stay_close_and_the_model_generates(quantized, reference):
    bits, model, tok, _ = quantized
    out = logits_of(model, tok)
    err, top1 = rel(out, reference), float((out.argmax(-1) == reference.argmax(-1)).float().mean())
    assert err < (0.2 if bits == 4 else 0.03), err
    assert top1 >= (0.5 if bits == 4 else 0.85), top1
    answer, history = chat(model, tok, IMAGE, QUESTION, do_sample=False, max_new_tokens=12)
    assert answer and history == [(QUESTION, answer)]


def test_quantized_weights_take_less_memory(quantized, tiny):
    bits, model, _, float_layers = quantized
    fp32 = sum(lin.weight.numel() * 4 + (lin.bias.numel() * 4 if lin.bias is not None else 0) for lin in float_layers.values())
    modules = dict(model.named_modules())
    q = sum(quant_layers.model_memory_bytes(modules[n]) for n in float_layers)
    # NF4: 0.5 byte/weight + 1/64 byte absmax + small tables; int8: 1 byte/weight + a scale per row
    assert q < (0.2 if bits == 4 else 0.3) * fp32, (q, fp32)
    assert quant_layers.model_memory_bytes(model) < quant_layers.model_memory_bytes(tiny[0])
    assert quant_layers.memory_by_device(model).keys() == {"cpu"}


def test_head_int8_and_embeddings_in_host_ram(tiny_checkpoint, reference, tmp_path):
    model, tok, _ = load_model(tiny_checkpoint)
    quant_layers.quantize_model(model, 4, lm_head=True, offload_embeddings=True)
    assert isinstance(model.transformer.word_embeddings, quant_layers.HostEmbedding)
    assert "transformer.word_embeddings.weight" in model.state_dict()
    assert next(model.parameters()).dtype == torch.float32  # callers read the dtype there
    out = logits_of(model, tok)
    assert rel(out, reference) < 0.2
    assert float((out.argmax(-1) == reference.argmax(-1)).float().mean()) >= 0.5
    assert chat(model, tok, IMAGE, QUESTION, do_sample=False, max_new_tokens=8)[0]
    saved = quant_checkpoint.save_quantized(model, tmp_path / "q4-head", tokenizer=tok)
    again, _, _ = quant.load_model_quantized(saved)  # on the CPU: the table comes back as a plain embedding
    assert type(again.get_mixin("chatglm-final").lm_head).__name__ == "Linear8bitLt"
    assert torch.equal(logits_of(again, tok), out)


def test_save_and_load_without_requantizing(quantized, tmp_path):
    bits, model, tok, _ = quantized
    out = quant_checkpoint.save_quantized(model, tmp_path / f"q{bits}", tokenizer=tok)
    assert quant_checkpoint.is_quantized_checkpoint(out) == bits
    # weights on disk are the quantised ones
    sd = torch.load(out / "1" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    w = sd["transformer.layers.0.mlp.dense_h_to_4h.weight"]
    assert w.dtype == (torch.uint8 if bits == 4 else torch.int8)
    loaded, _, cfg = quant.load_model_quantized(out)
    assert cfg.extra["quantization"]["bits"] == bits
    assert torch.equal(logits_of(loaded, tok), logits_of(model, tok))
    with pytest.raises(RemoteGLMError, match=f"holds an int{bits} model"):
        quant.load_model_quantized(out, quant=12 - bits)


def test_lora_checkpoint_quantizes_base_and_keeps_lora(tiny_checkpoint, tmp_path):
    model, tok, _ = load_model(tiny_checkpoint)
    add_random_lora(model, 4, seed=3)
    save_sat_checkpoint(model, None, tmp_path / "lora", tokenizer=tok)
    ref = logits_of(model, tok)
    kept, _, _ = load_model(tmp_path / "lora")
    quant_layers.quantize_model(kept, 4)
    lin = kept.transformer.layers[0].attention.query_key_value
    assert type(lin.original).__name__ == "Linear4bit" and lin.matrix_A[0].dtype == torch.float32
    merged, _, _ = load_model(tmp_path / "lora")
    quant_layers.quantize_model(merged, 4, merge_lora=True)
    assert "lora" not in merged.mixins
    for m in (kept, merged):
        out = logits_of(m, tok)
        assert rel(out, ref) < 0.2
    saved = quant_checkpoint.save_quantized(kept, tmp_path / "lora-q4", tokenizer=tok)
    again, _, _ = quant.load_model_quantized(saved)
    assert "lora" in again.mixins
    assert torch.equal(logits_of(again, tok), logits_of(kept, tok))


def test_bad_requests_are_one_line_errors(tiny_checkpoint, tmp_path):
    model, _, _ = load_model(tiny_checkpoint)
    with pytest.raises(RemoteGLMError, match="must be 4 or 8"):
        quant_layers.quantize_model(model, 3)
    with pytest.raises(RemoteGLMError, match="not quantised"):
        quant_checkpoint.save_quantized(model, tmp_path / "x")


def test_quantize_command_and_cli_demo_quant(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """`remoteglm quantize` writes a checkpoint that cli_demo loads as is, and `cli_demo --quant 8`
    answers like the in-process int8 model (in-process mains: same code)."""
    from remoteglm.commands.quantize import main as quantize_main
    from remoteglm.serve.cli import main as cli_main

    assert quantize_main([str(tiny_checkpoint), str(tmp_path / "q8"), "--bits", "8"]) == 0
    assert "int8 checkpoint written to" in capsys.readouterr().out
    model, tok, _ = load_model(tiny_checkpoint)
    quant_layers.quantize_model(model, 8)
    expected = chat(model, tok, IMAGE, QUESTION, do_sample=False, max_new_tokens=12, repetition_penalty=1.2)[0]
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    args = ["--image", str(IMAGE), "--prompt", QUESTION, "--greedy", "--max_new_tokens", "12"]
    for src in (["--from_pretrained", str(tiny_checkpoint), "--quant", "8"], ["--from_pretrained", str(tmp_path / "q8")]):
        assert cli_main(src + args) == 0
        out = capsys.readouterr()
        assert out.out == expected + "\n"
        assert "ChatGLM weights: int8 (LLM.int8); weights " in out.err or "--quant" not in src
    assert cli_main(["--from_pretrained", str(tmp_path / "q8"), "--quant", "4"] + args) == 2
    assert "holds an int8 model; run with --quant 8" in capsys.readouterr().err
    assert quantize_main([str(tmp_path / "q8"), str(tmp_path / "q8b"), "--bits", "4"]) == 2
    assert "already quantised" in capsys.readouterr().err


def test_load_model_reads_a_saved_quantized_checkpoint(tiny_checkpoint, tmp_path):
    """The one public loader (cli_demo, eval, fine-tune) takes a save_quantized folder too."""
    from remoteglm.model.checkpoint import load_model
    from remoteglm.model.quant_checkpoint import save_quantized
    from remoteglm.model.quant_layers import quantize_model

    m, tok, _ = load_model(tiny_checkpoint)
    quantize_model(m, 4)
    save_quantized(m, tmp_path / "q4", tokenizer=tok)
    m2, _, _ = load_model(tmp_path / "q4")
    ids = torch.tensor([tok.encode("问：你好\n答：")])
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=ids)[0], m2(input_ids=ids)[0])


def _nf4_layers(model):
    import bitsandbytes as bnb

    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def test_inference_keeps_the_nf4_layout_on_every_cpu(tiny_checkpoint, tmp_path):
    """bitsandbytes repacks NF4 weights on an AVX-512-BF16 CPU's first eval forward (dropping the
    nested statistics); the project pins one layout, so accounting, saving and reloading after
    inference behave the same whatever the CPU."""
    model, tok, _ = load_model(tiny_checkpoint)
    quant_layers.quantize_model(model, 4)
    before = quant_layers.model_memory_bytes(model)
    out = logits_of(model, tok)
    for layer in _nf4_layers(model):
        qs = layer.weight.quant_state
        assert not getattr(qs, "packing_format_for_cpu", False) and qs.nested and qs.state2 is not None
    assert quant_layers.model_memory_bytes(model) == before
    again, _, _ = quant.load_model_quantized(quant_checkpoint.save_quantized(model, tmp_path / "q4", tokenizer=tok))
    assert torch.equal(logits_of(again, tok), out)
    assert torch.equal(logits_of(model, tok), out)


def test_a_repacked_model_is_counted_saved_and_reloaded(tiny_checkpoint, tmp_path):
    """A model whose layers bitsandbytes already repacked (built before the pin, or by other
    code): memory accounting works and the save is made from the unpacked state."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    model, tok, _ = load_model(tiny_checkpoint)
    quant_layers.quantize_model(model, 4)
    out = logits_of(model, tok)
    for layer in _nf4_layers(model):  # what bitsandbytes does on its AVX-512-BF16 eval path
        layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data, layer.weight.quant_state)
    assert quant_layers.model_memory_bytes(model) > 0
    saved = quant_checkpoint.save_quantized(model, tmp_path / "q4", tokenizer=tok)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in _nf4_layers(model))
    again, _, _ = quant.load_model_quantized(saved)
    # Repacking rounded the block scales to bf16, so the original numbers are gone for good; the
    # file holds exactly the unpacked model that stays in memory, and that is close to the original.
    reloaded = logits_of(again, tok)
    assert torch.equal(reloaded, logits_of(model, tok))
    assert rel(reloaded, out) < 0.01
