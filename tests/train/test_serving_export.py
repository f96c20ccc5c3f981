"""Fine-tunes served elsewhere, per transformers family: a 2-step LoRA run at its own pixel
settings -> ``merge`` (a folder vLLM / SGLang load as it is) and ``export_adapter`` (a plain peft
adapter for ``vllm serve --enable-lora``) -> ``check_serving`` passes, renders the test prompt as
this toolkit does, and prints the commands with the run's pixels. The merged folder loads with
plain transformers and gives the run's logits; the adapter loads with plain peft and holds the
run's weights. Folders the servers cannot take are one line each. (vLLM and SGLang themselves
need a GPU and are not installed here: README gives the manual commands.)"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from remoteglm.model.hf_folder import folder_pixel_range
from remoteglm.registry import family_named
from tests.families.conftest import HF_FAMILIES, TRAIN, train_images


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """{family: (base, run, (min, max) pixels of the run)}: a tiny random base and a 2-step LoRA run
    at half the base's max pixels (so the run's resolution differs from its base folder's)."""
    from remoteglm.model.hf_tiny import create_tiny_hf
    from remoteglm.train.finetune import main

    root = tmp_path_factory.mktemp("serving")
    out = {}
    for f in HF_FAMILIES:
        base = create_tiny_hf(family_named(f), root / f"{f}-base", 0, 0)
        lo, hi = folder_pixel_range(base)
        save = root / f"{f}-runs"
        assert main(["--from_pretrained", str(base), "--train_data", str(TRAIN), "--save", str(save), "--train_iters",
                     "2", "--batch_size", "1", "--log_interval", "1", "--max_pixels", str(hi // 2)]) == 0
        out[f] = (base, Path((save / "LAST_RUN").read_text().strip()), (lo, hi // 2))
    return out


@pytest.fixture(scope="module")
def merged(runs, tmp_path_factory) -> dict:
    from remoteglm.train.merge import main

    root = tmp_path_factory.mktemp("merged")
    for f, (_, run, _) in runs.items():  # python -m remoteglm merge RUN DST, small shards so the index is used
        assert main([str(run), str(root / f), "--max_shard_size", "300KB"]) == 0
    return {f: root / f for f in runs}


def check(capsys, path) -> tuple[int, str]:
    from remoteglm.commands.check_serving import main

    capsys.readouterr()
    rc = main([str(path)])
    return rc, capsys.readouterr().out


def problems(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("problem: ")]


def pixel_json(family, pixels) -> str:
    return json.dumps(family_named(family).pixel_kwargs(*pixels), separators=(", ", ": "))


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_merged_folder_has_what_the_servers_load(runs, merged, family, capsys):
    fam, d, pixels = family_named(family), merged[family], runs[family][2]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == [fam.model_class]  # the name vLLM's registry maps
    assert (d / fam.template_file).is_file() and not (d / "adapter_config.json").exists()
    assert (d / fam.template_file).read_bytes() == (runs[family][0] / fam.template_file).read_bytes()
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (d / name).is_file()
    assert (d / "video_preprocessor_config.json").is_file() == bool(fam.video_processor)
    shards = sorted(d.glob("model-*-of-*.safetensors"))
    wmap = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    held = {}
    for s in shards:
        with safe_open(str(s), framework="pt") as fh:
            held.update({k: s.name for k in fh.keys()})
    assert len(shards) > 1 and held == wmap  # every tensor listed, in the shard that holds it
    assert folder_pixel_range(d) == pixels  # the run's resolution, in the folder the servers read
    rc, out = check(capsys, d)
    assert rc == 0 and not problems(out), out
    assert "the same as remoteglm's" in out
    assert f"vllm serve {d}" in out and f"--mm-processor-kwargs '{pixel_json(family, pixels)}'" in out
    assert f"python -m sglang.launch_server --model-path {d}" in out and "--limit-mm-per-prompt" in out


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_merged_folder_loads_in_plain_transformers_with_the_runs_logits(runs, merged, family):
    from transformers import AutoModelForImageTextToText
    from PIL import Image

    from remoteglm.model.hf_folder import chat_messages, load_hf

    unmerged, proc = load_hf(runs[family][1], family_named(family))  # the run through peft, at its pixels
    plain = AutoModelForImageTextToText.from_pretrained(merged[family], local_files_only=True).eval()
    im = proc.images([Image.open(train_images()[0]).convert("RGB")])
    ids = proc.encode(proc.render(chat_messages("描述这张图片。"), True), im["image_grid_thw"])
    inp = dict(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([proc.token_types(ids)]), **im)
    with torch.no_grad():
        a, b = unmerged(**inp).logits, plain(**inp).logits
    assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_adapter_folder_loads_in_plain_peft_and_checks(runs, family, tmp_path, capsys):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForImageTextToText

    from remoteglm.train.export_adapter import main

    base, run, pixels = runs[family]
    dst = tmp_path / "rs-lora"
    assert main([str(run), str(dst)]) == 0
    cfg = json.loads((dst / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base.resolve()) and not cfg["use_dora"] and not cfg["modules_to_save"]
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, local_files_only=True), dst)
    got = get_peft_model_state_dict(model)
    want = load_file(run / "adapter_model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    rc, out = check(capsys, dst)
    assert rc == 0 and not problems(out), out
    assert f"vllm serve {base}" in out and f"--lora-modules rs-lora={dst}" in out and "--max-lora-rank 8" in out
    assert f"--mm-processor-kwargs '{pixel_json(family, pixels)}'" in out  # the run's, not the base folder's
    assert "alone resizes to other sizes than the run" in out


def test_bad_folders_are_one_line_each(runs, merged, tmp_path, capsys):
    f = "qwen2_5_vl"
    fam = family_named(f)
    no_template = shutil.copytree(merged[f], tmp_path / "no-template")
    (no_template / fam.template_file).unlink()
    rc, out = check(capsys, no_template)
    assert rc == 1 and problems(out) == [f"problem: no {fam.template_file}: Qwen2.5-VL's real folder keeps its chat "
                                         "template there; copy it from the base folder"]
    no_entry = shutil.copytree(merged[f], tmp_path / "no-entry")
    index = no_entry / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    gone, shard = sorted(data["weight_map"].items())[3]
    del data["weight_map"][gone]
    index.write_text(json.dumps(data))
    rc, out = check(capsys, no_entry)
    assert rc == 1 and problems(out) == [f"problem: model.safetensors.index.json does not list tensor {gone} (in {shard})"]
    no_arch = shutil.copytree(merged[f], tmp_path / "no-arch")
    cfg = json.loads((no_arch / "config.json").read_text())
    del cfg["architectures"]
    (no_arch / "config.json").write_text(json.dumps(cfg))
    rc, out = check(capsys, no_arch)
    assert rc == 1 and len(problems(out)) == 1 and "architectures" in out and fam.model_class in out


def test_a_run_prompt_other_than_the_bases_is_caught(runs, tmp_path, capsys):
    """The adapter's own template (what the run trained with) against the base's (what vLLM uses)."""
    from remoteglm.train.export_adapter import export_adapter

    f = "qwen2_5_vl"
    dst = export_adapter(runs[f][1], tmp_path / "edited")
    t = dst / "chat_template.json"
    data = json.loads(t.read_text())
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    assert pad in data["chat_template"]
    data["chat_template"] = data["chat_template"].replace(pad, pad + "\n")  # a newline after the image
    t.write_text(json.dumps(data))
    rc, out = check(capsys, dst)
    assert rc == 1 and len(problems(out)) == 1 and "the servers' prompt differs from remoteglm's" in out


def _peft_adapter(base: Path, out: Path, **lora) -> Path:
    """A real peft adapter of ``base`` (saved by peft itself), recorded as a run of ``base``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base, local_files_only=True)
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, **lora)).save_pretrained(out)
    (out / "remoteglm_base.json").write_text(json.dumps({"base": str(base), "family": "qwen2_5_vl"}))
    return out


@pytest.mark.parametrize("lora, says", [
    (dict(target_modules=r".*visual\.blocks\.\d+\.attn\.qkv"), "LoRA on model.visual.blocks.0.attn.qkv: vLLM applies "
     "LoRA to the language model's projections"),
    (dict(target_modules=r".*language_model\.layers\.\d+\.self_attn\.q_proj", modules_to_save=["merger"]),
     "modules_to_save ['merger'] (--tune_merger trains the merger fully)"),
    (dict(target_modules=r".*language_model\.layers\.\d+\.self_attn\.q_proj", use_dora=True),
     "a DoRA adapter (--use_dora): vLLM does not serve DoRA"),
], ids=["vision-lora", "merger", "dora"])
def test_adapters_vllm_cannot_serve_are_refused_in_one_line(runs, tmp_path, capsys, lora, says):
    from remoteglm.errors import RemoteGLMError
    from remoteglm.train.export_adapter import export_adapter

    ad = _peft_adapter(runs["qwen2_5_vl"][0], tmp_path / "ad", **lora)
    with pytest.raises(RemoteGLMError) as e:
        export_adapter(ad, tmp_path / "out")
    assert says in str(e.value) and "merge the run instead" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing half-written
    rc, out = check(capsys, ad)
    assert rc == 1 and any(says in p for p in problems(out)), out
    assert len(problems(out)) == (2 if "visual" in says else 1)  # the vision LoRA: its layers 0 and 1, capped


def test_bad_shard_size_is_one_line_before_any_work(runs, tmp_path, capsys):
    from remoteglm.train.merge import main

    assert main([str(runs["qwen2_5_vl"][1]), str(tmp_path / "m"), "--max_shard_size", "5 gigs"]) == 2
    assert "--max_shard_size '5 gigs': give a size such as 5GB or 500MB" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.tmp").exists()
